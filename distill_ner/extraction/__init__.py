"""The NuExtract recipe: template-based structured extraction distilled from a teacher LLM.

Pure modules (prompts, templates, filters, negatives, metric, data) import light; the teacher, SFT,
inference and evaluation modules build on the shared UniversalNER machinery instead of copying it.
"""

from types import ModuleType

from distill_ner import import_submodule


def __getattr__(name: str) -> ModuleType:  # submodules on first access (distill_ner.import_submodule)
    return import_submodule(__name__, name)
