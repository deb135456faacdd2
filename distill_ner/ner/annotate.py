"""UniNER teacher annotation: the paper's prompt for every passage through the shared teacher client,
then the answers parsed and filtered.

Every passage ends in exactly one place: `AnnotationSet.passages` (possibly with zero entities
after filtering) or `AnnotationSet.failures` with a reason (transport failure after the last retry,
a permanent HTTP error, or an answer with no parseable list).
"""

from __future__ import annotations

import logging
from collections import Counter

from distill_ner.config import TeacherConfig
from distill_ner.ner.parse import FILTER_REASONS, parse_answer
from distill_ner.ner.prompt import build_messages
from distill_ner.records import AnnotatedPassage, AnnotationFailure, AnnotationSet, Passage
from distill_ner.teacher.backends import TeacherBackend
from distill_ner.teacher.client import TeacherRequest, make_request, run_teacher

log = logging.getLogger(__name__)


def teacher_request(passage_text: str, config: TeacherConfig) -> TeacherRequest:
    """The request `annotate_passages` sends for a passage, and its cache key."""
    return make_request(build_messages(passage_text, config.prompt), config)


def annotate_passages(
    passages: list[Passage],
    config: TeacherConfig,
    *,
    backend: TeacherBackend | None = None,
    progress: bool = True,
) -> AnnotationSet:
    """Teacher annotations for `passages`, in their order.

    `backend` replaces how requests are sent (default: built from `config`); the cache key always
    comes from `config` (backend kind, model, messages, sampling params).
    """
    ids = Counter(p.id for p in passages)
    dup_ids = [i for i, n in ids.items() if n > 1]
    if dup_ids:
        raise ValueError(f"annotate_passages: duplicate passage ids, e.g. {dup_ids[:3]}")

    requests = [teacher_request(p.text, config) for p in passages]
    run = run_teacher(requests, config, backend=backend, progress=progress)

    filter_counts: Counter[str] = Counter({r: 0 for r in FILTER_REASONS})
    type_counts: Counter[str] = Counter()
    annotated: list[AnnotatedPassage] = []
    failed: list[AnnotationFailure] = []
    for passage, req in zip(passages, requests):
        if req.key in run.failures:
            reason, detail = run.failures[req.key]
            failed.append(AnnotationFailure(passage_id=passage.id, reason=reason, detail=detail))
            continue
        answer = run.answers[req.key]
        result = parse_answer(answer, passage.text)
        filter_counts.update(result.counts)
        if not result.parsed:
            failed.append(
                AnnotationFailure(
                    passage_id=passage.id,
                    reason="unparseable",
                    detail=f"{result.error}; answer starts: {answer[:200]!r}",
                )
            )
            continue
        type_counts.update(e.type for e in result.entities)
        annotated.append(AnnotatedPassage(id=passage.id, text=passage.text, entities=result.entities))

    usage = {"passages": len(passages), **run.usage, "failures": len(failed)}
    log.info(
        "teacher: %d annotated, %d failed, %d requests, %d cache hits",
        len(annotated),
        len(failed),
        usage["requests"],
        usage["cache_hits"],
    )
    return AnnotationSet(
        passages=annotated,
        failures=failed,
        filter_counts=dict(filter_counts),
        type_counts=dict(sorted(type_counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        usage=usage,
        teacher=f"{config.backend}:{config.model}",
    )
