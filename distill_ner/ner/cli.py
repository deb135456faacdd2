"""`distill-ner predict`: entities from a logged or registered NER model.

    distill-ner predict --types person,location "Marie Curie was born in Warsaw."
    echo '{"text": "...", "types": ["person"]}' | distill-ner predict --model models:/distill-ner@production

prints one JSON line per text, in input order: `{"text", "entities": [{"text", "type", "start", "end",
"score"}, ...]}` (grounded decoding; `--free`, `--grouped`, `--threshold` change that).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from distill_ner.backends import BACKENDS


def _stdin_rows(default_types: list[str] | None) -> Iterator[dict[str, Any]]:
    """JSONL {"text", "types"} from stdin, one row as each line arrives (--types where a line has none)."""
    for n, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"predict: stdin line {n}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        types = record.get("types") if isinstance(record, dict) else None
        types = types or default_types
        if not isinstance(record, dict) or not isinstance(record.get("text"), str) or not types:
            raise SystemExit(f"predict: stdin line {n}: needs a string `text` and `types` (or --types)")
        yield {"text": record["text"], "types": types}


def _is_plain_model(ref: str) -> bool:
    """A .gguf file or an HF model/adapter folder (predicted with directly), not a logged MLflow model."""
    path = Path(ref)
    return (
        (path.suffix == ".gguf" and path.is_file())
        or (path / "config.json").is_file()
        or (path / "adapter_config.json").is_file()
    )


class _PlainModel:
    """A .gguf file or HF folder with the logged pyfunc's call shape (rows and params in, one result per row)."""

    def __init__(self, ref: str, backend: str | None) -> None:
        from distill_ner.ner.config import NERServing
        from distill_ner.ner.inference import Predictor

        self.settings = NERServing()
        self.predictor = Predictor(ref, surface_forms=True, backend=backend or "auto", batch_size=16)

    def predict(self, rows: list[dict[str, Any]], params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        from distill_ner.ner.serving import predict_rows, request_options, to_rows
        from distill_ner.serving import invalid_input

        try:
            parsed = to_rows(rows, self.settings)
            output, grounded, threshold = request_options(params, self.settings)
        except (TypeError, ValueError) as exc:
            raise invalid_input(exc) from None
        return predict_rows(self.predictor, parsed, output=output, grounded=grounded, threshold=threshold)


def cmd_predict(args: argparse.Namespace) -> None:
    # the arguments first: a usage error must not wait for MLflow and the model to load
    if args.texts and not args.types:
        raise SystemExit("predict: --types is required with texts on the command line, e.g. --types person,location")
    if not args.model.startswith(("models:/", "runs:/")) and "://" not in args.model and not Path(args.model).exists():
        raise SystemExit(
            f"predict: --model {args.model}: no such file or folder "
            "(give a .gguf file, a model folder, a logged model folder or models:/NAME@ALIAS)"
        )
    if not args.texts and sys.stdin.isatty():
        print('predict: reading JSONL {"text", "types"} lines from stdin (Ctrl-D ends)', file=sys.stderr)
    import mlflow.pyfunc

    from distill_ner.console import check_model, results_only_on_stdout, use_tracking_uri

    results_only_on_stdout()
    if _is_plain_model(args.model):
        model: Any = _PlainModel(args.model, args.backend)
    else:
        if args.model.startswith(("models:/", "runs:/")):
            use_tracking_uri()
            check_model(args.model)
        # once: every row below goes through this loaded model
        model = mlflow.pyfunc.load_model(args.model, model_config={"backend": args.backend} if args.backend else None)
    params = {
        "output": "grouped" if args.grouped else "spans",
        "decoding": "free" if args.free else "grounded",
        "threshold": args.threshold,
    }
    if args.texts:
        batches: Iterable[list[dict[str, Any]]] = [[{"text": text, "types": args.types} for text in args.texts]]
    else:
        batches = ([row] for row in _stdin_rows(args.types))
    from mlflow.exceptions import MlflowException

    for rows in batches:
        try:
            results = model.predict(rows, params=params)
        except MlflowException as exc:  # a bad row (distill_ner.serving.invalid_input): its message says which
            if exc.error_code != "INVALID_PARAMETER_VALUE":
                raise
            raise SystemExit(f"predict: {exc.message}") from None
        for result in results:
            print(json.dumps(result, ensure_ascii=False), flush=True)


def add_commands(sub: Any) -> None:
    """Add the NER recipe's subcommands (`predict`, `benchmarks`) to `distill-ner` (called from distill_ner.cli.build_parser)."""
    p = sub.add_parser("predict", help="entities from a logged/registered model, texts as arguments or JSONL on stdin")
    p.add_argument(
        "--model", default="models:/distill-ner@production", help="MLflow model URI, HF folder or .gguf file"
    )
    p.add_argument(
        "--types",
        type=lambda v: [t.strip() for t in v.split(",") if t.strip()],
        default=None,
        help="comma-separated entity types, e.g. person,location",
    )
    p.add_argument("texts", nargs="*", help='texts; without any, JSONL {"text", "types"} is read from stdin')
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="inference backend (default: the logged model's; auto for a folder or .gguf file: llama.cpp on a CPU where "
        "llama-cpp-python is installed)",
    )
    p.add_argument(
        "--free",
        action="store_true",
        help="free decoding (UniNER's): answers may hold strings that are not in the text",
    )
    p.add_argument(
        "--grouped", action="store_true", help='UniNER\'s shape {"entities": {type: [strings]}} instead of mentions'
    )
    p.add_argument("--threshold", type=float, default=0.0, help="leave out mentions scored below this (0-1)")
    p.set_defaults(func=cmd_predict)

    from distill_ner.ner.benchmark_fetch import add_benchmarks_parser

    add_benchmarks_parser(sub)
