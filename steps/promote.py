from pathlib import Path
from typing import Annotated, Any

from zenml import get_step_context, step

from distill_ner import registry, serving
from distill_ner.config import GateConfig
from distill_ner.records import EvalReport, PromotionDecision
from materializers import PromotionDecisionMaterializer
from steps._stack import experiment_tracker_name


@step(output_materializers=PromotionDecisionMaterializer, experiment_tracker=experiment_tracker_name(), enable_cache=False)
def register_and_promote(
    model: Path,
    report: EvalReport,
    gate: GateConfig,
    teacher: str,
    flavour: str = "ner",
    serving_settings: dict[str, Any] | None = None,
) -> Annotated[PromotionDecision, "promotion_decision"]:
    """Register the candidate in the MLflow registry, and move `production` to it only if it passes the gate.

    `flavour` picks the pyfunc the model is served as (serving.FLAVOURS), `serving_settings` its settings.
    Never cached: it reads and writes registry state outside the pipeline.
    """
    context = get_step_context()
    zenml_model = context.model if context.pipeline_run.model_version else None
    return registry.register_and_gate(
        model_dir=model,
        report=report,
        gate=gate,
        tags={"zenml_run": context.pipeline_run.name, "teacher": teacher},
        zenml_model_version=zenml_model,
        log_kwargs=serving.flavour_log_kwargs(flavour, serving_settings),
    )
