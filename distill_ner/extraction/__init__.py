"""The NuExtract recipe: template-based structured extraction distilled from a teacher LLM.

Pure modules (prompts, templates, filters, negatives, metric, data) import light; the teacher, SFT,
inference and evaluation modules build on the shared UniversalNER machinery instead of copying it.
"""
