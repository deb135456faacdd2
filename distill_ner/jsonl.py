"""Reading JSONL files so that any bad line is reported as `file:line`: the one reader every stage uses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def iter_jsonl(path: str | Path, *, objects: bool = True) -> Iterator[tuple[str, Any]]:
    """(`file:line`, value) for each non-empty line. Invalid JSON, or (with `objects`) a value that is not
    a JSON object, raises ValueError naming the file and line; a missing file raises FileNotFoundError."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            if objects and not isinstance(value, dict):
                raise ValueError(f"{where}: expected a JSON object per line, got {type(value).__name__}")
            yield where, value
