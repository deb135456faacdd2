"""The extraction student as an MLflow pyfunc: rows {"text", "template"} in, {"text", "filled", "raw"} out.

Staging, logging and loading of the model folder (adapter + bundled local base) are the core's
(distill_ner.serving): `ExtractionServing` is this recipe's `Flavour` (typed settings, signature, example),
and the model is logged from code (pyfunc_extraction.py), never as a pickled instance.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from distill_ner.extraction.config import INPUT_EXAMPLE, ExtractionServing, signature  # noqa: F401  (this flavour's)
from distill_ner.serving import BACKEND_ENV, StagedModel, invalid_input


def to_rows(model_input: Any) -> list[tuple[str, dict[str, Any]]]:
    """(text, template) per row from a DataFrame, a list of dicts or one dict; templates are validated."""
    import pandas as pd

    from distill_ner.extraction.templates import validate_template

    if isinstance(model_input, pd.DataFrame):
        frame = model_input
    elif isinstance(model_input, (Mapping, Sequence)) and not isinstance(model_input, str):
        frame = pd.DataFrame([model_input] if isinstance(model_input, Mapping) else list(model_input))
    else:
        raise TypeError(
            f"expected a DataFrame or a list of {{'text', 'template'}} dicts, got {type(model_input).__name__}"
        )
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


class ExtractionModel(StagedModel):
    """Template filling with the distilled student (greedy), one generation per row."""

    def load_context(self, context: Any) -> None:
        from distill_ner.extraction.config import ExtractionPromptConfig
        from distill_ner.extraction.inference import Extractor

        config = dict(context.model_config or {})
        self.extractor = Extractor.load(
            self.model_ref(context),
            ExtractionPromptConfig(format=config.get("prompt_format", "1.5"), indent=config.get("indent", 4)),
            backend=os.environ.get(BACKEND_ENV) or config.get("backend", "auto"),
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
