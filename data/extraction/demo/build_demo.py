"""Build the extraction demo's corpus and recorded teacher responses from written.jsonl.

    python data/extraction/demo/build_demo.py

Input, next to this file: written.jsonl, {"id", "kind", "text", "template", "filled"} a line (checked by
the recipe's own loader: valid template, filling that follows it, values verbatim in the text).
Outputs, next to this file:
- corpus.jsonl: {"id", "kind", "text"} a line, the text whitespace-normalised as the corpus stage does,
  a corpus source for `sample_passages` (id_field "id");
- teacher_responses.jsonl: the teacher cache's export format (written by the cache itself). For every
  text, the recorded answer to NuExtract's template-generation prompt (the template, as JSON) and to its
  extraction prompt (the filled template), keyed exactly as the extraction pipeline keys them: backend
  "openai", model "demo-recorded-teacher", TeacherConfig's default sampling params, zero-shot prompt.
  The extraction prompt holds the template as the pipeline will have parsed it from the first answer,
  so an offline run over the corpus finds every answer in the cache and sends no request.
Each text must stay one passage: with SmolLM2's tokenizer it must fit `corpus.max_tokens` of
configs/extract_demo.yaml (checked here when that tokenizer is present).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

from distill_ner.config import TeacherConfig  # noqa: E402
from distill_ner.corpus import normalize_whitespace  # noqa: E402
from distill_ner.extraction.data import load_examples  # noqa: E402
from distill_ner.extraction.filters import check_template_answer  # noqa: E402
from distill_ner.extraction.prompts import dump_json, extraction_messages, template_generation_messages  # noqa: E402
from distill_ner.teacher.cache import ResponseCache  # noqa: E402
from distill_ner.teacher.client import make_request  # noqa: E402

MODEL = "demo-recorded-teacher"
STUDENT = ROOT / ".cache/models/SmolLM2-135M-Instruct"
MAX_TOKENS = 512  # corpus.max_tokens in configs/extract_demo.yaml


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=HERE / "written.jsonl")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)

    examples = load_examples(args.input)
    count_tokens = None
    if (STUDENT / "config.json").exists():
        from distill_ner.models import count_tokens_fn

        count_tokens = count_tokens_fn(str(STUDENT))
    config = TeacherConfig(model=MODEL)  # backend "openai", default sampling params: what the demo config uses
    args.out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        ResponseCache(Path(tmp) / "demo.sqlite") as cache,
        (args.out / "corpus.jsonl").open("w", encoding="utf-8") as corpus,
    ):
        for ex in examples:
            text = normalize_whitespace(ex.text)
            if count_tokens is not None and count_tokens(text) > MAX_TOKENS:
                raise SystemExit(
                    f"{args.input}: {ex.id}: {count_tokens(text)} tokens, more than one passage of {MAX_TOKENS}"
                )
            corpus.write(json.dumps({"id": ex.id, "kind": ex.kind, "text": text}, ensure_ascii=False) + "\n")
            template_answer = dump_json(ex.template, 4)
            parsed = check_template_answer(template_answer).value
            if parsed != ex.template:  # the loader validated it, so parsing it back must change nothing
                raise SystemExit(f"{args.input}: {ex.id}: template does not survive the pipeline's template parser")
            for messages, answer in (
                (template_generation_messages(text), template_answer),
                (extraction_messages(text, parsed), dump_json(ex.filled, 4)),
            ):
                request = make_request(messages, config)
                cache.put(
                    request.key,
                    backend=config.backend,
                    model=config.model,
                    messages=request.messages,
                    params=request.params,
                    response=answer,
                    usage={},
                )
        n = cache.export_jsonl(args.out / "teacher_responses.jsonl")
    print(
        f"wrote {len(examples)} documents to {args.out / 'corpus.jsonl'} and {n} responses to {args.out / 'teacher_responses.jsonl'}"
    )


if __name__ == "__main__":
    main()
