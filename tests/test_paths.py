"""Cached folders built once across processes (distill_ner.paths.building)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 6

# Each child imports first, then for each round waits for the file `go<i>`, so that both build the same
# folder at the same moment, checks the folder it got back, and says so with `done<i>-<child>`.
BUILD = """
import sys, time
from pathlib import Path
import torch, transformers  # noqa: F401  (before the barrier: the race is in the build, not the imports)
from transformers import AutoTokenizer
from distill_ner.models import make_tiny_model
root, child, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(rounds):
    while not (root / f"go{i}").exists():
        time.sleep(0.001)
    dest = make_tiny_model(root / f"tiny{i}", ["Marie Curie was born in Warsaw."] * 20)
    AutoTokenizer.from_pretrained(dest)  # the folder this process got back is complete
    (root / f"done{i}-{child}").touch()
"""


def test_two_processes_build_one_cached_model(tmp_path: Path):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BUILD, str(tmp_path), str(child), str(ROUNDS)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for child in range(2)
    ]
    try:
        for i in range(ROUNDS):
            (tmp_path / f"go{i}").touch()
            deadline = time.monotonic() + 300
            while not all((tmp_path / f"done{i}-{c}").exists() for c in range(2)):
                assert all(p.poll() is None for p in procs), f"round {i}: a builder failed: " + "".join(
                    p.communicate()[1][-2000:] for p in procs if p.poll() is not None
                )
                assert time.monotonic() < deadline, f"round {i} did not finish"
                time.sleep(0.01)
            dest = tmp_path / f"tiny{i}"
            assert (dest / "config.json").is_file() and not dest.with_name(dest.name + ".partial").exists()
    finally:
        for p in procs:
            p.kill()
            p.communicate()
