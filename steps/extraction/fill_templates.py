from typing import Annotated

from zenml import step
from zenml.config.cache_policy import CachePolicy

from distill_ner.config import TeacherConfig
from distill_ner.extraction import annotate as extraction_annotate
from distill_ner.extraction.data import ExtractionSet
from materializers.extraction import ExtractionSetMaterializer
from steps._stack import experiment_tracker_name
from steps.extraction._teacher import TEACHER_CODE, check_teacher, log_teacher


@step(
    output_materializers=ExtractionSetMaterializer,
    experiment_tracker=experiment_tracker_name(),
    cache_policy=CachePolicy(source_dependencies=TEACHER_CODE),
)
def fill_templates(
    templates: ExtractionSet, teacher: TeacherConfig, recorded_fingerprint: str
) -> Annotated[ExtractionSet, "extractions"]:
    """Ask the teacher to fill each template; keep fillings that follow it exactly with verbatim values."""
    data = extraction_annotate.fill_templates(templates, teacher)
    log_teacher(data)
    check_teacher(data, "filling", len(templates.examples), teacher)
    return data
