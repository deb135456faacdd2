"""Where the project's own files are: data, benchmarks and label maps resolve against the project root."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # the folder that holds the distill_ner package
DATA_DIR = PROJECT_ROOT / "data"


LOCAL_PREFIXES = ("/", "./", "../", "~", ".cache/", "data/")


def looks_local(ref: str | Path, suffixes: tuple[str, ...] = ()) -> bool:
    """A model/data reference is a local path when it is written like one (a Path, a path prefix, one of
    `suffixes`) or exists; otherwise a name (hub id, registry name)."""
    if isinstance(ref, Path):
        return True
    return (
        ref.startswith(LOCAL_PREFIXES) or (bool(suffixes) and ref.endswith(suffixes)) or Path(ref).expanduser().exists()
    )
