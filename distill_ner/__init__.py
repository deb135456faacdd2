"""distill-ner: distil open information extraction from a teacher LLM into a small student.

Pure functions and typed records; the ZenML steps in steps/ are thin wrappers over this package.
"""

import os

__version__ = "0.1.0"

# OpenMP threads that wait for each other spin by default. When another process takes one of the cores,
# the spinning thread burns the core its descheduled partner needs: the demo's LoRA training kept 0.28-0.47
# of its idle speed with a busy loop on one of 2 cores (spinning 300,000 or 10,000 times), 0.70-0.84 with
# passive waiting, which costs 15-25 % of the idle speed (benchmarks/bench_cpu_contention.py). Shared
# machines are the common case, so threads wait passively. Read once, when torch loads its OpenMP runtime,
# so it is set here, before any torch import; an explicit OMP_WAIT_POLICY or GOMP_SPINCOUNT in the
# environment wins (GOMP_SPINCOUNT=300000 for the fastest idle runs).
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
