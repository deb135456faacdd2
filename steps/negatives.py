from typing import Annotated

from zenml import step
from zenml.config.cache_policy import CachePolicy

from distill_ner.ner import negatives
from distill_ner.ner.config import NegativesConfig
from distill_ner.records import AnnotationSet
from materializers import AnnotationSetMaterializer


@step(output_materializers=AnnotationSetMaterializer, cache_policy=CachePolicy(source_dependencies=[negatives]))
def add_negatives(
    annotations: AnnotationSet, config: NegativesConfig
) -> Annotated[AnnotationSet, "annotations_with_negatives"]:
    """Add to each passage types absent from it, sampled by their frequency over the dataset."""
    return negatives.add_negatives(annotations, config)
