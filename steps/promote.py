import json
from pathlib import Path
from typing import Annotated, Union

from zenml import get_step_context, step

from distill_ner import registry, tracking, views
from distill_ner.config import GateConfig
from distill_ner.extraction.config import ExtractionServing
from distill_ner.ner.config import NERServing
from distill_ner.records import EvalReport, PromotionDecision
from distill_ner.registry.summary import closing_lines
from materializers import PromotionDecisionMaterializer
from steps._stack import experiment_tracker_name

# the recipes' typed serving settings; their own fields (and `flavour`) tell them apart in the step's
# stored parameters (a discriminated union fails ZenML's parameter check, which sees a dict without defaults)
ServingSettings = Union[NERServing, ExtractionServing]
# how each served flavour is used from the command line ({uri}: the model's registry URI)
USAGE = {
    "ner": 'distill-ner predict --model {uri} --types person,location "Marie Curie was born in Warsaw."',
    "extraction": "distill-ner extract --model {uri} --template template.json text.txt",
}


@step(
    output_materializers=PromotionDecisionMaterializer, experiment_tracker=experiment_tracker_name(), enable_cache=False
)
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
    flavour = serving or NERServing()
    decision = registry.register_and_gate(
        model_dir=model,
        report=report,
        gate=gate,
        tags={"zenml_run": context.pipeline_run.name, "teacher": teacher},
        zenml_model_version=zenml_model,
        flavour=flavour,
    )
    lines = closing_lines(decision, USAGE.get(flavour.flavour))
    describe(decision, report, Path(model), context.pipeline.name, teacher, lines[:2])
    tracking.replay_cached_steps()
    # the last step: its last lines are what the run leaves on the console
    print("\n".join(lines), flush=True)
    return decision


def describe(
    decision: PromotionDecision, report: EvalReport, model: Path, recipe: str, teacher: str, outcome: list[str]
) -> None:
    """The MLflow run's description and summary tags (shown at the top of the run page), and the decision view.
    The tags keep the gate's names (`f1`) for the recipe's primary metric, as the version tags do."""
    record_file = model / "training_config.json"
    trained = json.loads(record_file.read_text()) if record_file.exists() else {}
    counts = {
        "SFT rows": int(trained.get("metrics", {}).get("n_rows", 0)) or "?",
        **{f"{name} {report.unit}": n for name, n in sorted(report.coverage.items())},
    }
    primary = dict(report.primary)
    student = f"{trained.get('student', '?')} ({trained.get('method', '?')})"
    tracking.describe_run(
        tracking.run_description(
            recipe=recipe,
            teacher=teacher,
            student=student,
            counts=counts,
            f1=primary,
            outcome=outcome,
            metric=report.metric,
        ),
        tags={
            "result.avg_f1": f"{report.average:.4f}",
            "result.promoted": str(decision.promoted).lower(),
            **{f"result.f1.{name}": f"{value:.4f}" for name, value in primary.items()},
        },
    )
    tracking.log_text_view(views.decision_markdown(decision), "views/promotion_decision.md")
