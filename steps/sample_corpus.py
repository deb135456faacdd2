from typing import Annotated

from zenml import log_metadata, step
from zenml.config.cache_policy import CachePolicy

from distill_ner import corpus, run_checks
from distill_ner.config import CorpusConfig, StudentConfig
from distill_ner.models import count_tokens_fn
from distill_ner.records import PassageSet
from materializers import PassageSetMaterializer


@step(
    output_materializers=PassageSetMaterializer,
    cache_policy=CachePolicy(source_dependencies=[corpus]),
)
def sample_corpus(
    config: CorpusConfig, student: StudentConfig, data_fingerprint: str
) -> Annotated[PassageSet, "passages"]:
    """Cut the corpus into passages of at most `max_tokens` student tokens and sample them (seeded).

    `data_fingerprint` is the content hash of the local corpus files: it is what invalidates the cache.
    """
    passages = corpus.sample_passages(config, count_tokens_fn(student.model))
    log_metadata(metadata={"passages": len(passages.passages), **passages.stats}, infer_artifact=True)
    run_checks.require_passages(passages, config)
    return passages
