"""The two teacher stages of NuExtract's data construction, on the shared teacher machinery.

1. generate_templates: the template-generation prompt for each passage -> a template (JSON skeleton).
2. fill_templates: the extraction prompt with that template -> the filling, kept only if it follows the
   template exactly and every value occurs verbatim in the passage (filters.py).

Requests go through `teacher.annotate.run_teacher` — the same cache (keys, recorded files, offline mode),
concurrency, retries and usage accounting as the UniversalNER annotation; only prompts and parsers differ.
Every passage ends in exactly one place: the examples, or the failures with the stage and a reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from distill_ner.config import TeacherConfig
from distill_ner.extraction.config import TemplatesConfig
from distill_ner.extraction.data import ExtractionExample, ExtractionFailure, ExtractionSet
from distill_ner.extraction.filters import (
    FILLING_REASONS,
    TEMPLATE_REASONS,
    check_filling_answer,
    check_template_answer,
)
from distill_ner.extraction.prompts import extraction_messages, template_generation_messages
from distill_ner.extraction.templates import string_leaves
from distill_ner.records import Passage
from distill_ner.teacher.client import make_request, run_teacher


def _prefixed(stage: str, values: dict[str, Any]) -> dict[str, Any]:
    return {f"{stage}.{k}": v for k, v in values.items()}


def generate_templates(
    passages: Sequence[Passage],
    teacher: TeacherConfig,
    config: TemplatesConfig,
    *,
    backend: Any = None,
    progress: bool = True,
) -> ExtractionSet:
    """A teacher-written template for each passage (sample values blanked), or a failure with its reason."""
    requests = [make_request(template_generation_messages(p.text, config.few_shot), teacher) for p in passages]
    run = run_teacher(requests, teacher, backend=backend, progress=progress)
    counts: Counter[str] = Counter({r: 0 for r in TEMPLATE_REASONS})
    examples: list[ExtractionExample] = []
    failures: list[ExtractionFailure] = []
    for passage, request in zip(passages, requests):
        if request.key in run.failures:
            reason, detail = run.failures[request.key]
            failures.append(
                ExtractionFailure(id=passage.id, stage="template", reason=reason, detail=detail, request=True)
            )
            continue
        result = check_template_answer(run.answers[request.key], config.max_depth)
        counts.update(result.counts)
        if result.value is None:
            failures.append(
                ExtractionFailure(id=passage.id, stage="template", reason=result.reason, detail=result.detail)
            )
            continue
        examples.append(ExtractionExample(id=passage.id, text=passage.text, template=result.value))
    return ExtractionSet(
        examples=examples,
        failures=failures,
        filter_counts=_prefixed("template", dict(counts)),
        usage=_prefixed("template", run.usage),
        stats={"passages": len(passages), "templates": len(examples)},
        teacher=f"{teacher.backend}:{teacher.model}",
    )


def fill_templates(
    data: ExtractionSet,
    teacher: TeacherConfig,
    *,
    backend: Any = None,
    progress: bool = True,
) -> ExtractionSet:
    """The teacher's filling of each template, checked; the template stage's failures and usage are carried on."""
    requests = [make_request(extraction_messages(ex.text, ex.template), teacher) for ex in data.examples]
    run = run_teacher(requests, teacher, backend=backend, progress=progress)
    counts: Counter[str] = Counter({r: 0 for r in FILLING_REASONS})
    examples: list[ExtractionExample] = []
    failures = list(data.failures)
    for example, request in zip(data.examples, requests):
        if request.key in run.failures:
            reason, detail = run.failures[request.key]
            failures.append(
                ExtractionFailure(id=example.id, stage="filling", reason=reason, detail=detail, request=True)
            )
            continue
        result = check_filling_answer(run.answers[request.key], example.template, example.text)
        counts.update(result.counts)
        if result.value is None:
            failures.append(
                ExtractionFailure(id=example.id, stage="filling", reason=result.reason, detail=result.detail)
            )
            continue
        examples.append(example.model_copy(update={"filled": result.value}))
    values = [sum(1 for _ in string_leaves(ex.filled)) for ex in examples]
    stats = {
        **data.stats,
        "filled": len(examples),
        "values": sum(values),
        "empty_fillings": sum(1 for n in values if n == 0),
    }
    return ExtractionSet(
        examples=examples,
        failures=failures,
        filter_counts={**data.filter_counts, **_prefixed("filling", dict(counts))},
        usage={**data.usage, **_prefixed("filling", run.usage)},
        stats=stats,
        teacher=data.teacher or f"{teacher.backend}:{teacher.model}",
    )


def request_failures(data: ExtractionSet, stage: str) -> list[ExtractionFailure]:
    """The `stage`'s passages that got no answer from the teacher (retried next run, counted against
    teacher.max_failed_fraction); answers the filters refused are not among them."""
    return [f for f in data.failures if f.request and f.stage == stage]
