from pathlib import Path
from typing import Annotated, Union

from pydantic import Field
from zenml import get_step_context, step

from distill_ner import registry
from distill_ner.config import GateConfig
from distill_ner.extraction.config import ExtractionServing
from distill_ner.ner.config import NERServing
from distill_ner.records import EvalReport, PromotionDecision
from materializers import PromotionDecisionMaterializer
from steps._stack import experiment_tracker_name

# the recipes' typed serving settings; `flavour` tells them apart in the step's stored parameters
ServingSettings = Annotated[Union[NERServing, ExtractionServing], Field(discriminator="flavour")]


@step(output_materializers=PromotionDecisionMaterializer, experiment_tracker=experiment_tracker_name(), enable_cache=False)
def register_and_promote(
    model: Path,
    report: EvalReport,
    gate: GateConfig,
    teacher: str,
    serving: ServingSettings | None = None,
) -> Annotated[PromotionDecision, "promotion_decision"]:
    """Register the candidate in the MLflow registry, and move `production` to it only if it passes the gate.

    `serving` is the recipe's pyfunc flavour with its settings (default: the NER recipe's). Never cached: it
    reads and writes registry state outside the pipeline.
    """
    context = get_step_context()
    zenml_model = context.model if context.pipeline_run.model_version else None
    return registry.register_and_gate(
        model_dir=model,
        report=report,
        gate=gate,
        tags={"zenml_run": context.pipeline_run.name, "teacher": teacher},
        zenml_model_version=zenml_model,
        flavour=serving or NERServing(),
    )
