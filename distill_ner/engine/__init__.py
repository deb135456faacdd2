"""The batched greedy inference engine shared by every recipe (transformers, vLLM and llama.cpp backends)."""

from distill_ner.engine.engine import (
    Engine,
    EngineStats,
    Generation,
    RowConstraint,
    common_prefix_length,
    group_indices,
    import_vllm,
    plan_chunks,
    stop_token_ids,
)

__all__ = [
    "Engine",
    "EngineStats",
    "Generation",
    "RowConstraint",
    "common_prefix_length",
    "group_indices",
    "import_vllm",
    "plan_chunks",
    "stop_token_ids",
]
