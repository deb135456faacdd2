import shutil
from pathlib import Path
from typing import Annotated

from zenml import ArtifactConfig, log_metadata, step
from zenml.client import Client
from zenml.config.cache_policy import CachePolicy
from zenml.enums import ArtifactType

from distill_ner import tracking
from distill_ner.config import StudentConfig, TrainConfig
from distill_ner.records import SFTDataset
from distill_ner.training import checkpoint_store, checkpoints, launch
from distill_ner.training import train as training
from materializers.model import StudentModelMaterializer, work_folder
from steps._stack import experiment_tracker_name


@step(
    # the folder as ZenML stores a Path, plus a model card; the working copy is removed once stored
    output_materializers=StudentModelMaterializer,
    experiment_tracker=experiment_tracker_name(),
    # the trainer module by name: importing it loads torch and transformers, seconds that every `zenml pipeline run`
    # (a config error included) would pay before its first step
    cache_policy=CachePolicy(
        source_dependencies=[training, "distill_ner.training.trainer", checkpoints, checkpoint_store, launch]
    ),
)
def train(
    sft: SFTDataset, student: StudentConfig, config: TrainConfig
) -> Annotated[Path, ArtifactConfig(name="student_model", artifact_type=ArtifactType.MODEL)]:
    """Fine-tune the student (LoRA, QLoRA or full); returns the adapter (or model) folder with its tokenizer.

    Checkpoints go under the artifact store (mirrored there when it is remote), keyed by the config and
    data, so a rerun after a crash resumes where the last one stopped, on this machine or another
    (distill_ner.training.launch.run_training).
    """
    output_dir = work_folder()
    store = Client().active_stack.artifact_store
    try:
        with tracking.system_metrics():
            result = launch.run_training(sft, student.model, config, output_dir, artifact_store=store.path, store=store)
    except BaseException:
        shutil.rmtree(output_dir, ignore_errors=True)  # the checkpoints keep what a rerun resumes from
        raise
    log_metadata(metadata=dict(result.metrics), infer_artifact=True)
    # so that a later run taking this step from the cache still shows these keys on its MLflow run
    tracking.remember_logged(result.logged_params, result.logged_metrics)
    tracking.log_dev_curve(result.dev_history, result.best_step)
    tracking.replay_cached_steps()
    return output_dir
