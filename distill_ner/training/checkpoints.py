"""Checkpoints of a training run: the fingerprint that must match for a checkpoint to be resumed, the run
key that names its folder, where that folder lives, and the newest complete checkpoint in it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distill_ner.config import TrainConfig
from distill_ner.paths import looks_local
from distill_ner.records import SFTDataset, SFTRow

_NOT_IN_FINGERPRINT = {"checkpoint_every", "resume", "merge_adapter", "logging_steps", "supervised_logits_only"}
FINGERPRINT_FILE = "run_fingerprint.json"


def data_hash(rows: Sequence[SFTRow]) -> str:
    """sha256 over the token ids and labels of the rows, in order (order decides the batches)."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps([row.input_ids, row.labels], separators=(",", ":")).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def dev_hash(sft: SFTDataset) -> str:
    """sha256 over the dev split (rows and questions): it decides which checkpoint is the best."""
    digest = hashlib.sha256(data_hash(sft.dev_rows).encode())
    for query in sft.dev_queries:
        digest.update(json.dumps([query.group, query.prompt_ids, query.reference], separators=(",", ":")).encode())
    digest.update(sft.dev_metric.encode())
    return digest.hexdigest()


def last_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest complete Trainer checkpoint. trainer_state.json is written last, so a folder without it
    was cut off while saving and is skipped."""
    best: tuple[int, Path] | None = None
    if not checkpoint_dir.is_dir():
        return None
    for path in checkpoint_dir.glob("checkpoint-*"):
        step = path.name.split("-", 1)[1]
        if step.isdigit() and (path / "trainer_state.json").is_file():
            if best is None or int(step) > best[0]:
                best = (int(step), path)
    return best[1] if best else None


def run_fingerprint(
    config: TrainConfig, student: str, rows_hash: str, world_size: int, dev: str = ""
) -> dict[str, Any]:
    """What must be identical for a checkpoint to be resumed (`dev`: dev_hash, where the run evaluates)."""
    train = {k: v for k, v in config.model_dump().items() if k not in _NOT_IN_FINGERPRINT}
    return {
        "train": train,
        "student": student,
        "data_hash": rows_hash,
        "world_size": world_size,
        **({"dev_hash": dev} if dev else {}),
    }


def run_key(sft: SFTDataset, student: str, config: TrainConfig) -> str:
    """A short stable key for a run (config, student, data, process count): name its checkpoint folder with it.

    Two runs with the same key are the same optimisation, so one may resume the other's checkpoints.
    """
    world_size = config.num_processes if config.distributed != "none" else 1
    dev = dev_hash(sft) if config.eval_every else ""
    fingerprint = run_fingerprint(config, student_reference(student), data_hash(sft.rows), world_size, dev)
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


def student_reference(student: str) -> str:
    """The reference recorded in the adapter: a hub id or an MLflow URI as given, a local path made absolute."""
    if "://" in student or student.startswith(("models:/", "runs:/")):
        return student
    if looks_local(student):
        return str(Path(student).expanduser().resolve())
    return student


def checkpoint_dir_for(sft: SFTDataset, student: str, config: TrainConfig, artifact_store: str) -> Path:
    """The run's checkpoint folder under the artifact store, keyed by config and data, so a rerun after a crash
    resumes where the last one stopped. A remote store (s3://, gs://) is not a folder Trainer can write:
    checkpoints then stay on this machine."""
    root = Path(artifact_store) if "://" not in artifact_store else Path.home() / ".cache" / "distill-ner"
    return root / "checkpoints" / run_key(sft, student, config)
