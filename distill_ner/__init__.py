"""distill-ner: distil open information extraction from a teacher LLM into a small student.

Pure functions and typed records; the ZenML steps in steps/ are thin wrappers over this package.
"""

import os

__version__ = "0.1.0"

# OpenMP threads that wait for each other spin by default (libgomp: 300,000 spins before sleeping). When
# another process takes one of the cores, the spinning thread burns the core its descheduled partner
# needs: CPU training ran 3-8x slower instead of 2x. A short spin keeps the idle speed and degrades about
# in proportion to the CPU left; passive waiting (OMP_WAIT_POLICY=PASSIVE) degrades gracefully too but
# cost two thirds of the idle speed (benchmarks/bench_cpu_contention.py). Read once, when torch loads its
# OpenMP runtime, so it is set here, before any torch import; an explicit OMP_WAIT_POLICY or
# GOMP_SPINCOUNT in the environment wins.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "10000"
