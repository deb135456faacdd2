import shutil
import tempfile
from pathlib import Path
from typing import Annotated

from zenml import ArtifactConfig, log_metadata, step
from zenml.client import Client
from zenml.config.cache_policy import CachePolicy
from zenml.enums import ArtifactType

from distill_ner import tracking
from distill_ner.training import launch
from distill_ner.training import train as training
from distill_ner.config import StudentConfig, TrainConfig
from distill_ner.records import SFTDataset
from materializers.model import StudentModelMaterializer
from steps._stack import experiment_tracker_name


@step(
    output_materializers=StudentModelMaterializer,  # the folder as ZenML stores a Path, plus a model card
    experiment_tracker=experiment_tracker_name(),
    cache_policy=CachePolicy(source_dependencies=[training, launch]),
)
def train(
    sft: SFTDataset, student: StudentConfig, config: TrainConfig
) -> Annotated[Path, ArtifactConfig(name="student_model", artifact_type=ArtifactType.MODEL)]:
    """Fine-tune the student (LoRA, QLoRA or full); returns the adapter (or model) folder with its tokenizer.

    Checkpoints go under the artifact store, keyed by the config and data, so a rerun after a crash
    resumes where the last one stopped.
    """
    output_dir = Path(tempfile.mkdtemp(prefix="student_"))
    key = training.run_key(sft, student.model, config)
    store = Client().active_stack.artifact_store.path
    # a remote store (s3://, gs://) is not a folder Trainer can write; checkpoints then stay on this machine
    root = Path(store) if "://" not in store else Path.home() / ".cache" / "distill-ner"
    checkpoint_dir = root / "checkpoints" / key
    with tracking.system_metrics():
        if config.distributed != "none" and config.num_processes > 1:
            metrics = launch.train_distributed(sft, student.model, config, output_dir, checkpoint_dir=checkpoint_dir)["metrics"]
        else:
            metrics = training.train_student(sft, student.model, config, output_dir, checkpoint_dir=checkpoint_dir).metrics
    # the checkpoints only serve to resume this run; once it is done they are dead weight (GBs for a 7B)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    log_metadata(metadata=dict(metrics), infer_artifact=True)
    return output_dir
