"""Build the demo corpus and its recorded teacher responses from data/demo/written/group*.jsonl.

    python data/demo/build_demo.py

Inputs: one JSON object a line, {"id", "domain", "text", "teacher_output", optional "noise"}, where
teacher_output is the answer a teacher gave to the UniNER prompt for that text (some are noisy on
purpose: `noise` names what the filters should catch).
Outputs, next to this file:
- corpus.jsonl: {"id", "domain", "text"} a line: a corpus source for `sample_passages` (id_field "id");
- teacher_responses.jsonl: the cache export format, each record keyed exactly as `annotate_passages`
  keys the request for that document's passage with TeacherConfig defaults, backend "openai" and model
  "demo-recorded-teacher". Every document is short enough to be one passage (checked here), so the
  passage is the whitespace-normalised text, and an offline run over the corpus needs no request.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from distill_ner.config import TeacherConfig  # noqa: E402
from distill_ner.corpus import normalize_whitespace  # noqa: E402
from distill_ner.jsonl import iter_jsonl  # noqa: E402
from distill_ner.ner.annotate import teacher_request  # noqa: E402
from distill_ner.teacher.cache import CacheRecord, canonical_json  # noqa: E402

MODEL = "demo-recorded-teacher"
GROUPS = [HERE / "written" / f"group{i}.jsonl" for i in (1, 2, 3, 4)]
# the passage limit the demo is built for, with a conservative words->tokens ratio for small students
MAX_TOKENS, TOKENS_PER_WORD = 256, 1.6
REQUIRED = ("id", "domain", "text", "teacher_output")


def read_group(path: Path) -> list[dict[str, str]]:
    rows = []
    try:
        lines = list(iter_jsonl(path))
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    for where, row in lines:
        for key in REQUIRED:
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise SystemExit(f"{where}: key {key!r} must be a non-empty string")
        if len(row["text"].split()) * TOKENS_PER_WORD > MAX_TOKENS:
            raise SystemExit(f"{where}: text too long to stay one passage of {MAX_TOKENS} tokens")
        rows.append(row)
    return rows


def main() -> None:
    present = [p for p in GROUPS if p.exists()]
    missing = [p.name for p in GROUPS if not p.exists()]
    if not present:
        raise SystemExit(f"no input files in {HERE / 'written'}")
    if missing:
        print(f"warning: building from {len(present)} of 4 groups; missing: {', '.join(missing)}", file=sys.stderr)
    rows = [row for path in present for row in read_group(path)]
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        if row["id"] in seen:
            raise SystemExit(f"duplicate document id {row['id']!r}")
        seen[row["id"]] = i

    config = TeacherConfig(model=MODEL)  # backend "openai", default sampling params
    with (
        (HERE / "corpus.jsonl").open("w", encoding="utf-8") as corpus,
        (HERE / "teacher_responses.jsonl").open("w", encoding="utf-8") as responses,
    ):
        for row in rows:
            corpus.write(
                json.dumps({"id": row["id"], "domain": row["domain"], "text": row["text"]}, ensure_ascii=False) + "\n"
            )
            req = teacher_request(normalize_whitespace(row["text"]), config)
            record = CacheRecord(
                key=req.key,
                backend=config.backend,
                model=config.model,
                messages=req.messages,
                params=req.params,
                response=row["teacher_output"],
                usage={},
            )
            responses.write(canonical_json(record.model_dump()) + "\n")
    print(f"wrote {len(rows)} documents to {HERE / 'corpus.jsonl'} and {HERE / 'teacher_responses.jsonl'}")


if __name__ == "__main__":
    main()
