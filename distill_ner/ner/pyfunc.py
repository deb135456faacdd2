"""MLflow models-from-code entry point for the NER pyfunc.

Logging this file (not a PythonModel instance) means MLflow stores source code, never a cloudpickle.
"""

import mlflow

from distill_ner.ner.serving import NERModel

mlflow.models.set_model(NERModel())
