"""One materializer per record type: the bulk list as JSONL (or parquet), the rest as JSON.

Each also writes a view a person wants to open in the dashboard and extracts counts as metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, ClassVar

from pydantic import BaseModel
from zenml.enums import ArtifactType, VisualizationType
from zenml.io import fileio
from zenml.materializers.base_materializer import BaseMaterializer

from distill_ner import views
from distill_ner.ner import views as ner_views
from distill_ner.records import (
    AnnotationSet,
    EvalReport,
    PassageSet,
    PromotionDecision,
    SFTDataset,
    SFTRow,
)


class _RecordMaterializer(BaseMaterializer):
    """Stores `ROWS_FIELD` as JSONL and every other field as meta.json."""

    SKIP_REGISTRATION: ClassVar[bool] = True
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.DATA
    ROWS_FIELD: ClassVar[str | None] = None

    # fields that describe how the data was made (requests sent, cache hits), not the data itself
    HASH_EXCLUDE: ClassVar[frozenset[str]] = frozenset()

    def compute_content_hash(self, data: BaseModel) -> str:
        """What ZenML's cache keys of downstream steps use instead of this artifact's id: a rerun that
        gives the same data reuses the steps after it."""
        return hashlib.sha256(data.model_dump_json(exclude=set(self.HASH_EXCLUDE)).encode()).hexdigest()

    def _path(self, name: str) -> str:
        return os.path.join(self.uri, name)

    def _write_text(self, name: str, text: str) -> str:
        path = self._path(name)
        with fileio.open(path, "w") as f:
            f.write(text)
        return path

    def _read_text(self, name: str) -> str:
        with fileio.open(self._path(name), "r") as f:
            return f.read()

    def save_rows(self, rows: list[Any]) -> None:
        self._write_text("rows.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    def load_rows(self) -> list[Any]:
        return [json.loads(line) for line in self._read_text("rows.jsonl").splitlines() if line]

    def save(self, data: BaseModel) -> None:
        dumped = data.model_dump(mode="json")
        if self.ROWS_FIELD:
            self.save_rows(dumped.pop(self.ROWS_FIELD))
        self._write_text("meta.json", json.dumps(dumped, ensure_ascii=False, indent=1))

    def load(self, data_type: type[BaseModel]) -> BaseModel:
        dumped = json.loads(self._read_text("meta.json"))
        if self.ROWS_FIELD:
            dumped[self.ROWS_FIELD] = self.load_rows()
        return data_type.model_validate(dumped)

    def html(self, data: Any) -> str:
        raise NotImplementedError

    def save_visualizations(self, data: Any) -> dict[str, VisualizationType]:
        return {self._write_text("view.html", self.html(data)): VisualizationType.HTML}


class PassageSetMaterializer(_RecordMaterializer):
    ASSOCIATED_TYPES = (PassageSet,)
    ROWS_FIELD = "passages"

    def html(self, data: PassageSet) -> str:
        return views.passages_html(data)

    def extract_metadata(self, data: PassageSet) -> dict[str, Any]:
        return {"passages": len(data.passages), **{f"stats.{k}": v for k, v in data.stats.items()}}


class AnnotationSetMaterializer(_RecordMaterializer):
    ASSOCIATED_TYPES = (AnnotationSet,)
    ROWS_FIELD = "passages"
    HASH_EXCLUDE = frozenset({"usage"})

    def html(self, data: AnnotationSet) -> str:
        return ner_views.annotations_html(data)

    def extract_metadata(self, data: AnnotationSet) -> dict[str, Any]:
        return {
            "passages": len(data.passages),
            "entities": sum(len(p.entities) for p in data.passages),
            "negatives": sum(len(p.negatives) for p in data.passages),
            "types": len(data.type_counts),
            "failures": len(data.failures),
            "teacher": data.teacher,
        }


class SFTDatasetMaterializer(_RecordMaterializer):
    """Conversations as JSONL; tokenised rows as parquet (list<int> columns)."""

    ASSOCIATED_TYPES = (SFTDataset,)
    ROWS_FIELD = "conversations"

    def save(self, data: SFTDataset) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        super().save(data.model_copy(update={"rows": []}))
        table = pa.table(
            {
                "id": [r.id for r in data.rows],
                "conversation_id": [r.conversation_id for r in data.rows],
                "input_ids": pa.array([r.input_ids for r in data.rows], type=pa.list_(pa.int32())),
                "labels": pa.array([r.labels for r in data.rows], type=pa.list_(pa.int32())),
            }
        )
        with fileio.open(self._path("rows.parquet"), "wb") as f:
            pq.write_table(table, f)

    def load(self, data_type: type[SFTDataset]) -> SFTDataset:
        import pyarrow.parquet as pq

        data = super().load(data_type)
        with fileio.open(self._path("rows.parquet"), "rb") as f:
            table = pq.read_table(f).to_pydict()
        rows = [
            SFTRow(id=i, conversation_id=c, input_ids=x, labels=y)
            for i, c, x, y in zip(table["id"], table["conversation_id"], table["input_ids"], table["labels"])
        ]
        return data.model_copy(update={"rows": rows})

    def html(self, data: SFTDataset) -> str:
        return views.sft_html(data)

    def extract_metadata(self, data: SFTDataset) -> dict[str, Any]:
        return {"conversations": len(data.conversations), "rows": len(data.rows), **data.stats}


class EvalReportMaterializer(_RecordMaterializer):
    ASSOCIATED_TYPES = (EvalReport,)
    ROWS_FIELD = "predictions"

    def html(self, data: EvalReport) -> str:
        # the NER recipe's report carries P/R/F1 and typed errors; any other recipe's is shown generically
        return ner_views.eval_html(data) if data.per_dataset else views.report_html(data)

    def save_visualizations(self, data: EvalReport) -> dict[str, VisualizationType]:
        from distill_ner.ner import zero_shot

        out = super().save_visualizations(data)
        if data.per_dataset:  # the results next to the published zero-shot numbers: table and chart
            out[self._write_text("zero_shot.md", zero_shot.comparison_markdown(data))] = VisualizationType.MARKDOWN
        if zero_shot.scores_the_suite(data):
            png = self._path("zero_shot.png")
            with fileio.open(png, "wb") as f:
                f.write(zero_shot.figure_png(zero_shot.comparison_figure(data)))
            out[png] = VisualizationType.IMAGE
        return out

    def extract_metadata(self, data: EvalReport) -> dict[str, Any]:
        meta: dict[str, Any] = {"predictions": len(data.predictions), "primary_metric": data.metric, "unit": data.unit}
        if data.per_dataset:
            meta["average_f1"] = data.average_f1
            for name, s in data.per_dataset.items():
                meta[f"{name}.f1"] = s.f1
        else:
            meta["average"] = data.average
            meta.update({f"{name}.primary": value for name, value in data.primary.items()})
        if data.grounded is not None:
            meta["grounded.average_f1"] = data.grounded.average_f1
        return meta


class PromotionDecisionMaterializer(_RecordMaterializer):
    ASSOCIATED_TYPES = (PromotionDecision,)

    def save_visualizations(self, data: PromotionDecision) -> dict[str, VisualizationType]:
        return {self._write_text("decision.md", views.decision_markdown(data)): VisualizationType.MARKDOWN}

    def extract_metadata(self, data: PromotionDecision) -> dict[str, Any]:
        return {"promoted": data.promoted, "version": data.version, "model_name": data.model_name}
