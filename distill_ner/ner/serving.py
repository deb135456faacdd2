"""The NER student as an MLflow pyfunc model: log it, load it (`models:/distill-ner@production`), serve it.

Input: a pandas DataFrame (or a list of dicts) with `text` (str, any length up to `max_text_chars`) and
`types` (a list of str, or one comma-separated str). Output, one per row in input order:
`{"text", "entities": [{"text", "type", "start", "end", "score"}, ...]}` (mentions in text order,
`text[start:end]` is the mention), or with `output="grouped"` the UniNER shape `{"text", "entities":
{type: [strings]}}`. Per-request params: `output`, `decoding` ("grounded" | "free"), `threshold`.
Defaults and limits are the logged NERServing settings (distill_ner.ner.config).

Texts are cut into sentences and answered through ner.inference.Predictor; the sentences' questions of
all requests in flight go through one Batcher (engine.batcher), so concurrent requests share decoding
steps. Limits are checked before any work and refused as 400 with the limit's name. Staging, logging and
the bundled adapter base are the core's (distill_ner.serving).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow.pyfunc

from distill_ner.ner.config import INPUT_EXAMPLE, NERServing, ner_signature  # noqa: F401  (this flavour's)
from distill_ner.serving import BACKEND_ENV, StagedModel, invalid_input, log_model

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------ the model


def parse_types(value: Any, max_types: int | None = None) -> list[str]:
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
    limit = max_types if max_types is not None else NERServing().max_types
    if len(types) > limit:
        raise ValueError(
            f"{len(types)} entity types in one row; the limit max_types is {limit} (each type is one question per "
            "sentence: split the request)"
        )
    return types


def to_rows(model_input: Any, settings: NERServing | None = None) -> list[tuple[str, list[str]]]:
    """(text, types) per row from a DataFrame, a list of dicts or a single dict, within the limits."""
    import pandas as pd

    settings = settings or NERServing()
    if isinstance(model_input, pd.DataFrame):
        n = len(model_input)
    elif isinstance(model_input, Mapping):
        n = 1
    elif isinstance(model_input, Sequence) and not isinstance(model_input, str):
        n = len(model_input)
    else:
        raise TypeError(
            f"expected a DataFrame or a list of {{'text', 'types'}} dicts, got {type(model_input).__name__}"
        )
    if n > settings.max_rows:
        raise ValueError(f"{n} rows in one request; the limit max_rows is {settings.max_rows}: split the request")
    if isinstance(model_input, pd.DataFrame):
        records = model_input.to_dict(orient="records")
    elif isinstance(model_input, Mapping):
        records = [dict(model_input)]
    else:
        records = [dict(r) for r in model_input]
    rows = []
    for i, record in enumerate(records):
        text = record.get("text")
        if not isinstance(text, str):
            raise ValueError(f"row {i}: `text` must be a string")
        if len(text) > settings.max_text_chars:
            raise ValueError(
                f"row {i}: {len(text)} characters; the limit max_text_chars is {settings.max_text_chars}: "
                "split the text"
            )
        rows.append((text, parse_types(record.get("types"), settings.max_types)))
    return rows


def request_options(params: Mapping[str, Any] | None, settings: NERServing) -> tuple[str, bool, float]:
    """(output, grounded, threshold) of one request: its params over the served settings."""
    params = dict(params or {})
    output = params.get("output") or settings.output
    if output not in ("spans", "grouped"):
        raise ValueError(f"params.output={output!r}: use 'spans' or 'grouped'")
    decoding = params.get("decoding") or ("grounded" if settings.grounded else "free")
    if decoding not in ("grounded", "free"):
        raise ValueError(f"params.decoding={decoding!r}: use 'grounded' or 'free'")
    try:
        threshold = float(params.get("threshold") or 0.0)
    except (TypeError, ValueError):
        raise ValueError(f"params.threshold={params.get('threshold')!r}: a number between 0 and 1") from None
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"params.threshold={threshold}: a number between 0 and 1")
    return output, decoding == "grounded", threshold


def predict_rows(
    predictor: Any,
    rows: list[tuple[str, list[str]]],
    *,
    output: str = "spans",
    grounded: bool | None = None,
    threshold: float = 0.0,
    generate: Any = None,
) -> list[dict[str, Any]]:
    """`{"text", "entities"}` per (text, types) row, in row order, through a ner.inference.Predictor."""
    # one extract() per distinct type list; every call's questions may share a batch (`generate`)
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, (_, types) in enumerate(rows):
        groups.setdefault(tuple(types), []).append(i)
    out: list[dict[str, Any] | None] = [None] * len(rows)
    for types, indices in groups.items():
        found = predictor.extract(
            [rows[i][0] for i in indices], list(types), grounded=grounded, threshold=threshold, generate=generate
        )
        for i, entities in zip(indices, found, strict=True):
            if output == "grouped":
                out[i] = {"text": rows[i][0], "entities": {t: entities.grouped.get(t, []) for t in types}}
            else:
                out[i] = {"text": rows[i][0], "entities": [m.as_dict() for m in entities.mentions]}
    return out  # type: ignore[return-value]


class NERModel(StagedModel):
    """Open NER with the distilled student: one question per (sentence, type), as in UniversalNER."""

    def load_context(self, context: Any) -> None:
        from distill_ner.engine.batcher import Batcher
        from distill_ner.ner.inference import Predictor

        config = dict(context.model_config or {})
        known = set(NERServing.model_fields)
        # settings a model logged before them lacks take today's defaults
        self.settings = NERServing(**{k: v for k, v in config.items() if k in known})
        self.predictor = Predictor(
            self.model_ref(context),
            # entities as the model wrote them, not the lowercased form the UniNER metric compares
            surface_forms=bool(config.get("surface_forms", True)),
            grounded=self.settings.grounded,
            max_segment_chars=self.settings.max_segment_chars,
            backend=os.environ.get(BACKEND_ENV) or config.get("backend", "auto"),
            batch_size=self.settings.batch_size,
            max_new_tokens=self.settings.max_new_tokens,
        )
        self.batcher = Batcher(
            lambda queries, grounded: self.predictor.generate(queries, grounded),
            max_batch=self.settings.max_batch,
            wait_s=self.settings.batch_wait_ms / 1000,
            name="ner-batcher",
        )

    # `model_input` carries no type hint on purpose: MLflow 3 reads that hint as the input schema and
    # would then bypass the signature's DataFrame handling (see `to_rows` for what is accepted)
    def predict(self, context: Any, model_input, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:  # noqa: ANN001
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import DEADLINE_EXCEEDED, INTERNAL_ERROR

        try:
            rows = to_rows(model_input, self.settings)
            output, grounded, threshold = request_options(params, self.settings)
        except (TypeError, ValueError, KeyError) as exc:
            raise invalid_input(exc) from None
        deadline = time.monotonic() + self.settings.request_timeout_s

        def generate(queries: list[Any], grounded: bool) -> list[Any]:
            future = self.batcher.submit(queries, grounded, deadline)
            return future.result(timeout=max(deadline - time.monotonic(), 0.0) + 1.0)

        try:
            return predict_rows(
                self.predictor, rows, output=output, grounded=grounded, threshold=threshold, generate=generate
            )
        except TimeoutError:
            raise MlflowException(
                f"the request took longer than its limit request_timeout_s={self.settings.request_timeout_s:g}; "
                "its unanswered questions were dropped (send shorter texts or raise the limit)",
                error_code=DEADLINE_EXCEEDED,  # 504
            ) from None
        except Exception:
            logger.exception("prediction failed")
            raise MlflowException(
                "prediction failed; the server log has the details", error_code=INTERNAL_ERROR
            ) from None


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

    def predict(self, texts: Sequence[str], types: Sequence[str] | str, **params: Any) -> list[dict[str, Any]]:
        """`params`: output ("spans" | "grouped"), decoding ("grounded" | "free"), threshold."""
        types = parse_types(types)
        return list(self.pyfunc.predict([{"text": t, "types": types} for t in texts], params=params or None))


def load_production(model_name: str = "distill-ner") -> NERPredictor:
    return NERPredictor(f"models:/{model_name}@production")


def predict(model_uri: str, texts: Sequence[str], types: Sequence[str] | str, **params: Any) -> list[dict[str, Any]]:
    return NERPredictor(model_uri).predict(texts, types, **params)
