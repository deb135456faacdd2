"""`distill-ner predict`: entities from a logged or registered NER model.

    distill-ner predict --types person,location "Marie Curie was born in Warsaw."
    echo '{"text": "...", "types": ["person"]}' | distill-ner predict --model models:/distill-ner@production

prints one JSON line per text, in input order.
"""

from __future__ import annotations

import argparse
import json
import sys
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
        record = json.loads(line)
        types = record.get("types") or args.types
        if not isinstance(record.get("text"), str) or not types:
            raise SystemExit(f"predict: stdin line {n}: needs a string `text` and `types` (or --types)")
        rows.append({"text": record["text"], "types": types})
    return rows


def cmd_predict(args: argparse.Namespace) -> None:
    import mlflow.pyfunc

    from distill_ner.console import results_only_on_stdout, use_tracking_uri

    results_only_on_stdout()
    use_tracking_uri()
    rows = _prediction_rows(args)
    if not rows:
        return
    model = mlflow.pyfunc.load_model(args.model, model_config={"grounded": True} if args.grounded else None)
    for result in model.predict(rows):
        print(json.dumps(result, ensure_ascii=False), flush=True)


def add_commands(sub: Any) -> None:
    """Add the NER recipe's subcommands (`predict`) to `distill-ner` (called from distill_ner.cli.build_parser)."""
    p = sub.add_parser("predict", help="entities from a logged/registered model, texts as arguments or JSONL on stdin")
    p.add_argument("--model", default="models:/distill-ner@production", help="MLflow model URI")
    p.add_argument("--types", type=lambda v: [t.strip() for t in v.split(",") if t.strip()], default=None,
                   help="comma-separated entity types, e.g. person,location")
    p.add_argument("texts", nargs="*", help="texts; without any, JSONL {\"text\", \"types\"} is read from stdin")
    p.add_argument("--grounded", action="store_true", help="answers only with spans of the text (grounded decoding)")
    p.set_defaults(func=cmd_predict)

