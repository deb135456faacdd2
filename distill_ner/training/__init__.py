"""Fine-tuning the student: LoRA, QLoRA or full, on one process or many (`launch`)."""

import importlib
from types import ModuleType


def __getattr__(name: str) -> ModuleType:
    # submodules load on first access (`distill_ner.training.trainer` imports torch and transformers): ZenML
    # resolves a step's source dependency "distill_ner.training.trainer" as this package's attribute
    if name in ("trainer", "train", "launch", "checkpoints", "checkpoint_store"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
