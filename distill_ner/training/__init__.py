"""Fine-tuning the student: LoRA, QLoRA or full, on one process or many (`launch`)."""

from types import ModuleType

from distill_ner import import_submodule


def __getattr__(name: str) -> ModuleType:  # submodules on first access (distill_ner.import_submodule)
    return import_submodule(__name__, name)
