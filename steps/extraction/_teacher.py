"""What the extraction recipe's two teacher steps share: the code their cache depends on, and MLflow logging."""

import mlflow

from distill_ner.extraction import annotate as extraction_annotate
from distill_ner.extraction import filters, prompts, templates
from distill_ner.extraction.data import ExtractionSet
from distill_ner.teacher import client as teacher_client

TEACHER_CODE = [extraction_annotate, prompts, filters, templates, teacher_client]


def log_teacher(data: ExtractionSet) -> None:
    if mlflow.active_run():
        mlflow.log_metrics({f"teacher.{k}": float(v) for k, v in data.usage.items()})
        mlflow.log_metrics({f"teacher.filtered.{k}": float(v) for k, v in data.filter_counts.items()})
        mlflow.log_metrics({f"teacher.{k}": float(v) for k, v in data.stats.items()})
