"""Thin steps of the extraction recipe (NuExtract), one file per step. Corpus sampling, training and
registration are the shared steps (steps/sample_corpus.py, steps/train.py, steps/promote.py), used as they are."""

from steps.extraction.evaluate import evaluate_extraction
from steps.extraction.fill_templates import fill_templates
from steps.extraction.generate_templates import generate_templates
from steps.extraction.negatives import add_extraction_negatives
from steps.extraction.sft import build_extraction_sft

__all__ = [
    "add_extraction_negatives",
    "build_extraction_sft",
    "evaluate_extraction",
    "fill_templates",
    "generate_templates",
]
