"""`distill-ner extract`: fill a template from a text file with a trained extraction student.

    distill-ner extract --model models:/distill-extract@production --template t.json file.txt

prints the filled JSON. The text's whitespace is collapsed as the corpus stage does for training passages
(the student never saw anything else). --prompt-format / --indent must match the training config
(`prompt:` in configs/extract_*.yaml; the defaults are the same). --grounded holds the answer to the template's
JSON with every value a span of the text (grounded decoding).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from distill_ner.backends import BACKENDS


def _indent(value: str) -> int | None:
    return None if value.lower() in ("none", "null", "compact") else int(value)


def _read_json(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"{what} {path}: {exc}") from None


def cmd_extract(args: argparse.Namespace) -> None:
    from distill_ner.console import check_model, results_only_on_stdout, use_tracking_uri
    from distill_ner.corpus import normalize_whitespace
    from distill_ner.extraction.config import ExtractionPromptConfig
    from distill_ner.extraction.inference import Extractor
    from distill_ner.extraction.prompts import dump_json
    from distill_ner.extraction.templates import TemplateError, validate_template

    results_only_on_stdout()
    template = _read_json(args.template, "--template")
    try:
        validate_template(template)
    except TemplateError as exc:
        raise SystemExit(f"--template {args.template}: {exc}") from None
    examples = [_read_json(e, "--example") for e in args.example]
    raw_text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    prompt = ExtractionPromptConfig(format=args.prompt_format, indent=args.indent)
    if args.model.startswith(("models:/", "runs:/")):
        use_tracking_uri()  # the registry of the active stack, as `distill-ner predict` uses
        check_model(args.model)
    extractor = Extractor.load(
        args.model, prompt, backend=args.backend, batch_size=1, max_new_tokens=args.max_new_tokens
    )
    [filling] = extractor.fill([(template, normalize_whitespace(raw_text))], examples=examples, grounded=args.grounded)
    if filling.value is None:
        print(f"the model's answer holds no JSON object ({filling.error}); it wrote:\n{filling.raw}", file=sys.stderr)
        raise SystemExit(1)
    print(dump_json(filling.value, 2))


def add_commands(sub: Any) -> None:
    """Add the extraction recipe's subcommands (`extract`) to `distill-ner` (called from distill_ner.cli.build_parser)."""
    p = sub.add_parser(
        "extract", help="fill a JSON template from a text file with an extraction student; prints the JSON"
    )
    p.add_argument(
        "--model", default="models:/distill-extract@production", help="models:/name@alias, runs:/..., or a local folder"
    )
    p.add_argument("--template", required=True, help='JSON template file ("" / [] / [{...}] leaves)')
    p.add_argument(
        "--example", action="append", default=[], help="filled example JSON (prompt format 1.0 only; repeatable)"
    )
    p.add_argument("--prompt-format", choices=["1.5", "1.0"], default="1.5")
    p.add_argument("--indent", type=_indent, default=4, help="JSON indent used in training (an int, or 'none')")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="inference backend (auto: llama.cpp on a CPU where llama-cpp-python is installed, else transformers)",
    )
    p.add_argument(
        "--grounded",
        action="store_true",
        help="grounded decoding: the template's JSON exactly, every value copied from the text",
    )
    p.add_argument("file", help="text file to read ('-' for stdin)")
    p.set_defaults(func=cmd_extract)
