"""`distill-ner` console command: set-up, MLflow UI, and using the production model."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

DEFAULT_STUDENT_DIR = ".cache/models/SmolLM2-135M-Instruct"
TINY_STUDENT_DIR = ".cache/models/tiny-random-llama"


def quiet_defaults() -> None:
    """No analytics or telemetry calls (they hang where traffic is dropped), no hub look-ups."""
    for key, value in {
        "ZENML_ANALYTICS_OPT_IN": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }.items():
        os.environ.setdefault(key, value)


def cmd_fetch_student(args: argparse.Namespace) -> None:
    from distill_ner import models

    if args.tiny:
        texts = []
        demo = Path("data/demo/corpus.jsonl")
        if demo.exists():
            import json

            texts = [json.loads(line)["text"] for line in demo.read_text().splitlines() if line.strip()]
        print(models.make_tiny_model(args.dest or TINY_STUDENT_DIR, texts))
    else:
        print(models.fetch_smollm2(args.dest or DEFAULT_STUDENT_DIR))


def cmd_stack(args: argparse.Namespace) -> None:
    from distill_ner.stack import ensure_stack

    print(ensure_stack(tracking_uri=args.tracking_uri))


def cmd_setup(args: argparse.Namespace) -> None:
    cmd_fetch_student(argparse.Namespace(tiny=False, dest=None))
    cmd_fetch_student(argparse.Namespace(tiny=True, dest=None))
    cmd_stack(argparse.Namespace(tracking_uri=args.tracking_uri))


def cmd_mlflow_uri(args: argparse.Namespace) -> None:
    from distill_ner.stack import tracking_uri_of_active_stack

    print(tracking_uri_of_active_stack())


def cmd_ui(args: argparse.Namespace) -> None:
    from distill_ner.stack import tracking_uri_of_active_stack

    uri = tracking_uri_of_active_stack()
    print(f"MLflow UI on http://127.0.0.1:{args.port} for {uri}", flush=True)
    sys.exit(
        subprocess.call(
            [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(args.port)]
        )
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distill-ner", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fetch-student", help="get the offline default student (SmolLM2-135M-Instruct) or the tiny test model")
    p.add_argument("--tiny", action="store_true", help="build the tiny random Llama used by tests and configs/smoke.yaml")
    p.add_argument("--dest", default=None)
    p.set_defaults(func=cmd_fetch_student)

    p = sub.add_parser("stack", help="register (once) and activate the ZenML stack with MLflow tracker and registry")
    p.add_argument("--tracking-uri", default=None, help="remote MLflow server; default: a local sqlite store")
    p.set_defaults(func=cmd_stack)

    p = sub.add_parser("setup", help="fetch-student (both) + stack: everything the demo needs")
    p.add_argument("--tracking-uri", default=None)
    p.set_defaults(func=cmd_setup)

    p = sub.add_parser("mlflow-uri", help="print the MLflow tracking URI of the active stack")
    p.set_defaults(func=cmd_mlflow_uri)

    p = sub.add_parser("ui", help="serve the MLflow UI of the active stack on 127.0.0.1")
    p.add_argument("--port", type=int, default=5055)
    p.set_defaults(func=cmd_ui)

    return parser


def main(argv: list[str] | None = None) -> None:
    quiet_defaults()
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
