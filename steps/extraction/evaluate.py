from pathlib import Path
from typing import Annotated

from zenml import step
from zenml.config.cache_policy import CachePolicy

from distill_ner import records, tracking
from distill_ner.engine import engine as shared_inference
from distill_ner.extraction import evaluation, inference, metric, prompts, templates
from distill_ner.extraction.config import ExtractionEvalConfig, ExtractionPromptConfig
from distill_ner.records import EvalReport
from materializers import EvalReportMaterializer
from steps._stack import experiment_tracker_name


@step(
    output_materializers=EvalReportMaterializer,
    experiment_tracker=experiment_tracker_name(),
    cache_policy=CachePolicy(
        source_dependencies=[evaluation, inference, shared_inference, metric, prompts, templates, records]
    ),
)
def evaluate_extraction(
    model: Path, config: ExtractionEvalConfig, prompt: ExtractionPromptConfig, benchmark_fingerprint: str
) -> Annotated[EvalReport, "eval_report"]:
    """Fill the benchmark's templates with the student (greedy) and score them with the tree metric, per kind."""
    report = evaluation.evaluate_extraction(str(model), config, prompt)
    tracking.log_stage(params={"extract.backend": report.backend}, metrics=evaluation.report_metrics(report))
    tracking.replay_cached_steps()
    return report
