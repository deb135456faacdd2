"""Filters on the teacher's answers: a template must be a valid template, a filling must follow its template
exactly and every string in it must occur verbatim in the passage (RECIPE.md: "outputs that break the
template or contain values not present in the text are dropped"). Failures are counted by reason.

What "occurs verbatim" means (`Verbatim.locate`):
- Unicode: both sides are compared in NFC, so "é" written precomposed (U+00E9) matches "e" + U+0301.
  Canonical equivalence only: NFKC is NOT applied (the ligature "ﬁ" does not match "fi", a full-width
  digit does not match an ASCII one) because those are different characters a reader can see.
- Whitespace: allowed to differ in layout. Runs of whitespace (spaces, tabs, line breaks, NBSP) collapse
  to one space on both sides and the value's ends are trimmed. The corpus stage already collapses the
  passage's whitespace, so this only forgives a teacher that wraps a long value or doubles a space.
- Case, punctuation and quotes must match exactly: "acme corp" does not match "Acme Corp".
- Substring semantics, no word boundaries: a template value may legitimately be part of a token
  ("12" in "12-month"), and NuExtract's criterion is presence in the text.
A value found through NFC or whitespace normalisation is REWRITTEN to the passage's own span, so every
string the student is trained to produce is an exact substring of what it reads.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from distill_ner.extraction.templates import (
    MAX_DEPTH,
    TemplateError,
    conformance_errors,
    parse_json_object,
    skeleton,
)

TEMPLATE_REASONS: tuple[str, ...] = ("unparseable", "invalid_template")
FILLING_REASONS: tuple[str, ...] = ("unparseable", "template_mismatch", "not_in_text")


def _clusters(text: str) -> list[tuple[int, int]]:
    """Spans that NFC may rewrite as a unit: a character plus what composes with it.

    A character joins the current cluster when it is a combining mark or when NFC of the pair differs from
    NFC of each part (this also catches Hangul jamo, whose vowels are not combining marks). Normalising
    cluster by cluster then gives NFC of the whole text while every output character still knows which
    original characters it came from.
    """
    spans: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(text) + 1):
        if i < len(text):
            joined = unicodedata.normalize("NFC", text[start : i + 1])
            split = unicodedata.normalize("NFC", text[start:i]) + unicodedata.normalize("NFC", text[i])
            if unicodedata.combining(text[i]) or joined != split:
                continue
        spans.append((start, i))
        start = i
    return spans


@dataclass
class _Normalised:
    text: str
    # for each character of `text`, the [start, end) span of original characters it stands for
    spans: list[tuple[int, int]]


def normalise(text: str) -> _Normalised:
    """NFC, with each run of whitespace collapsed to one space; keeps the map back to the original."""
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    for start, end in _clusters(text):
        piece = unicodedata.normalize("NFC", text[start:end])
        if piece.isspace():
            if out and out[-1] == " ":
                spans[-1] = (spans[-1][0], end)  # the run grows; it stays one space
            else:
                out.append(" ")
                spans.append((start, end))
            continue
        for ch in piece:
            out.append(ch)
            spans.append((start, end))
    return _Normalised("".join(out), spans)


def normalise_value(value: str) -> str:
    return normalise(value).text.strip(" ")


class Verbatim:
    """Where values occur in one passage (normalised once, queried per value)."""

    def __init__(self, passage: str) -> None:
        self.passage = passage
        self._norm = normalise(passage)

    def locate(self, value: str) -> str | None:
        """The passage's own spelling of `value`, or None when it does not occur (module doc)."""
        if value in self.passage:
            return value
        needle = normalise_value(value)
        if not needle:
            return None
        at = self._norm.text.find(needle)
        if at < 0:
            return None
        start = self._norm.spans[at][0]
        end = self._norm.spans[at + len(needle) - 1][1]
        return self.passage[start:end]

    def occurs(self, value: str) -> bool:
        return self.locate(value) is not None


@dataclass
class FilterResult:
    value: dict[str, Any] | None  # the template, or the filling with values rewritten to the passage's spans
    reason: str = ""  # why it was dropped ("" when kept)
    detail: str = ""
    counts: Counter[str] = field(default_factory=Counter)  # per reason, plus informational counters


def check_template_answer(answer: str, max_depth: int = MAX_DEPTH) -> FilterResult:
    """A teacher's template-generation answer -> a valid template (sample values blanked), or a reason."""
    try:
        parsed = parse_json_object(answer)
    except ValueError as exc:
        return FilterResult(None, "unparseable", f"{exc}; answer starts: {answer[:200]!r}", Counter(unparseable=1))
    try:
        template, blanked = skeleton(parsed, max_depth)
    except TemplateError as exc:
        return FilterResult(None, "invalid_template", str(exc), Counter(invalid_template=1))
    return FilterResult(template, counts=Counter(sample_values_blanked=int(blanked)))


def _rewrite(value: Any, where: Verbatim, missing: list[str], path: str, counts: Counter[str]) -> Any:
    if isinstance(value, str):
        if not value:
            return value
        surface = where.locate(value)
        if surface is None:
            missing.append(f"{path}: {value[:80]!r}")
            return value
        counts["values_rewritten"] += surface != value
        return surface
    if isinstance(value, dict):
        return {k: _rewrite(v, where, missing, f"{path}.{k}" if path else k, counts) for k, v in value.items()}
    return [_rewrite(v, where, missing, f"{path}[{i}]", counts) for i, v in enumerate(value)]


def check_filling(filled: Any, template: dict[str, Any], passage: str | Verbatim) -> FilterResult:
    """A parsed filling -> kept (values rewritten to the passage's spans) or dropped with a reason."""
    errors = conformance_errors(filled, template)
    if errors:
        return FilterResult(None, "template_mismatch", "; ".join(errors[:5]), Counter(template_mismatch=1))
    where = passage if isinstance(passage, Verbatim) else Verbatim(passage)
    counts: Counter[str] = Counter()
    missing: list[str] = []
    rewritten = _rewrite(filled, where, missing, "", counts)
    if missing:
        counts["not_in_text"] += 1
        counts["values_not_in_text"] += len(missing)
        return FilterResult(None, "not_in_text", "; ".join(missing[:5]), counts)
    return FilterResult(rewritten, counts=counts)


def check_filling_answer(answer: str, template: dict[str, Any], passage: str) -> FilterResult:
    """A teacher's extraction answer -> the checked filling, or the reason it is dropped."""
    try:
        filled = parse_json_object(answer)
    except ValueError as exc:
        return FilterResult(None, "unparseable", f"{exc}; answer starts: {answer[:200]!r}", Counter(unparseable=1))
    return check_filling(filled, template, passage)
