"""Typed records of the extraction recipe and their JSONL loaders.

ExtractionExample is the one record every stage passes on: a template for a text (generate_templates),
then its filling (fill_templates, negatives), then gold for a benchmark document. Loaders check every
line (schema, template rules, filling conforms, gold values verbatim in the text) and name the file and
line of the first problem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distill_ner.extraction.templates import (
    MAX_DEPTH,
    TemplateError,
    conformance_errors,
    string_leaves,
    validate_template,
)
from distill_ner.jsonl import iter_jsonl


class ExtractionExample(BaseModel):
    id: str
    kind: str = ""  # document kind (invoice, job posting, ...); "" for corpus passages
    text: str
    template: dict[str, Any]
    # None until the template is filled (the output of generate_templates has no filling yet)
    filled: dict[str, Any] | None = None
    # part of the text was removed and the filling blanked accordingly (negatives.py)
    shortened: bool = False


class ExtractionFailure(BaseModel):
    id: str
    stage: str  # "template" or "filling"
    reason: str
    detail: str = ""
    # the teacher gave no answer (transport/HTTP failure after the retries): asked again on the next run,
    # unlike an answer the filters refused, which the response cache would only refuse again
    request: bool = False

    @property
    def passage_id(self) -> str:
        return self.id


class ExtractionSet(BaseModel):
    examples: list[ExtractionExample]
    failures: list[ExtractionFailure] = Field(default_factory=list)
    # answers (or values) each filter removed, by reason; plus informational counters
    filter_counts: dict[str, int] = Field(default_factory=dict)
    # teacher usage per stage: requests, cache hits, tokens, estimated cost
    usage: dict[str, float] = Field(default_factory=dict)
    stats: dict[str, float] = Field(default_factory=dict)
    teacher: str = ""


class _WrittenDocument(BaseModel):
    """A line of a hand-written file: the demo's written.jsonl ("filled") or the benchmark ("gold")."""

    model_config = ConfigDict(extra="forbid")

    id: str
    kind: str
    text: str
    template: dict[str, Any]
    filled: dict[str, Any] | None = None
    gold: dict[str, Any] | None = None


def checked_example(obj: dict[str, Any], where: str, *, max_depth: int = MAX_DEPTH) -> ExtractionExample:
    """A hand-written document as an example: the filling (or gold) must conform and be copied verbatim.

    Verbatim here is exact (`value in text`): hand-written data has no excuse for layout differences.
    """
    try:
        doc = _WrittenDocument.model_validate(obj)
    except ValidationError as exc:
        # every problem of the line at once (up to three), each named by its field path
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'line'}: {e['msg']}" for e in exc.errors()[:3])
        raise ValueError(f"{where}: {problems}") from None
    if (doc.filled is None) == (doc.gold is None):
        raise ValueError(f"{where}: give exactly one of 'filled' or 'gold'")
    filled = doc.filled if doc.filled is not None else doc.gold
    try:
        validate_template(doc.template, max_depth)
    except TemplateError as exc:
        raise ValueError(f"{where}: template: {exc}") from None
    errors = conformance_errors(filled, doc.template)
    if errors:
        raise ValueError(f"{where}: filling does not follow the template: {'; '.join(errors[:3])}")
    for path, value in string_leaves(filled):
        if value not in doc.text:
            raise ValueError(f"{where}: {path} = {value!r} does not occur verbatim in the text")
    return ExtractionExample(id=doc.id, kind=doc.kind, text=doc.text, template=doc.template, filled=filled)


def load_examples(path: str | Path) -> list[ExtractionExample]:
    """A JSONL of {"id","kind","text","template","filled"|"gold"}; ids must be unique."""
    examples = [checked_example(obj, where) for where, obj in iter_jsonl(path)]
    seen: set[str] = set()
    for ex in examples:
        if ex.id in seen:
            raise ValueError(f"{path}: duplicate id {ex.id!r}")
        seen.add(ex.id)
    return examples
