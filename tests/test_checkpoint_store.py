"""Checkpoint mirroring through an artifact store's file API (here `zenml.io.fileio` on a local folder
standing for the bucket); tests/test_team_stack.py runs it against S3 with a killed training."""

from __future__ import annotations

import json
from pathlib import Path

from zenml.io import fileio

from distill_ner.training.checkpoint_store import CheckpointMirror
from distill_ner.training.train import FINGERPRINT_FILE


def fake_checkpoint(root: Path, step: int, complete: bool = True) -> Path:
    path = root / f"checkpoint-{step}"
    (path / "sub").mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(bytes([step]) * 100)
    (path / "sub" / "rng_state.pth").write_bytes(b"rng%d" % step)
    if complete:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_mirror_keeps_the_trainers_checkpoints_and_fetches_the_newest_complete(tmp_path: Path) -> None:
    local, remote = tmp_path / "local", tmp_path / "bucket" / "checkpoints" / "key"
    local.mkdir()
    (local / FINGERPRINT_FILE).write_text('{"train": {}}')
    mirror = CheckpointMirror(fileio, str(remote))
    assert mirror.remote_checkpoints() == [] and mirror.download_latest(tmp_path / "empty") is None

    for step in (2, 4, 6):
        fake_checkpoint(local, step)
        if step == 6:  # the Trainer's save_total_limit=2 removed the oldest before on_save
            import shutil

            shutil.rmtree(local / "checkpoint-2")
        mirror.upload(local)
    assert mirror.remote_checkpoints() == [4, 6]
    assert tree(remote / "checkpoint-6") == tree(local / "checkpoint-6")

    # a checkpoint whose upload was cut before its trainer_state.json never counts
    fake_checkpoint(remote, 8, complete=False)
    other = tmp_path / "other-machine"
    assert mirror.download_latest(other) == 6
    assert sorted(p.name for p in other.iterdir()) == ["checkpoint-6", FINGERPRINT_FILE]
    assert tree(other / "checkpoint-6") == tree(local / "checkpoint-6")

    mirror.clear()
    assert not remote.exists()
