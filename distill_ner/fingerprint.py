"""Content fingerprints of the files a run reads, so ZenML's cache sees when data changes.

ZenML's cache key covers step code and parameters, not the files a parameter points at; the pipeline
passes these fingerprints to the steps that read such files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def fingerprint_paths(paths: Iterable[str | None]) -> str:
    """sha256 over the bytes of every file (folders walked in sorted order); non-paths hash by name."""
    digest = hashlib.sha256()
    for ref in paths:
        if ref is None:
            continue
        path = Path(ref).expanduser()
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        digest.update(ref.encode())
        for f in files:
            if f.is_file():
                digest.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
                with open(f, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(block)
    return digest.hexdigest()[:16]
