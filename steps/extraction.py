"""Thin steps of the extraction recipe (NuExtract). Corpus sampling, training and registration are the
shared steps (steps/sample_corpus.py, steps/train.py, steps/promote.py), used as they are."""

from pathlib import Path
from typing import Annotated

import mlflow
from zenml import log_metadata, step
from zenml.config.cache_policy import CachePolicy

from distill_ner import chat, corpus
from distill_ner.engine import engine as shared_inference
from distill_ner.config import StudentConfig, TeacherConfig
from distill_ner.extraction import annotate as extraction_annotate
from distill_ner.extraction import evaluation, filters, inference, metric, negatives, prompts, sft, templates
from distill_ner.extraction.config import (
    ExtractionEvalConfig,
    ExtractionNegativesConfig,
    ExtractionPromptConfig,
    ExtractionSFTConfig,
    TemplatesConfig,
)
from distill_ner.extraction.data import ExtractionSet
from distill_ner.models import load_tokenizer
from distill_ner.records import EvalReport, PassageSet, SFTDataset
from distill_ner.teacher import client as teacher_client
from materializers import EvalReportMaterializer, SFTDatasetMaterializer
from materializers.extraction import ExtractionSetMaterializer
from steps._stack import experiment_tracker_name

_TEACHER_CODE = [extraction_annotate, prompts, filters, templates, teacher_client]


def _log_teacher(data: ExtractionSet) -> None:
    if mlflow.active_run():
        mlflow.log_metrics({f"teacher.{k}": float(v) for k, v in data.usage.items()})
        mlflow.log_metrics({f"teacher.filtered.{k}": float(v) for k, v in data.filter_counts.items()})
        mlflow.log_metrics({f"teacher.{k}": float(v) for k, v in data.stats.items()})


@step(
    output_materializers=ExtractionSetMaterializer,
    experiment_tracker=experiment_tracker_name(),
    cache_policy=CachePolicy(source_dependencies=_TEACHER_CODE),
)
def generate_templates(
    passages: PassageSet, teacher: TeacherConfig, config: TemplatesConfig, recorded_fingerprint: str
) -> Annotated[ExtractionSet, "templates"]:
    """Ask the teacher for a template of every passage (NuExtract's generation prompt), through the shared
    response cache; answers that are not a valid template are dropped, counted by reason."""
    data = extraction_annotate.generate_templates(passages.passages, teacher, config)
    _log_teacher(data)
    return data


@step(
    output_materializers=ExtractionSetMaterializer,
    experiment_tracker=experiment_tracker_name(),
    cache_policy=CachePolicy(source_dependencies=_TEACHER_CODE),
)
def fill_templates(
    templates: ExtractionSet, teacher: TeacherConfig, recorded_fingerprint: str
) -> Annotated[ExtractionSet, "extractions"]:
    """Ask the teacher to fill each template; keep fillings that follow it exactly with verbatim values."""
    data = extraction_annotate.fill_templates(templates, teacher)
    _log_teacher(data)
    return data


@step(output_materializers=ExtractionSetMaterializer, cache_policy=CachePolicy(source_dependencies=[negatives, filters, corpus]))
def add_extraction_negatives(
    extractions: ExtractionSet, config: ExtractionNegativesConfig
) -> Annotated[ExtractionSet, "extractions_with_negatives"]:
    """Shorten about half of the texts and blank the values that are gone (no teacher call)."""
    data = negatives.add_negatives(extractions, config.fraction, config.min_drop, config.max_drop, config.seed)
    log_metadata(metadata={k: v for k, v in data.stats.items() if k.startswith("negatives.")}, infer_artifact=True)
    return data


@step(
    output_materializers=SFTDatasetMaterializer,
    experiment_tracker=experiment_tracker_name(),
    cache_policy=CachePolicy(source_dependencies=[sft, prompts, chat]),
)
def build_extraction_sft(
    extractions: ExtractionSet, config: ExtractionSFTConfig, prompt: ExtractionPromptConfig, student: StudentConfig
) -> Annotated[SFTDataset, "sft_dataset"]:
    """One conversation per example (NuExtract prompt -> filled JSON), loss on the filling only."""
    dataset = sft.build_extraction_sft(extractions, config, prompt, load_tokenizer(student.model))
    if mlflow.active_run():
        mlflow.log_metrics({f"sft.{k}": float(v) for k, v in dataset.stats.items()})
    return dataset


@step(
    output_materializers=EvalReportMaterializer,
    experiment_tracker=experiment_tracker_name(),
    cache_policy=CachePolicy(source_dependencies=[evaluation, inference, shared_inference, metric, prompts, templates]),
)
def evaluate_extraction(
    model: Path, config: ExtractionEvalConfig, prompt: ExtractionPromptConfig, benchmark_fingerprint: str
) -> Annotated[EvalReport, "eval_report"]:
    """Fill the benchmark's templates with the student (greedy) and score them with the tree metric, per kind."""
    report = evaluation.evaluate_extraction(str(model), config, prompt)
    if mlflow.active_run():
        mlflow.log_metrics(evaluation.report_metrics(report))
    return report
