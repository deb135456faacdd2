"""The extraction student as an MLflow pyfunc: rows {"text", "template"} in, {"text", "filled", "raw"} out.

Staging and loading of the model folder (adapter + bundled local base) are the shared serving module's:
ExtractionModel inherits NERModel's adapter/base resolution and replaces only what differs, the call
shape. `log_kwargs()` gives what `serving.log_ner_model` needs to log this flavour instead of NER's;
the model is logged from code (pyfunc_extraction.py), never as a pickled instance.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from distill_ner.serving import NERModel, invalid_input

CODE_FILE = Path(__file__).resolve().parent / "pyfunc_extraction.py"

INPUT_EXAMPLE = [
    {
        "text": "Invoice INV-7 from Birch Supplies, due 4 March 2025.",
        "template": json.dumps({"invoice_number": "", "vendor": "", "due_date": ""}),
    }
]


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, DataType, Schema

    return ModelSignature(
        # `template` is a JSON object or its JSON text: AnyType accepts both
        inputs=Schema([ColSpec(DataType.string, "text"), ColSpec(AnyType(), "template")]),
        outputs=Schema([ColSpec(DataType.string, "text"), ColSpec(AnyType(), "filled"), ColSpec(DataType.string, "raw")]),
    )


def to_rows(model_input: Any) -> list[tuple[str, dict[str, Any]]]:
    """(text, template) per row from a DataFrame, a list of dicts or one dict; templates are validated."""
    import pandas as pd

    from distill_ner.extraction.templates import validate_template

    if isinstance(model_input, pd.DataFrame):
        frame = model_input
    elif isinstance(model_input, (Mapping, Sequence)) and not isinstance(model_input, str):
        frame = pd.DataFrame([model_input] if isinstance(model_input, Mapping) else list(model_input))
    else:
        raise TypeError(f"expected a DataFrame or a list of {{'text', 'template'}} dicts, got {type(model_input).__name__}")
    records = frame.to_dict(orient="records")
    rows = []
    for i, record in enumerate(records):
        text, template = record.get("text"), record.get("template")
        if not isinstance(text, str):
            raise ValueError(f"row {i}: `text` must be a string")
        if isinstance(template, str):
            template = json.loads(template)
        rows.append((text, validate_template(template)))
    return rows


class ExtractionModel(NERModel):
    """Template filling with the distilled student (greedy), one generation per row."""

    def load_context(self, context: Any) -> None:
        from distill_ner.extraction.config import ExtractionPromptConfig
        from distill_ner.extraction.inference import Extractor

        config = dict(context.model_config or {})
        self._tmp = None
        ref = self._model_ref(Path(context.artifacts["model"]))
        self.extractor = Extractor.load(
            ref,
            ExtractionPromptConfig(format=config.get("prompt_format", "1.5"), indent=config.get("indent", 4)),
            batch_size=int(config.get("batch_size", 8)),
            max_new_tokens=int(config.get("max_new_tokens", 512)),
        )

    # no annotations here: MLflow reads predict's type hints as a schema and warns on anything but list[...]
    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        """One {"text", "filled", "raw"} per input row, in order; "filled" is None when no JSON came out."""
        from distill_ner.corpus import normalize_whitespace

        # whitespace collapsed as for the training passages (the student never saw anything else)
        try:
            rows = [(template, normalize_whitespace(text)) for text, template in to_rows(model_input)]
        except (TypeError, ValueError) as exc:
            raise invalid_input(exc) from None
        fillings = self.extractor.fill(rows)
        return [{"text": text, "filled": f.value, "raw": f.raw} for (_, text), f in zip(rows, fillings)]


def log_kwargs(prompt_format: str = "1.5", indent: int | None = 4, batch_size: int = 8, max_new_tokens: int = 512) -> dict[str, Any]:
    """Arguments that make the shared model logger write this flavour."""
    return {
        "python_model": str(CODE_FILE),
        "signature": signature(),
        "input_example": INPUT_EXAMPLE,
        "model_config": {"prompt_format": prompt_format, "indent": indent, "batch_size": batch_size, "max_new_tokens": max_new_tokens},
    }
