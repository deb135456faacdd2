"""What the extraction recipe's two teacher steps share: the code their cache depends on, MLflow logging, and
what they do with requests that got no answer."""

import logging

from distill_ner import run_checks, tracking
from distill_ner.config import TeacherConfig
from distill_ner.extraction import annotate as extraction_annotate
from distill_ner.extraction import filters, prompts, templates
from distill_ner.extraction.data import ExtractionSet
from distill_ner.teacher import client as teacher_client
from steps._stack import retry_failures_next_run

log = logging.getLogger(__name__)

TEACHER_CODE = [extraction_annotate, prompts, filters, templates, teacher_client]


def log_teacher(data: ExtractionSet) -> None:
    tracking.log_stage(
        metrics={
            **{f"teacher.{k}": float(v) for k, v in data.usage.items()},
            **{f"teacher.filtered.{k}": float(v) for k, v in data.filter_counts.items()},
            **{f"teacher.{k}": float(v) for k, v in data.stats.items()},
        }
    )


def check_teacher(data: ExtractionSet, stage: str, asked: int, teacher: TeacherConfig) -> None:
    """Requests of `stage` that got no answer: the step is run again next time (not served from ZenML's cache),
    and more than teacher.max_failed_fraction of the `asked` ones stop the run here, before training."""
    failed = extraction_annotate.request_failures(data, stage)
    if not failed:
        return
    retry_failures_next_run()
    summary = run_checks.failure_summary(failed)
    log.warning(
        "teacher %s: %d of %d %s requests failed (%s); the next run retries them",
        data.teacher,
        len(failed),
        asked,
        stage,
        summary,
    )
    run_checks.require_teacher_answers(
        data.teacher, len(failed), asked, teacher.max_failed_fraction, summary, what=f"{stage} requests"
    )
