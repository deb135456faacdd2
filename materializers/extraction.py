"""Materializer for the extraction recipe's ExtractionSet: examples as JSONL, the rest as JSON, an HTML view."""

from __future__ import annotations

from typing import Any

from distill_ner.extraction.data import ExtractionSet
from distill_ner.extraction.views import extraction_set_html
from materializers.records import _RecordMaterializer


class ExtractionSetMaterializer(_RecordMaterializer):
    ASSOCIATED_TYPES = (ExtractionSet,)
    ROWS_FIELD = "examples"

    def html(self, data: ExtractionSet) -> str:
        return extraction_set_html(data)

    def extract_metadata(self, data: ExtractionSet) -> dict[str, Any]:
        return {
            "examples": len(data.examples),
            "filled": sum(ex.filled is not None for ex in data.examples),
            "shortened": sum(ex.shortened for ex in data.examples),
            "failures": len(data.failures),
            "teacher": data.teacher,
            **{f"filtered.{k}": v for k, v in data.filter_counts.items()},
        }
