import logging
from typing import Annotated

import mlflow
from zenml import step
from zenml.config.cache_policy import CachePolicy

from distill_ner import run_checks, tracking
from distill_ner.config import TeacherConfig
from distill_ner.ner import annotate as ner_annotate
from distill_ner.ner import parse, prompt, views
from distill_ner.records import AnnotationSet, PassageSet
from distill_ner.teacher import client as teacher_client
from materializers import AnnotationSetMaterializer
from steps._stack import experiment_tracker_name, retry_failures_next_run

log = logging.getLogger(__name__)


@step(
    output_materializers=AnnotationSetMaterializer,
    experiment_tracker=experiment_tracker_name(),
    cache_policy=CachePolicy(source_dependencies=[ner_annotate, parse, prompt, teacher_client]),
)
def annotate(
    passages: PassageSet, config: TeacherConfig, recorded_fingerprint: str
) -> Annotated[AnnotationSet, "annotations"]:
    """Ask the teacher for every entity of every passage (through the persistent response cache),
    then parse and filter the answers. The API key comes from the environment or a ZenML secret only.

    A result with failed passages is never reused from ZenML's cache: the next run asks the teacher
    again for those passages (the others come from the response cache), and steps downstream are
    still reused when the annotations come out the same. More than `teacher.max_failed_fraction`
    failed passages stop the run here, before training."""
    annotations = ner_annotate.annotate_passages(passages.passages, config)
    if annotations.failures:
        retry_failures_next_run()
        log.warning(
            "teacher %s: %d of %d passages failed (%s); the next run retries them",
            annotations.teacher,
            len(annotations.failures),
            len(passages.passages),
            run_checks.failure_summary(annotations.failures, examples=1),
        )
    if mlflow.active_run():
        tracking.log_dataset([p.model_dump() for p in passages.passages], "corpus_sample", "corpus")
        tracking.log_text_view(views.annotations_html(annotations), "views/annotations.html")
        tracking.log_stage(
            tracking.teacher_params(config),
            {
                **{f"teacher.{k}": float(v) for k, v in annotations.usage.items()},
                **{f"teacher.filtered.{k}": float(v) for k, v in annotations.filter_counts.items()},
                "teacher.annotated_passages": len(annotations.passages),
                "teacher.failed_passages": len(annotations.failures),
                "teacher.entities": sum(len(p.entities) for p in annotations.passages),
                "teacher.types": len(annotations.type_counts),
            },
        )
    run_checks.require_annotations(annotations, config.max_failed_fraction)
    return annotations
