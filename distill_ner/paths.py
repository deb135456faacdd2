"""Where the project's own files are: data, benchmarks and label maps resolve against the project root."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # the folder that holds the distill_ner package
DATA_DIR = PROJECT_ROOT / "data"


CACHE_ENV = "DISTILL_NER_CACHE"


def user_cache_dir() -> Path:
    """Where downloads shared by every checkout and working directory are kept (the GGUF converter):
    $DISTILL_NER_CACHE, else $XDG_CACHE_HOME/distill-ner, else ~/.cache/distill-ner."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "distill-ner"


LOCAL_PREFIXES = ("/", "./", "../", "~", ".cache/", "data/")


def looks_local(ref: str | Path, suffixes: tuple[str, ...] = ()) -> bool:
    """A model/data reference is a local path when it is written like one (a Path, a path prefix, one of
    `suffixes`) or exists; otherwise a name (hub id, registry name)."""
    if isinstance(ref, Path):
        return True
    return (
        ref.startswith(LOCAL_PREFIXES) or (bool(suffixes) and ref.endswith(suffixes)) or Path(ref).expanduser().exists()
    )


@contextmanager
def building(dest: str | Path) -> Iterator[None]:
    """Hold an exclusive lock (`<dest>.lock`, fcntl) while `dest` is checked and built, so that two processes
    that need the same cached folder (two runs, two test workers) build it once: the second waits, then finds
    it complete, instead of both writing the same `.partial` folder and one deleting what the other made."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.with_name(dest.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed, also by a killed process
        yield
