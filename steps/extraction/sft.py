from typing import Annotated

from zenml import step
from zenml.config.cache_policy import CachePolicy

from distill_ner import chat, tracking
from distill_ner.config import StudentConfig
from distill_ner.extraction import prompts, sft
from distill_ner.extraction.config import ExtractionPromptConfig, ExtractionSFTConfig
from distill_ner.extraction.data import ExtractionSet
from distill_ner.models import load_tokenizer
from distill_ner.records import SFTDataset
from materializers import SFTDatasetMaterializer
from steps._stack import experiment_tracker_name


@step(
    output_materializers=SFTDatasetMaterializer,
    experiment_tracker=experiment_tracker_name(),
    cache_policy=CachePolicy(source_dependencies=[sft, prompts, chat]),
)
def build_extraction_sft(
    extractions: ExtractionSet, config: ExtractionSFTConfig, prompt: ExtractionPromptConfig, student: StudentConfig
) -> Annotated[SFTDataset, "sft_dataset"]:
    """One conversation per example (NuExtract prompt -> filled JSON), loss on the filling only."""
    dataset = sft.build_extraction_sft(extractions, config, prompt, load_tokenizer(student.model))
    tracking.log_stage(metrics={f"sft.{k}": float(v) for k, v in dataset.stats.items()})
    return dataset
