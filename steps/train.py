import tempfile
from pathlib import Path
from typing import Annotated

from zenml import ArtifactConfig, log_metadata, step
from zenml.client import Client
from zenml.config.cache_policy import CachePolicy
from zenml.enums import ArtifactType

from distill_ner import training
from distill_ner.config import StudentConfig, TrainConfig
from distill_ner.records import SFTDataset
from steps._stack import experiment_tracker_name


@step(experiment_tracker=experiment_tracker_name(), cache_policy=CachePolicy(source_dependencies=[training]))
def train(
    sft: SFTDataset, student: StudentConfig, config: TrainConfig
) -> Annotated[Path, ArtifactConfig(name="student_model", artifact_type=ArtifactType.MODEL)]:
    """Fine-tune the student (LoRA, QLoRA or full); returns the adapter (or model) folder with its tokenizer.

    Checkpoints go under the artifact store, keyed by the config and data, so a rerun after a crash
    resumes where the last one stopped.
    """
    output_dir = Path(tempfile.mkdtemp(prefix="student_"))
    key = training.run_key(sft, student.model, config)
    checkpoint_dir = Path(Client().active_stack.artifact_store.path) / "checkpoints" / key
    result = training.train_student(sft, student.model, config, output_dir, checkpoint_dir=checkpoint_dir)
    log_metadata(metadata={k: v for k, v in result.metrics.items()}, infer_artifact=True)
    return output_dir
