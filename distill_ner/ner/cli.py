"""`distill-ner predict`: entities from a logged or registered NER model.

    distill-ner predict --types person,location "Marie Curie was born in Warsaw."
    echo '{"text": "...", "types": ["person"]}' | distill-ner predict --model models:/distill-ner@production

prints one JSON line per text, in input order.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _prediction_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Texts from the command line with --types, or JSONL {"text", "types"} from stdin (--types as default)."""
    if args.texts:
        if not args.types:
            raise SystemExit("predict: --types is required with texts on the command line")
        return [{"text": text, "types": args.types} for text in args.texts]
    rows = []
    for n, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"predict: stdin line {n}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        types = (record.get("types") if isinstance(record, dict) else None) or args.types
        if not isinstance(record, dict) or not isinstance(record.get("text"), str) or not types:
            raise SystemExit(f"predict: stdin line {n}: needs a string `text` and `types` (or --types)")
        rows.append({"text": record["text"], "types": types})
    return rows


def _is_plain_model(ref: str) -> bool:
    """A .gguf file or an HF model/adapter folder (predicted with directly), not a logged MLflow model."""
    path = Path(ref)
    return (path.suffix == ".gguf" and path.is_file()) or (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


def cmd_predict(args: argparse.Namespace) -> None:
    import mlflow.pyfunc

    from distill_ner.console import results_only_on_stdout, use_tracking_uri

    results_only_on_stdout()
    rows = _prediction_rows(args)
    if not rows:
        return
    if _is_plain_model(args.model):
        from distill_ner.ner.inference import Predictor
        from distill_ner.ner.serving import parse_types, predict_rows

        backend = args.backend or ("llamacpp" if args.model.endswith(".gguf") else "transformers")
        predictor = Predictor(args.model, surface_forms=True, backend=backend, batch_size=16, grounded=args.grounded)
        results = predict_rows(predictor, [(row["text"], parse_types(row["types"])) for row in rows])
    else:
        use_tracking_uri()
        overrides = {**({"backend": args.backend} if args.backend else {}), **({"grounded": True} if args.grounded else {})}
        model = mlflow.pyfunc.load_model(args.model, model_config=overrides or None)
        results = model.predict(rows)
    for result in results:
        print(json.dumps(result, ensure_ascii=False), flush=True)


def add_commands(sub: Any) -> None:
    """Add the NER recipe's subcommands (`predict`, `benchmarks`) to `distill-ner` (called from distill_ner.cli.build_parser)."""
    p = sub.add_parser("predict", help="entities from a logged/registered model, texts as arguments or JSONL on stdin")
    p.add_argument("--model", default="models:/distill-ner@production", help="MLflow model URI, HF folder or .gguf file")
    p.add_argument("--types", type=lambda v: [t.strip() for t in v.split(",") if t.strip()], default=None,
                   help="comma-separated entity types, e.g. person,location")
    p.add_argument("texts", nargs="*", help="texts; without any, JSONL {\"text\", \"types\"} is read from stdin")
    p.add_argument("--backend", choices=("transformers", "vllm", "llamacpp"), default=None,
                   help="inference backend (default: the logged model's; llamacpp for a .gguf file)")
    p.add_argument("--grounded", action="store_true", help="answers only with spans of the text (grounded decoding)")
    p.set_defaults(func=cmd_predict)

    from distill_ner.ner.benchmark_fetch import add_benchmarks_parser

    add_benchmarks_parser(sub)

