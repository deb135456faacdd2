"""OpenMP threads wait passively in every process that imports the package (set before torch loads its OpenMP
runtime), unless the environment says otherwise. Spinning waits made CPU training 3-8x slower with one core
taken by another process; benchmarks/bench_cpu_contention.py measures it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PROBE = (
    "import os, distill_ner, torch; "
    "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'), torch.get_num_threads() > 0)"
)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, "PASSIVE None True"),
        ({"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE None True"),
        ({"GOMP_SPINCOUNT": "300000"}, "None 300000 True"),
    ],
)
def test_passive_waiting_unless_the_environment_says_otherwise(given: dict[str, str], expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(given, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == expected
