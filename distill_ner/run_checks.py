"""Checks between stages that stop a run early, naming what to fix, instead of failing later in training
with a message that names neither the corpus nor the teacher."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Protocol

from distill_ner.config import CorpusConfig
from distill_ner.records import AnnotationSet, PassageSet


class NoPassagesError(ValueError):
    """The corpus gave no passage to annotate."""


class TeacherFailuresError(RuntimeError):
    """Too many passages have no teacher annotation; training on the rest would silently shrink the data."""


def require_passages(passages: PassageSet, config: CorpusConfig) -> None:
    if passages.passages:
        return
    sources = ", ".join(s.path for s in config.sources) or "(none)"
    stats = ", ".join(f"{k} {v}" for k, v in passages.stats.items() if v) or "nothing read"
    raise NoPassagesError(
        f"corpus: no passages from corpus.sources [{sources}] ({stats}). Check that the files hold text "
        f"(the text field, {config.min_words}+ words per passage: corpus.min_words)."
    )


class Failure(Protocol):
    """A passage the teacher stage could not use (each recipe has its own record)."""

    @property
    def passage_id(self) -> str: ...

    reason: str
    detail: str


def failure_summary(failures: Sequence[Failure], examples: int = 3) -> str:
    """Counts by reason, then the first few failures with their passage id and detail."""
    reasons = Counter(f.reason for f in failures)
    text = ", ".join(f"{reason} {n}" for reason, n in reasons.most_common())
    shown = [f"{f.passage_id}: {f.reason} {f.detail}".strip()[:300] for f in failures[:examples]]
    return text + ("; e.g. " + " | ".join(shown) if shown else "")


def require_annotations(annotations: AnnotationSet, max_failed_fraction: float) -> None:
    """Fail when no passage was annotated, or when more than `max_failed_fraction` of them failed.

    The answers received are in the teacher's response cache either way: a rerun sends requests only
    for the passages that failed.
    """
    failed = len(annotations.failures)
    total = failed + len(annotations.passages)
    if total == 0:
        raise NoPassagesError(f"teacher {annotations.teacher}: no passages to annotate (the corpus gave none)")
    require_teacher_answers(
        annotations.teacher, failed, total, max_failed_fraction, failure_summary(annotations.failures)
    )


def require_teacher_answers(
    teacher: str,
    failed: int,
    total: int,
    max_failed_fraction: float,
    summary: str,
    *,
    what: str = "passages",
) -> None:
    """Stop the run, naming the teacher, the count and the reasons, when more than `max_failed_fraction` of
    `total` requests got no usable answer, or when all of them failed (nothing is left to train on)."""
    rerun = f"The answers received are cached: a rerun asks the teacher only for the failed {what}."
    if failed and failed == total:
        raise TeacherFailuresError(f"teacher {teacher}: all {failed} {what} failed ({summary}). {rerun}")
    if total and failed / total > max_failed_fraction:
        raise TeacherFailuresError(
            f"teacher {teacher}: {failed} of {total} {what} failed ({failed / total:.1%}, above "
            f"teacher.max_failed_fraction {max_failed_fraction:g}): {summary}. {rerun} "
            "Raise teacher.max_failed_fraction to train on the rest."
        )
