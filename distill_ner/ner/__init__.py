"""The UniversalNER recipe: prompt and parser, negatives, conversations, NER data, benchmarks, metrics,
evaluation, serving. Imports only the shared core, never another recipe."""

from types import ModuleType

from distill_ner import import_submodule


def __getattr__(name: str) -> ModuleType:  # submodules on first access (distill_ner.import_submodule)
    return import_submodule(__name__, name)
