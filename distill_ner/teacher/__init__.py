"""The teacher client shared by every recipe: backends (OpenAI-compatible servers, local transformers),
the response cache, and `run_teacher` for any prompt. Recipes own their prompts and parsers."""

from types import ModuleType

from distill_ner import import_submodule


def __getattr__(name: str) -> ModuleType:  # submodules on first access (distill_ner.import_submodule)
    return import_submodule(__name__, name)
