from typing import Annotated

from zenml import log_metadata, step
from zenml.config.cache_policy import CachePolicy

from distill_ner import corpus
from distill_ner.extraction import filters, negatives
from distill_ner.extraction.config import ExtractionNegativesConfig
from distill_ner.extraction.data import ExtractionSet
from materializers.extraction import ExtractionSetMaterializer


@step(
    output_materializers=ExtractionSetMaterializer,
    cache_policy=CachePolicy(source_dependencies=[negatives, filters, corpus]),
)
def add_extraction_negatives(
    extractions: ExtractionSet, config: ExtractionNegativesConfig
) -> Annotated[ExtractionSet, "extractions_with_negatives"]:
    """Shorten about half of the texts and blank the values that are gone (no teacher call)."""
    data = negatives.add_negatives(extractions, config.fraction, config.min_drop, config.max_drop, config.seed)
    log_metadata(metadata={k: v for k, v in data.stats.items() if k.startswith("negatives.")}, infer_artifact=True)
    return data
