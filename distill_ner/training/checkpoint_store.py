"""Training checkpoints kept in the artifact store, so that a train step killed on one machine (a preempted
pod) resumes on another from its last checkpoint.

The Trainer writes checkpoints to a local folder, as it must; each one is mirrored, once saved, to
`<artifact store>/checkpoints/<run key>/` (the key names config + student + data, training.run_key),
and the newest complete mirrored checkpoint is fetched before training starts. A checkpoint counts as
complete remotely once its `trainer_state.json` is there: it is uploaded last, exactly as the Trainer
writes it last locally (training.last_checkpoint relies on the same rule).

`store` is anything with the file API of a ZenML artifact store (`open`, `exists`, `isdir`, `listdir`,
`makedirs`, `remove`, `rmtree`): the active stack's artifact store in a step, `zenml.io.fileio` for
a local folder.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distill_ner.config import TrainConfig
from distill_ner.records import SFTDataset
from distill_ner.training import train as training
from distill_ner.training.checkpoints import run_key

logger = logging.getLogger(__name__)

COMPLETE_MARK = "trainer_state.json"  # written last by the Trainer, uploaded last here
_CHUNK = 8 << 20


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts))


def _checkpoint_step(name: str) -> int | None:
    prefix = "checkpoint-"
    return int(name[len(prefix) :]) if name.startswith(prefix) and name[len(prefix) :].isdigit() else None


class CheckpointMirror:
    """The remote copy of one run's checkpoint folder."""

    def __init__(self, store: Any, remote_dir: str) -> None:
        self.store = store
        self.remote_dir = remote_dir.rstrip("/")

    # ------------------------------------------------------------------------------- remote → local

    def remote_checkpoints(self) -> list[int]:
        """Steps of the complete checkpoints in the store, oldest first."""
        if not self.store.exists(self.remote_dir):
            return []
        steps = []
        for name in self.store.listdir(self.remote_dir):
            step = _checkpoint_step(Path(str(name)).name)
            if step is not None and self.store.exists(_join(self.remote_dir, f"checkpoint-{step}", COMPLETE_MARK)):
                steps.append(step)
        return sorted(steps)

    def download_latest(self, local_dir: Path) -> int | None:
        """Fetch the fingerprint and the newest complete checkpoint into `local_dir`; returns its step."""
        steps = self.remote_checkpoints()
        if not steps:
            return None
        local_dir.mkdir(parents=True, exist_ok=True)
        fingerprint = _join(self.remote_dir, training.FINGERPRINT_FILE)
        if self.store.exists(fingerprint):
            self._get(fingerprint, local_dir / training.FINGERPRINT_FILE)
        name = f"checkpoint-{steps[-1]}"
        target = local_dir / name
        partial = local_dir / (name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        self._get_tree(_join(self.remote_dir, name), partial)
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)  # complete locally only once every file is there
        logger.info("fetched %s from %s", name, self.remote_dir)
        return steps[-1]

    def _get(self, remote: str, local: Path) -> None:
        with self.store.open(remote, "rb") as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)

    def _get_tree(self, remote: str, local: Path) -> None:
        local.mkdir(parents=True, exist_ok=True)
        for entry in self.store.listdir(remote):
            name = Path(str(entry)).name
            path = _join(remote, name)
            if self.store.isdir(path):
                self._get_tree(path, local / name)
            else:
                self._get(path, local / name)

    # ------------------------------------------------------------------------------- local → remote

    def upload(self, local_dir: Path) -> None:
        """Mirror the newest local checkpoint (and the fingerprint), then drop remote ones no longer local."""
        newest = training.last_checkpoint(local_dir)
        if newest is None:
            return
        self.store.makedirs(self.remote_dir)
        fingerprint = local_dir / training.FINGERPRINT_FILE
        if fingerprint.is_file():
            self._put(fingerprint, _join(self.remote_dir, training.FINGERPRINT_FILE))
        remote = _join(self.remote_dir, newest.name)
        files = sorted(p for p in newest.rglob("*") if p.is_file())
        for path in sorted(files, key=lambda p: p.name == COMPLETE_MARK):  # the mark goes last
            dest = _join(remote, path.relative_to(newest).as_posix())
            self.store.makedirs(dest.rsplit("/", 1)[0])
            self._put(path, dest)
        kept = {p.name for p in local_dir.glob("checkpoint-*")}
        for name in self.store.listdir(self.remote_dir):
            name = Path(str(name)).name
            if _checkpoint_step(name) is not None and name not in kept:
                self.store.rmtree(_join(self.remote_dir, name))

    def _put(self, local: Path, remote: str) -> None:
        with open(local, "rb") as src, self.store.open(remote, "wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)

    def clear(self) -> None:
        if self.store.exists(self.remote_dir):
            self.store.rmtree(self.remote_dir)


def _mirror_callback(mirror: CheckpointMirror, local_dir: Path) -> Any:
    from transformers import TrainerCallback

    class MirrorCheckpoints(TrainerCallback):
        # on_save runs after the Trainer has written the checkpoint and rotated the old ones
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                mirror.upload(local_dir)

    return MirrorCheckpoints()


def train_resumable(
    sft: SFTDataset,
    student: str,
    config: TrainConfig,
    output_dir: Path,
    store: Any,
    store_root: str,
    *,
    log_to_mlflow: bool = True,
    callbacks: Sequence[Any] | None = None,
) -> training.TrainResult:
    """training.train_student with its checkpoints mirrored under `store_root/checkpoints/<run key>`.

    Resumes from the newest mirrored checkpoint (config.resume), wherever it was written; removes the
    mirror once the run has finished (it only serves to resume this run).
    """
    key = run_key(sft, student, config)
    mirror = CheckpointMirror(store, _join(store_root, "checkpoints", key))
    if not config.resume:
        mirror.clear()
    local_dir = Path(tempfile.mkdtemp(prefix="distill-ner-ckpt-"))
    try:
        if config.resume:
            mirror.download_latest(local_dir)
        extra = [_mirror_callback(mirror, local_dir)] if config.checkpoint_every > 0 else []
        result = training.train_student(
            sft,
            student,
            config,
            output_dir,
            checkpoint_dir=local_dir,
            log_to_mlflow=log_to_mlflow,
            callbacks=[*extra, *(callbacks or [])],
        )
    finally:
        shutil.rmtree(local_dir, ignore_errors=True)
    mirror.clear()
    return result
