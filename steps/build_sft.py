from typing import Annotated

import mlflow
from zenml import step
from zenml.config.cache_policy import CachePolicy

from distill_ner import tracking, views
from distill_ner.config import StudentConfig
from distill_ner.models import load_tokenizer
from distill_ner.ner import conversations, supervised
from distill_ner.ner.config import SFTConfig
from distill_ner.records import AnnotationSet, SFTDataset
from materializers import SFTDatasetMaterializer
from steps._stack import experiment_tracker_name


@step(
    output_materializers=SFTDatasetMaterializer,
    experiment_tracker=experiment_tracker_name(),
    cache_policy=CachePolicy(source_dependencies=[conversations, supervised]),
)
def build_sft(
    annotations: AnnotationSet, config: SFTConfig, student: StudentConfig, supervised_fingerprint: str
) -> Annotated[SFTDataset, "sft_dataset"]:
    """One conversation per passage (one question per type), mixed with human-annotated datasets,
    rendered through the student's chat template with loss on assistant turns only."""
    mixed = [(source.name, supervised.load_supervised(source)) for source in config.supervised]
    dataset = conversations.build_sft_dataset(annotations, config, load_tokenizer(student.model), mixed)
    if mlflow.active_run():
        tracking.log_stage(
            {
                "sft.negatives_position": config.negatives_position,
                "sft.train_read_reply": config.train_read_reply,
                "sft.dev_fraction": config.dev_fraction,
            },
            {f"sft.{k}": float(v) for k, v in dataset.stats.items()},
        )
        tracking.log_dataset([c.model_dump() for c in dataset.conversations], "sft_set", "training")
        tracking.log_text_view(views.sft_html(dataset), "views/sft_dataset.html")
    return dataset
