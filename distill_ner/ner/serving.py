"""The NER student as an MLflow pyfunc model: log it, load it (`models:/distill-ner@production`), serve it.

Input: a pandas DataFrame (or a list of dicts) with `text` (str) and `types` (a list of str, or one
comma-separated str). Output: one `{"text", "entities": {type: [strings]}}` per row, in input order.
Generation is distill_ner.ner.inference's Predictor (over the shared engine); this module only adapts rows
to it. Staging, logging and the bundled adapter base are the core's (distill_ner.serving).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow.pyfunc

from distill_ner.ner.config import INPUT_EXAMPLE, NERServing, ner_signature  # noqa: F401  (this flavour's)
from distill_ner.serving import BACKEND_ENV, StagedModel, invalid_input, log_model

# ------------------------------------------------------------------------------------------ the model


MAX_TYPES_PER_ROW = 100  # each type is one generation: 10,000 types held a server worker ~20 minutes


def parse_types(value: Any) -> list[str]:
    """A list/array of type names, or a comma-separated string, as a clean list."""
    if value is None:
        items: Iterable[Any] = []
    elif isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, Iterable):
        items = list(value)
    else:
        raise TypeError(f"`types` must be a list of strings or a comma-separated string, not {type(value).__name__}")
    types = [str(t).strip() for t in items if str(t).strip()]
    if not types:
        raise ValueError("every row needs at least one entity type in `types`")
    types = list(dict.fromkeys(types))
    if len(types) > MAX_TYPES_PER_ROW:
        raise ValueError(
            f"{len(types)} entity types in one row; at most {MAX_TYPES_PER_ROW} (each type is one "
            "generation: split the request)"
        )
    return types


def to_rows(model_input: Any) -> list[tuple[str, list[str]]]:
    """(text, types) per row from a DataFrame, a list of dicts or a single dict."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        records = model_input.to_dict(orient="records")
    elif isinstance(model_input, Mapping):
        records = [dict(model_input)]
    elif isinstance(model_input, Sequence) and not isinstance(model_input, str):
        records = [dict(r) for r in model_input]
    else:
        raise TypeError(
            f"expected a DataFrame or a list of {{'text', 'types'}} dicts, got {type(model_input).__name__}"
        )
    rows = []
    for i, record in enumerate(records):
        if not isinstance(record.get("text"), str):
            raise ValueError(f"row {i}: `text` must be a string")
        rows.append((record["text"], parse_types(record.get("types"))))
    return rows


def predict_rows(predictor: Any, rows: list[tuple[str, list[str]]]) -> list[dict[str, Any]]:
    """`{"text", "entities"}` per (text, types) row, in row order, through a ner.inference.Predictor."""
    # the engine takes one type list per call: group rows that ask for the same types
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, (_, types) in enumerate(rows):
        groups.setdefault(tuple(types), []).append(i)
    out: list[dict[str, Any] | None] = [None] * len(rows)
    for types, indices in groups.items():
        found = predictor.predict([rows[i][0] for i in indices], list(types))
        for i, entities in zip(indices, found, strict=True):
            out[i] = {"text": rows[i][0], "entities": {t: list(entities.get(t, [])) for t in types}}
    return out  # type: ignore[return-value]


class NERModel(StagedModel):
    """Open NER with the distilled student: one generation per (text, type), as in UniversalNER."""

    def load_context(self, context: Any) -> None:
        from distill_ner.ner.inference import Predictor

        config = dict(context.model_config or {})
        self.predictor = Predictor(
            self.model_ref(context),
            # entities as the model wrote them, not the lowercased form the UniNER metric compares
            surface_forms=bool(config.get("surface_forms", True)),
            # entities only as spans of the text (grounded decoding); off unless switched on at load time
            # (model_config={"grounded": True} or MLflow's MLFLOW_PYFUNC_INFERENCE_CONFIG)
            grounded=bool(config.get("grounded", False)),
            backend=os.environ.get(BACKEND_ENV) or config.get("backend", "auto"),
            batch_size=int(config.get("batch_size", 16)),
            max_new_tokens=int(config.get("max_new_tokens", 256)),
        )

    # `model_input` carries no type hint on purpose: MLflow 3 reads that hint as the input schema and
    # would then bypass the signature's DataFrame handling (see `to_rows` for what is accepted)
    def predict(self, context: Any, model_input, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:  # noqa: ANN001
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INTERNAL_ERROR

        try:
            rows = to_rows(model_input)
        except (TypeError, ValueError, KeyError) as exc:
            raise invalid_input(exc) from None
        try:
            return self._predict_rows(rows)
        except Exception:
            logging.getLogger(__name__).exception("prediction failed")
            raise MlflowException(
                "prediction failed; the server log has the details", error_code=INTERNAL_ERROR
            ) from None

    def _predict_rows(self, rows: list[tuple[str, list[str]]]) -> list[dict[str, Any]]:
        return predict_rows(self.predictor, rows)


def log_ner_model(
    model_dir: str | Path,
    artifact_path: str = "model",
    *,
    registered_model_name: str | None = None,
    base_dtype: str | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 256,
) -> Any:
    """Log the model folder as the NER pyfunc in the active MLflow run; returns the ModelInfo (`.model_uri`)."""
    settings = NERServing(base_dtype=base_dtype, batch_size=batch_size, max_new_tokens=max_new_tokens)
    return log_model(model_dir, settings, artifact_path, registered_model_name=registered_model_name)


# ------------------------------------------------------------------------------------------ using it


class NERPredictor:
    """A loaded pyfunc model with the package's call shape: predict(texts, types) -> [{"text", "entities"}]."""

    def __init__(self, model_uri: str):
        self.model_uri = model_uri
        self.pyfunc = mlflow.pyfunc.load_model(model_uri)

    def predict(self, texts: Sequence[str], types: Sequence[str] | str) -> list[dict[str, Any]]:
        types = parse_types(types)
        return list(self.pyfunc.predict([{"text": t, "types": types} for t in texts]))


def load_production(model_name: str = "distill-ner") -> NERPredictor:
    return NERPredictor(f"models:/{model_name}@production")


def predict(model_uri: str, texts: Sequence[str], types: Sequence[str] | str) -> list[dict[str, Any]]:
    return NERPredictor(model_uri).predict(texts, types)
