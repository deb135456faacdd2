"""What every command-line entry point shares: offline, quiet defaults, stdout kept for results, and the
MLflow tracking URI of the active stack. Imports nothing heavy at module level (`distill-ner --help`)."""

from __future__ import annotations

import os
import sys

# No analytics or telemetry calls (they hang where traffic is dropped), no model-hub look-ups.
# The Makefile exports the same variables for the commands it runs.
OFFLINE_ENV = {
    "ZENML_ANALYTICS_OPT_IN": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_EVALUATE_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def quiet_defaults() -> None:
    """Set OFFLINE_ENV where the environment does not already say otherwise."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


class _CurrentStderr:
    """Whatever sys.stderr is at the time of writing (it is swapped while tests capture output)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def results_only_on_stdout() -> None:
    """Keep stdout for a command's results (JSON lines, tables): ZenML's console handler, which also shows
    Python warnings once ZenML is imported, writes to stdout and would break `| jq`. Without ZenML imported
    there is nothing to route (and importing it here would cost seconds): use_tracking_uri calls this again
    after it may have imported ZenML."""
    import logging

    if "zenml.logger" not in sys.modules:
        return
    from zenml.logger import ZenMLConsoleHandler

    for handler in logging.root.handlers:
        if isinstance(handler, ZenMLConsoleHandler) and not isinstance(handler.stream, _CurrentStderr):
            with handler.lock:  # not setStream: it flushes the old stream, which may be closed by now
                handler.stream = _CurrentStderr()


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when set, else the active ZenML stack's experiment tracker."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        from distill_ner.stack import configure_mlflow_from_active_stack

        uri = configure_mlflow_from_active_stack()
    return uri


def use_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when set, else the active ZenML stack's experiment tracker; set for MLflow."""
    import mlflow

    uri = tracking_uri()
    results_only_on_stdout()  # ZenML may be imported by now
    mlflow.set_tracking_uri(uri)
    return uri


def check_model(model_uri: str) -> None:
    """Exit with one line listing the registered names/aliases when a models:/ URI names none of them."""
    from mlflow import MlflowClient

    from distill_ner.registry.lookup import ModelNotFoundError, check_model_uri

    try:
        check_model_uri(MlflowClient(), model_uri)
    except ModelNotFoundError as exc:
        raise SystemExit(f"{model_uri}: {exc}") from None
