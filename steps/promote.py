import json
from pathlib import Path
from typing import Annotated, Any

from zenml import get_step_context, step

from distill_ner import registry, serving, tracking, views
from distill_ner.config import GateConfig
from distill_ner.records import EvalReport, PromotionDecision
from materializers import PromotionDecisionMaterializer
from distill_ner.registry.summary import closing_lines
from steps._stack import experiment_tracker_name

# how each served flavour is used from the command line ({uri}: the model's registry URI)
USAGE = {
    "ner": 'distill-ner predict --model {uri} --types person,location "Marie Curie was born in Warsaw."',
    "extraction": "distill-ner extract --model {uri} --template template.json text.txt",
}

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
    decision = registry.register_and_gate(
        model_dir=model,
        report=report,
        gate=gate,
        tags={"zenml_run": context.pipeline_run.name, "teacher": teacher},
        zenml_model_version=zenml_model,
        log_kwargs=serving.flavour_log_kwargs(flavour, serving_settings),
    )
    lines = closing_lines(decision, USAGE.get(flavour))
    describe(decision, report, Path(model), context.pipeline.name, teacher, lines[:2])
    # the last step: its last lines are what the run leaves on the console
    print("\n".join(lines), flush=True)
    return decision


def describe(decision: PromotionDecision, report: EvalReport, model: Path, recipe: str, teacher: str, outcome: list[str]) -> None:
    """The MLflow run's description and summary tags (shown at the top of the run page), and the decision view."""
    record_file = model / "training_config.json"
    trained = json.loads(record_file.read_text()) if record_file.exists() else {}
    counts = {"SFT rows": int(trained.get("metrics", {}).get("n_rows", 0)) or "?",
              **{f"{name} sentences": n for name, n in sorted(report.coverage.items())}}
    f1 = {name: scores.f1 for name, scores in report.per_dataset.items()}
    student = f"{trained.get('student', '?')} ({trained.get('method', '?')})"
    tracking.describe_run(
        tracking.run_description(recipe=recipe, teacher=teacher, student=student, counts=counts, f1=f1, outcome=outcome),
        tags={"result.avg_f1": f"{report.average_f1:.4f}", "result.promoted": str(decision.promoted).lower(),
              **{f"result.f1.{name}": f"{value:.4f}" for name, value in f1.items()}},
    )
    tracking.log_text_view(views.decision_markdown(decision), "views/promotion_decision.md")
