from typing import Annotated

from zenml import step
from zenml.config.cache_policy import CachePolicy

from distill_ner.config import TeacherConfig
from distill_ner.extraction import annotate as extraction_annotate
from distill_ner.extraction.config import TemplatesConfig
from distill_ner.extraction.data import ExtractionSet
from distill_ner.records import PassageSet
from materializers.extraction import ExtractionSetMaterializer
from steps._stack import experiment_tracker_name
from steps.extraction._teacher import TEACHER_CODE, check_teacher, log_teacher


@step(
    output_materializers=ExtractionSetMaterializer,
    experiment_tracker=experiment_tracker_name(),
    cache_policy=CachePolicy(source_dependencies=TEACHER_CODE),
)
def generate_templates(
    passages: PassageSet, teacher: TeacherConfig, config: TemplatesConfig, recorded_fingerprint: str
) -> Annotated[ExtractionSet, "templates"]:
    """Ask the teacher for a template of every passage (NuExtract's generation prompt), through the shared
    response cache; answers that are not a valid template are dropped, counted by reason."""
    data = extraction_annotate.generate_templates(passages.passages, teacher, config)
    log_teacher(data)
    check_teacher(data, "template", len(passages.passages), teacher)
    return data
