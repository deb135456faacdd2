"""ZenML materializers for distill-ner's own artifact types (JSON/JSONL/parquet, never pickle)."""

from materializers.extraction import ExtractionSetMaterializer  # noqa: F401  (the extraction recipe's records)
from materializers.model import StudentModelMaterializer
from materializers.records import (
    AnnotationSetMaterializer,
    EvalReportMaterializer,
    PassageSetMaterializer,
    PromotionDecisionMaterializer,
    SFTDatasetMaterializer,
)

__all__ = [
    "AnnotationSetMaterializer",
    "EvalReportMaterializer",
    "PassageSetMaterializer",
    "PromotionDecisionMaterializer",
    "SFTDatasetMaterializer",
    "StudentModelMaterializer",
]
