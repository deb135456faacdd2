"""MLflow models-from-code entry point for the extraction pyfunc (source code is logged, never a pickle)."""

import mlflow

from distill_ner.extraction.serving import ExtractionModel

mlflow.models.set_model(ExtractionModel())
