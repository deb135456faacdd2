"""Reading JSONL files so that any bad line is reported as `file:line`: the one reader every stage uses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distill_ner.errors import InputError, MissingInputError


def iter_jsonl(path: str | Path, *, objects: bool = True) -> Iterator[tuple[str, Any]]:
    """(`file:line`, value) for each non-empty line. Bytes that are not UTF-8, invalid JSON, or (with
    `objects`) a value that is not a JSON object raise ValueError naming the file and line; a missing
    file raises FileNotFoundError."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingInputError(f"no such file: {path}")
    with path.open("rb") as f:  # decoded line by line, so a bad byte is reported with its line
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"{where}: not UTF-8 (byte {raw[exc.start : exc.start + 1]!r} at column {exc.start + 1}); "
                    "re-encode the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            if objects and not isinstance(value, dict):
                raise InputError(f"{where}: expected a JSON object per line, got {type(value).__name__}")
            yield where, value
