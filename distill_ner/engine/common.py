"""What the engine's backends and the GGUF export share: the result type, row constraints, stop tokens,
merged adapters.

Kept apart from engine.py so that the llama.cpp backend and the GGUF converter (engine/llamacpp.py,
engine/gguf.py), which engine.py loads only when selected, never import engine.py back.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from distill_ner.chat import end_of_turn_ids


@dataclass
class Generation:
    """One decoded answer: generated token ids without the stop token, whether a stop token ended it, and
    each generated token's log-probability."""

    token_ids: list[int]
    stopped: bool
    text: str = ""
    # natural log of the probability the model gave each token of token_ids (the token taken, under the
    # model's own softmax, also where a constraint chose it): what answer scores are made of
    token_logprobs: list[float] = field(default_factory=list)

    @property
    def n_generated(self) -> int:
        """Tokens the model produced, the stop token included (what throughput is measured in)."""
        return len(self.token_ids) + int(self.stopped)


class RowConstraint(Protocol):
    """What a row's decoding may emit next (e.g. `grounded.SubstringListConstraint`), consulted per step.

    Greedy decoding under a constraint takes the unconstrained argmax when `allows` accepts it and
    otherwise the argmax over `allowed_ids`; `advance` records the token taken (a stop id included).
    `remaining` counts the tokens the row may still generate, the next one included.
    """

    def allows(self, token_id: int, remaining: int) -> bool: ...

    def allowed_ids(self, remaining: int) -> list[int]: ...

    def advance(self, token_id: int) -> None: ...


def constrained_argmax(
    logits: Any,
    picks: list[int],
    constraints: Sequence[RowConstraint | None],
    remaining: Sequence[int],
    fallback: Sequence[int],
) -> bool:
    """Replace, in place, each constrained row's pick by the best token its constraint allows and advance
    the constraint; True when some pick changed. A constraint that allows nothing gets `fallback` (stop ids)."""
    changed = False
    for b, constraint in enumerate(constraints):
        if constraint is None:
            continue
        if not constraint.allows(picks[b], remaining[b]):
            ids = sorted(constraint.allowed_ids(remaining[b])) or sorted(fallback)
            if not ids:
                raise ValueError("a row constraint allows no token and there is no stop token to fall back on")
            # sorted ids: ties go to the lowest id, as in an argmax over masked logits
            picks[b] = ids[int(logits[b, ids].argmax())]
            changed = True
        constraint.advance(picks[b])
    return changed


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def stop_token_ids(tokenizer: Any, model: Any | None = None, generation_config: Any | None = None) -> list[int]:
    """Where a row stops: the model's generation_config eos ids, the tokenizer's eos and the template's
    end-of-turn token (order kept, duplicates dropped)."""
    ids: list[int] = []
    if generation_config is None:
        generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        ids += _as_list(getattr(generation_config, "eos_token_id", None))
    ids += _as_list(getattr(tokenizer, "eos_token_id", None))
    ids += end_of_turn_ids(tokenizer)
    return list(dict.fromkeys(ids))


def _generation_config(model_dir: str) -> Any | None:
    """The folder's generation_config.json, if it has one (vLLM reads the same file)."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model_dir)
    except (OSError, ValueError):
        return None


def save_merged_adapter(adapter_dir: str, dest: Path) -> Path:
    """The adapter merged into its base (peft merge_and_unload), saved with its tokenizer at `dest`."""
    from distill_ner.models import load_model, load_tokenizer

    model = load_model(adapter_dir).merge_and_unload()
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # left over from an interrupted merge
    model.save_pretrained(partial, safe_serialization=True)
    load_tokenizer(adapter_dir).save_pretrained(partial)
    partial.rename(dest)  # only a complete folder ever appears under the final name
    return dest
