"""Multi-process training (DDP or FSDP) through `accelerate launch`, from inside one ZenML step.

ZenML's `run_with_accelerate` passes step inputs as command-line strings, which cannot carry an SFT
dataset artifact; so the step writes its inputs as JSON into a work folder, launches this module on
N processes, and reads back the result that rank 0 writes. Trainer does the DDP/FSDP part itself.

Without CUDA the ranks are started by torchrun and talk over gloo: `accelerate launch --cpu` starts a
single process unless MPI is installed, which would silently train on one rank.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from distill_ner.config import TrainConfig
from distill_ner.records import SFTDataset
from distill_ner.training.train import TrainResult


def launch_command(config: TrainConfig, work: Path, *, cpu: bool = False) -> list[str]:
    target = ["-m", "distill_ner.training.launch", "--work", str(work)]
    if cpu:
        # --standalone: a private rendezvous on a free local port
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(config.num_processes),
            *target,
        ]
    # FSDP wrapping and precision come from TrainingArguments (training.py), not from launcher flags,
    # so the two cannot disagree
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(config.num_processes),
        "--multi_gpu",
        "--num_machines",
        "1",
        "--dynamo_backend",
        "no",
        *target,
    ]


def train_distributed(
    sft: SFTDataset,
    student: str,
    config: TrainConfig,
    output_dir: Path,
    *,
    checkpoint_dir: Path | None = None,
    cpu: bool | None = None,
) -> TrainResult:
    """Run `training.train_student` on `config.num_processes` processes; returns rank 0's TrainResult.

    `cpu`: ranks on CPU processes (gloo) instead of GPUs; default: when CUDA is absent.
    """
    import mlflow

    with tempfile.TemporaryDirectory(prefix="distill_launch_") as tmp:
        work = Path(tmp)
        (work / "sft.json").write_text(sft.model_dump_json())
        (work / "job.json").write_text(
            json.dumps(
                {
                    "student": student,
                    "config": config.model_dump(mode="json"),
                    "output_dir": str(output_dir),
                    "checkpoint_dir": str(checkpoint_dir) if checkpoint_dir else None,
                }
            )
        )
        env = dict(os.environ)
        run = mlflow.active_run()
        if run is not None:
            # rank 0 logs into the step's MLflow run
            env["MLFLOW_RUN_ID"] = run.info.run_id
            env["MLFLOW_TRACKING_URI"] = mlflow.get_tracking_uri()
        if cpu is None:
            import torch

            cpu = not torch.cuda.is_available()
        subprocess.run(launch_command(config, work, cpu=cpu), check=True, env=env)
        return TrainResult.model_validate_json((work / "result.json").read_text())


def run_training(
    sft: SFTDataset, student: str, config: TrainConfig, output_dir: Path, *, artifact_store: str, store: Any = None
) -> TrainResult:
    """Train in this process, or on `config.num_processes` processes when `config.distributed` asks for it.

    Checkpoints go under the artifact store, keyed by the config and data (checkpoints.checkpoint_dir_for),
    so a rerun after a crash resumes where the last one stopped; once the run is done they only cost disk
    (GBs for a 7B) and are removed. A remote store (s3://, gs://; `store` is the ZenML artifact store that
    reads and writes it) is no folder Trainer can write: single-process checkpoints are then mirrored into
    it, so a run killed on one machine resumes on another (checkpoint_store.train_resumable).
    """
    from distill_ner.training.checkpoints import checkpoint_dir_for
    from distill_ner.training.train import train_student

    distributed = config.distributed != "none" and config.num_processes > 1
    if "://" in artifact_store and store is not None and not distributed:
        from distill_ner.training.checkpoint_store import train_resumable

        return train_resumable(sft, student, config, output_dir, store, artifact_store)
    # accelerate's ranks are other processes: their checkpoints stay on this machine's disk
    checkpoint_dir = checkpoint_dir_for(sft, student, config, artifact_store)
    if distributed:
        result = train_distributed(sft, student, config, output_dir, checkpoint_dir=checkpoint_dir)
    else:
        result = train_student(sft, student, config, output_dir, checkpoint_dir=checkpoint_dir)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="one rank of a distributed distill-ner training job")
    parser.add_argument("--work", required=True, type=Path)
    args = parser.parse_args(argv)

    from distill_ner.training import train as training

    job = json.loads((args.work / "job.json").read_text())
    sft = SFTDataset.model_validate_json((args.work / "sft.json").read_text())
    config = TrainConfig.model_validate(job["config"])
    rank = int(os.environ.get("RANK", "0"))
    # rank 0 logs into the step's run named by MLFLOW_RUN_ID (train_student never starts or ends a run)
    log = rank == 0 and bool(os.environ.get("MLFLOW_RUN_ID"))
    result = training.train_student(
        sft,
        job["student"],
        config,
        Path(job["output_dir"]),
        checkpoint_dir=Path(job["checkpoint_dir"]) if job["checkpoint_dir"] else None,
        log_to_mlflow=log,
    )
    if rank == 0:
        (args.work / "result.json").write_text(result.model_dump_json())


if __name__ == "__main__":
    main()
