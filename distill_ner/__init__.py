"""distill-ner: distil open information extraction from a teacher LLM into a small student.

Pure functions and typed records; the ZenML steps in steps/ are thin wrappers over this package.
"""

import importlib
import importlib.util
import os
from types import ModuleType

__version__ = "0.1.0"


def import_submodule(package: str, name: str) -> ModuleType:
    """`package.name`, imported on first access as an attribute of `package` (a package's `__getattr__`).

    ZenML loads a step's cache source dependency, the module `distill_ner.corpus`, by its import path as the
    attribute `corpus` of `distill_ner`, which exists only once something imported the submodule: always in
    the process that built the pipeline, never in a fresh step process (a Kubeflow pod), whose step then fails
    before it starts."""
    if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
        return importlib.import_module(f"{package}.{name}")
    raise AttributeError(f"module {package!r} has no attribute {name!r}")


def __getattr__(name: str) -> ModuleType:
    return import_submodule(__name__, name)


# OpenMP threads that wait for each other spin by default. When another process takes one of the cores,
# the spinning thread burns the core its descheduled partner needs: the demo's LoRA training kept 0.28-0.47
# of its idle speed with a busy loop on one of 2 cores (spinning 300,000 or 10,000 times), 0.70-0.84 with
# passive waiting, which costs 15-25 % of the idle speed (benchmarks/bench_cpu_contention.py). Shared
# machines are the common case, so threads wait passively. Read once, when torch loads its OpenMP runtime,
# so it is set here, before any torch import; an explicit OMP_WAIT_POLICY or GOMP_SPINCOUNT in the
# environment wins (GOMP_SPINCOUNT=300000 for the fastest idle runs).
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
