"""Thin ZenML steps over the distill_ner package: each parses its config, calls one domain function,
logs what a person compares runs by, and returns a typed, named artifact."""

from steps.annotate import annotate
from steps.build_sft import build_sft
from steps.evaluate import evaluate
from steps.negatives import add_negatives
from steps.promote import register_and_promote
from steps.sample_corpus import sample_corpus
from steps.train import train

__all__ = [
    "add_negatives",
    "annotate",
    "build_sft",
    "evaluate",
    "register_and_promote",
    "sample_corpus",
    "train",
]
