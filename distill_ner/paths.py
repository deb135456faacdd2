"""Where the project's own files are: data, benchmarks and label maps resolve against the project root."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # the folder that holds the distill_ner package
DATA_DIR = PROJECT_ROOT / "data"
