"""Two thin evaluation steps over one function (`evaluation.evaluate_model`).

`evaluate` takes the trained student as the `Path` artifact the train step outputs (distill_ner);
`evaluate_reference` takes a model reference string given as a parameter (evaluate_ner: a hub id, a
local folder or `models:/name@alias`). ZenML type-checks artifact inputs, so a `Path` artifact cannot
feed a `str` input; both steps therefore stay, and share everything through `_evaluate_and_log`.
"""

import json
import logging
from pathlib import Path
from typing import Annotated

from zenml import step
from zenml.config.cache_policy import CachePolicy

from distill_ner import tracking
from distill_ner.ner import benchmarks, evaluation, inference, metrics, views, zero_shot
from distill_ner.ner.config import EvalConfig
from distill_ner.records import EvalReport
from materializers import EvalReportMaterializer
from steps._stack import experiment_tracker_name

logger = logging.getLogger(__name__)


def _evaluate_and_log(model_ref: str, config: EvalConfig, shown_ref: str | None = None) -> EvalReport:
    """`shown_ref`: the model as the user named it, logged instead of `model_ref` (e.g. a temporary folder)."""
    with tracking.system_metrics():
        report = evaluation.evaluate_model(model_ref, config)
    evaluation.log_to_mlflow(
        report, config, shown_ref or model_ref
    )  # params, metrics, predictions.json (if a run is active)
    for name in report.per_dataset:  # each benchmark as the dataset input it was, as far as it was evaluated
        rows = [
            {"id": p.id, "text": p.text, "type": p.type, "gold": p.gold}
            for p in report.predictions
            if p.dataset == name
        ]
        tracking.log_dataset(rows, name, "evaluation")
    tracking.log_f1_chart({name: scores.f1 for name, scores in report.per_dataset.items()})
    tracking.log_text_view(views.eval_html(report), "views/eval_report.html")
    logger.info("\n%s", zero_shot.comparison_markdown(report))  # the results next to published numbers
    tracking.replay_cached_steps()
    return report


def trained_model_ref(model: Path) -> str | None:
    """The student the user named and how it was trained, for the logs; the folder itself is temporary."""
    record = model / "training_config.json"
    if not record.exists():
        return None
    trained = json.loads(record.read_text())
    return f"{trained.get('student', '?')} + {trained.get('method', '?')} trained in this run"


@step(
    output_materializers=EvalReportMaterializer,
    experiment_tracker=experiment_tracker_name(),
    cache_policy=CachePolicy(source_dependencies=[benchmarks, evaluation, inference, metrics]),
)
def evaluate(model: Path, config: EvalConfig, benchmarks_fingerprint: str) -> Annotated[EvalReport, "eval_report"]:
    """Score the trained student on every benchmark with the UniNER metric (and seqeval where gold is token-level)."""
    return _evaluate_and_log(str(model), config, trained_model_ref(model))


@step(
    output_materializers=EvalReportMaterializer,
    experiment_tracker=experiment_tracker_name(),
    cache_policy=CachePolicy(source_dependencies=[benchmarks, evaluation, inference, metrics]),
)
def evaluate_reference(
    model: str, config: EvalConfig, benchmarks_fingerprint: str, model_fingerprint: str
) -> Annotated[EvalReport, "eval_report"]:
    """Score any model reference; the fingerprints make the cache see changed benchmark or model files."""
    return _evaluate_and_log(model, config)
