import tempfile
from pathlib import Path
from typing import Annotated

from zenml import ArtifactConfig, log_metadata, step
from zenml.client import Client
from zenml.config.cache_policy import CachePolicy
from zenml.enums import ArtifactType

from distill_ner import tracking
from distill_ner.config import StudentConfig, TrainConfig
from distill_ner.records import SFTDataset
from distill_ner.training import checkpoints, launch, trainer
from distill_ner.training import train as training
from materializers.model import StudentModelMaterializer
from steps._stack import experiment_tracker_name


@step(
    output_materializers=StudentModelMaterializer,  # the folder as ZenML stores a Path, plus a model card
    experiment_tracker=experiment_tracker_name(),
    cache_policy=CachePolicy(source_dependencies=[training, trainer, checkpoints, launch]),
)
def train(
    sft: SFTDataset, student: StudentConfig, config: TrainConfig
) -> Annotated[Path, ArtifactConfig(name="student_model", artifact_type=ArtifactType.MODEL)]:
    """Fine-tune the student (LoRA, QLoRA or full); returns the adapter (or model) folder with its tokenizer.

    Checkpoints go under the artifact store, keyed by the config and data, so a rerun after a crash
    resumes where the last one stopped (distill_ner.training.launch.run_training).
    """
    output_dir = Path(tempfile.mkdtemp(prefix="student_"))
    store = Client().active_stack.artifact_store.path
    with tracking.system_metrics():
        result = launch.run_training(sft, student.model, config, output_dir, artifact_store=store)
    log_metadata(metadata=dict(result.metrics), infer_artifact=True)
    return output_dir
