"""NER datasets as typed sentences: UniNER JSON benchmarks, BIO datasets (HF or local) and CoNLL files.

Every loader returns an `NERCorpus` of `NERSentence`s whose gold is keyed by *natural-language*
types ("person", "programming language"), because that is what the student is asked about
("What describes {type} in the text?"). Raw dataset labels (PER, programlang, ...) are rewritten
through a label map from data/label_maps/*.json; a label mapped to null is dropped and counted.

Errors in the data are ValueErrors that name the file or dataset and the entry/row/line and the
offending label, so a broken benchmark is fixed at the source instead of silently mis-scored.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from distill_ner.jsonl import iter_jsonl
from distill_ner.paths import DATA_DIR, PROJECT_ROOT, looks_local  # noqa: F401  (PROJECT_ROOT: resolving local paths)

LABEL_MAP_DIR = DATA_DIR / "label_maps"

LabelMap = dict[str, str | None]
Span = tuple[str, int, int]  # (type, start token, end token exclusive)
Scheme = Literal["iob2", "iob1"]

# tokens after which a multi-sentence BIO row may be cut
SENTENCE_FINAL = frozenset({".", "!", "?"})


class NERSentence(BaseModel):
    """One sentence with gold entity strings per natural-language type."""

    id: str
    text: str
    # None for sources without token-level gold (UniNER JSON); span metrics then use text.split()
    tokens: list[str] | None = None
    # type -> gold strings in order of appearance, deduplicated; a type asked but absent maps to []
    gold: dict[str, list[str]] = Field(default_factory=dict)
    # IOB2 tags over `tokens`, with natural-language types; None where the source has no tags
    tags: list[str] | None = None
    # where the sentence came from ("file.json entry 12 (line 40)", "conll2003 row 7"), for errors
    source: str = ""
    # type -> id of the original query, for UniNER files (one entry per (sentence, type))
    query_ids: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _tags_match_tokens(self) -> "NERSentence":
        if self.tags is not None and (self.tokens is None or len(self.tags) != len(self.tokens)):
            raise ValueError(f"sentence {self.id}: tags need tokens of the same length")
        return self

    @property
    def types(self) -> list[str]:
        return list(self.gold)


class NERCorpus(BaseModel):
    """What a loader returns: the sentences plus what was dropped on the way."""

    name: str
    sentences: list[NERSentence]
    # natural-language types of the dataset, in label-map / first-seen order
    types: list[str]
    # raw label -> spans (BIO) or queries (UniNER) removed because the label map sends it to null
    dropped: dict[str, int] = Field(default_factory=dict)
    stats: dict[str, int] = Field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Label maps (data/label_maps/*.json): {"PER": "person", "MISC": null, ...}


def list_label_maps() -> list[str]:
    return sorted(p.stem for p in LABEL_MAP_DIR.glob("*.json"))


def load_label_map(name_or_path: str | Path | Mapping[str, str | None]) -> LabelMap:
    """A label map by registry name (file stem in data/label_maps), by path, or given inline."""
    if isinstance(name_or_path, Mapping):
        return _check_label_map(dict(name_or_path), "inline label map")
    ref = str(name_or_path)
    path = LABEL_MAP_DIR / f"{ref}.json"
    if not path.is_file():
        path = Path(ref).expanduser()
        if not path.is_file():
            if ref.endswith(".json") or "/" in ref:
                raise FileNotFoundError(f"label map file not found: {ref}")
            raise ValueError(f"unknown label map {ref!r}; known: {', '.join(list_label_maps())}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON (line {e.lineno}): {e.msg}") from None
    return _check_label_map(data, str(path))


def _check_label_map(data: Any, where: str) -> LabelMap:
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{where}: a label map is a non-empty JSON object of label -> type or null")
    for label, target in data.items():
        if target is not None and (not isinstance(target, str) or not target.strip()):
            raise ValueError(f"{where}: label {label!r} must map to a non-empty string or null")
    return data


def expand_label(label: str, label_map: Mapping[str, str | None]) -> str | None:
    """Natural-language type of a raw label (None = drop it); an unknown label is an error."""
    if label not in label_map:
        raise ValueError(f"unknown label {label!r}; the label map knows: {', '.join(label_map)}")
    return label_map[label]


# ---------------------------------------------------------------------------------------------
# BIO helpers

_TAG_RE = re.compile(r"([BI])-(.+)", re.DOTALL)


def spans_from_bio(tokens: Sequence[str], tags: Sequence[str]) -> list[Span]:
    """Entity spans of an IOB2 sequence as (type, start, end-exclusive); I- without its B- is an error."""
    if len(tokens) != len(tags):
        raise ValueError(f"{len(tokens)} tokens but {len(tags)} tags")
    spans: list[Span] = []
    current: list[Any] | None = None
    for i, tag in enumerate(tags):
        if tag == "O":
            current = None
            continue
        m = _TAG_RE.fullmatch(tag)
        if m is None:
            raise ValueError(f"token {i}: invalid tag {tag!r} (expected O, B-<type> or I-<type>)")
        prefix, typ = m.groups()
        if prefix == "I":
            if current is None or current[0] != typ:
                raise ValueError(f"token {i}: {tag!r} does not continue a {typ!r} span (IOB2)")
            current[2] = i + 1
            continue
        current = [typ, i, i + 1]
        spans.append(current)  # type: ignore[arg-type]  # mutated while the span grows
    return [(t, s, e) for t, s, e in spans]


def sentence_from_bio(
    id: str,
    tokens: Sequence[str],
    tags: Sequence[str],
    types: Sequence[str] | None = None,
    source: str = "",
) -> NERSentence:
    """A sentence whose text is the tokens joined by spaces and whose gold is the tagged strings.

    `types` are the types asked of the sentence (absent ones get []); tags must already carry
    natural-language types.
    """
    gold: dict[str, list[str]] = {t: [] for t in types or ()}
    for typ, start, end in spans_from_bio(tokens, tags):
        found = gold.setdefault(typ, [])
        mention = " ".join(tokens[start:end])
        if mention not in found:
            found.append(mention)
    return NERSentence(id=id, text=" ".join(tokens), tokens=list(tokens), gold=gold, tags=list(tags), source=source)


def split_bio(tokens: Sequence[str], tags: Sequence[str]) -> list[tuple[int, int]]:
    """Token ranges of the sentences in a multi-sentence BIO row.

    Cut after a sentence-final token (., !, ?) tagged O and followed by a capitalised token;
    a cut never falls inside an entity because the final token must be O and IOB2 forbids I- after O.
    """
    ranges: list[tuple[int, int]] = []
    start = 0
    for i in range(len(tokens) - 1):
        nxt = tokens[i + 1]
        if tokens[i] in SENTENCE_FINAL and tags[i] == "O" and not tags[i + 1].startswith("I-") and nxt[:1].isupper():
            ranges.append((start, i + 1))
            start = i + 1
    if start < len(tokens):
        ranges.append((start, len(tokens)))
    return ranges


@lru_cache(maxsize=1)
def _segmenter() -> Any:
    import pysbd  # imported lazily: only raw-text splitting needs it

    return pysbd.Segmenter(language="en", clean=False)


def sentence_offsets(text: str, spans: Sequence[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    """Character ranges of the sentences of raw text (pysbd); a boundary inside a span is not cut.

    `spans` are (start, end-exclusive) character offsets of entities that must stay whole.
    """
    bounds: list[tuple[int, int]] = []
    cursor = 0
    for segment in _segmenter().segment(text):
        piece = segment.strip()
        if not piece:
            continue
        start = text.find(piece, cursor)
        if start < 0:  # pysbd changed the text; keep the rest as one sentence rather than guess
            rest = text[cursor:].strip()
            if rest:
                start = text.index(rest, cursor)
                bounds.append((start, start + len(rest)))
            cursor = len(text)
            break
        bounds.append((start, start + len(piece)))
        cursor = start + len(piece)
    merged: list[tuple[int, int]] = []
    for start, end in bounds:
        # merge with the previous sentence when the gap between them lies inside an entity
        if merged and any(s < start and e > merged[-1][1] for s, e in spans):
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def split_sentences(text: str, spans: Sequence[tuple[int, int]] = ()) -> list[str]:
    """Sentences of raw text (pysbd, English), stripped; entity spans (char offsets) are never cut."""
    return [text[s:e] for s, e in sentence_offsets(text, spans)]


# ---------------------------------------------------------------------------------------------
# UniNER JSON (one entry per (sentence, type) query)

_TEXT_PREFIX = "Text: "
_QUESTION_RE = re.compile(r"What describes (.+) in the text\?", re.DOTALL)
_WS_RE = re.compile(r"[ \t\n\r]*")


def _line_at(raw: str, pos: int) -> int:
    return raw.count("\n", 0, pos) + 1


def _iter_json_list(raw: str, where: str) -> Iterator[tuple[int, int, Any]]:
    """Yield (index, line, value) for each element of a JSON list, so errors can name the line.

    Decoding element by element (instead of json.loads on the whole file) is what lets an error
    name the entry it happened in.
    """
    decoder = json.JSONDecoder()
    n = len(raw)
    pos = _WS_RE.match(raw, 0).end()  # type: ignore[union-attr]
    if pos >= n or raw[pos] != "[":
        raise ValueError(f"{where}: expected a JSON list of entries (line {_line_at(raw, pos)})")
    pos = _WS_RE.match(raw, pos + 1).end()  # type: ignore[union-attr]
    if pos < n and raw[pos] == "]":
        pos = _WS_RE.match(raw, pos + 1).end()  # type: ignore[union-attr]
        if pos != n:
            raise ValueError(f"{where}: unexpected data after the list (line {_line_at(raw, pos)})")
        return
    index, line, last = 0, 1, 0
    while True:
        line += raw.count("\n", last, pos)  # running count keeps this linear in the file size
        last = pos
        try:
            value, pos = decoder.raw_decode(raw, pos)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{where}: invalid JSON in entry {index} (line {e.lineno}, column {e.colno}): {e.msg}"
            ) from None
        yield index, line, value
        index += 1
        pos = _WS_RE.match(raw, pos).end()  # type: ignore[union-attr]
        if pos < n and raw[pos] == ",":
            pos = _WS_RE.match(raw, pos + 1).end()  # type: ignore[union-attr]
            continue
        if pos < n and raw[pos] == "]":
            pos = _WS_RE.match(raw, pos + 1).end()  # type: ignore[union-attr]
            if pos != n:
                raise ValueError(f"{where}: unexpected data after the list (line {_line_at(raw, pos)})")
            return
        raise ValueError(
            f"{where}: invalid JSON after entry {index - 1} (line {_line_at(raw, pos)}): expected ',' or ']'"
        )


def _iter_json_records(path: Path) -> Iterator[tuple[int, int, Any]]:
    """(index, line, value) per entry of a JSON list file or a JSONL file (read by the one JSONL reader)."""
    if path.suffix == ".jsonl":
        # iter_jsonl names each line as `file:line`
        return ((i, int(where.rsplit(":", 1)[1]), v) for i, (where, v) in enumerate(iter_jsonl(path, objects=False)))
    return _iter_json_list(path.read_text(encoding="utf-8"), str(path))


def _parse_uniner_entry(entry: Any, where: str) -> tuple[str, str, list[tuple[str, str, list[str]]]]:
    """(id, text, [(query id, type, gold)]) of one entry; any deviation from the format is an error."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: an entry must be a JSON object, got {type(entry).__name__}")
    for key in ("id", "conversations"):
        if key not in entry:
            raise ValueError(f"{where}: missing field {key!r}")
    conv = entry["conversations"]
    if not isinstance(conv, list) or len(conv) < 4 or len(conv) % 2:
        raise ValueError(
            f"{where}: 'conversations' must be a list of turns: human 'Text: ...', gpt reply, "
            "then (human question, gpt answer) pairs"
        )
    for k, turn in enumerate(conv):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise ValueError(f"{where}: turn {k} must be an object with 'from' and 'value'")
        expected = "human" if k % 2 == 0 else "gpt"
        if turn["from"] != expected:
            raise ValueError(f"{where}: turn {k} is from {turn['from']!r}, expected {expected!r}")
        if not isinstance(turn["value"], str):
            raise ValueError(f"{where}: turn {k} 'value' must be a string")
    first = conv[0]["value"]
    if not first.startswith(_TEXT_PREFIX):
        raise ValueError(f"{where}: the first turn must start with {_TEXT_PREFIX!r}")
    entry_id = str(entry["id"])
    queries: list[tuple[str, str, list[str]]] = []
    for pair, k in enumerate(range(2, len(conv), 2)):
        question, answer = conv[k]["value"], conv[k + 1]["value"]
        m = _QUESTION_RE.fullmatch(question)
        if m is None:
            raise ValueError(f"{where}: turn {k} {question!r} is not 'What describes <type> in the text?'")
        try:
            gold = json.loads(answer)
        except json.JSONDecodeError:
            raise ValueError(f"{where}: gold answer {answer!r} is not valid JSON") from None
        if not isinstance(gold, list):
            raise ValueError(f"{where}: gold answer {answer!r} is not a JSON list")
        if not all(isinstance(g, str) for g in gold):
            raise ValueError(f"{where}: gold answer {answer!r} holds a non-string item")
        query_id = entry_id if pair == 0 else f"{entry_id}#{pair}"
        queries.append((query_id, m.group(1), list(dict.fromkeys(gold))))
    return entry_id, first[len(_TEXT_PREFIX) :], queries


def load_uniner_json(
    path: str | Path,
    *,
    name: str | None = None,
    label_map: str | Path | Mapping[str, str | None] | None = None,
) -> NERCorpus:
    """Sentences of a UniNER-format file (.json list, or .jsonl one entry per line).

    Queries are grouped by sentence text in first-seen order. A text whose type is asked a second
    time starts a new sentence (CrossNER_AI holds one sentence twice), so every query of the file
    is kept and scores match the reference evaluation, which scores queries, not unique texts.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"UniNER file not found: {p}")
    mapping = load_label_map(label_map) if label_map is not None else None
    sentences: list[NERSentence] = []
    by_text: dict[str, list[int]] = {}
    types: dict[str, None] = {}
    dropped: Counter[str] = Counter()
    n_queries = 0
    for index, line, entry in _iter_json_records(p):
        where = f"{p} entry {index} (line {line})"
        entry_id, text, queries = _parse_uniner_entry(entry, where)
        for query_id, raw_type, gold in queries:
            typ: str | None = raw_type
            if mapping is not None:
                if raw_type not in mapping:
                    raise ValueError(f"{where}: unknown label {raw_type!r} (not in the label map)")
                typ = mapping[raw_type]
                if typ is None:
                    dropped[raw_type] += 1
                    continue
            n_queries += 1
            types.setdefault(typ)
            slots = by_text.setdefault(text, [])
            target = next((i for i in slots if typ not in sentences[i].gold), None)
            if target is None:
                target = len(sentences)
                slots.append(target)
                sentences.append(NERSentence(id=entry_id, text=text, source=where))
            sentence = sentences[target]
            if typ in sentence.gold:  # two raw labels mapped onto one type: merge their gold
                sentence.gold[typ] = list(dict.fromkeys(sentence.gold[typ] + gold))
            else:
                sentence.gold[typ] = gold
                sentence.query_ids[typ] = query_id
    return NERCorpus(
        name=name or p.stem,
        sentences=sentences,
        types=list(types),
        dropped=dict(dropped),
        stats={"queries": n_queries, "sentences": len(sentences)},
    )


# ---------------------------------------------------------------------------------------------
# BIO datasets and CoNLL files


class _BIOCollector:
    """Validates rows, maps labels, splits documents, then builds sentences with the full type list."""

    def __init__(
        self,
        name: str,
        label_map: LabelMap | None,
        scheme: Scheme,
        split_documents: bool,
        declared_labels: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.label_map = label_map
        self.scheme = scheme
        self.split_documents = split_documents
        self.dropped: Counter[str] = Counter()
        # raw types in declared (ClassLabel) order first, then first-seen order
        self.raw_types: dict[str, None] = dict.fromkeys(declared_labels)
        self.rows: list[tuple[str, list[str], list[str], str]] = []
        self.stats: Counter[str] = Counter()

    def add(
        self, sentence_id: str, tokens: list[str], tags: list[str], where: str, locate: Callable[[int], str]
    ) -> None:
        if len(tokens) != len(tags):
            raise ValueError(f"{where}: {len(tokens)} tokens but {len(tags)} tags")
        self.stats["rows"] += 1
        if not tokens or tokens == ["-DOCSTART-"]:
            self.stats["skipped_rows"] += 1
            return
        mapped = self._map_tags(tags, locate)
        ranges = split_bio(tokens, mapped) if self.split_documents else [(0, len(tokens))]
        if len(ranges) > 1:
            self.stats["documents_split"] += 1
        for k, (start, end) in enumerate(ranges):
            sid = sentence_id if len(ranges) == 1 else f"{sentence_id}.{k}"
            src = where if len(ranges) == 1 else f"{where}, sentence {k} (tokens {start}-{end})"
            self.rows.append((sid, tokens[start:end], mapped[start:end], src))

    def _map_tags(self, tags: list[str], locate: Callable[[int], str]) -> list[str]:
        out: list[str] = []
        prev: str | None = None  # raw type of the previous token, None after O
        for i, tag in enumerate(tags):
            if tag == "O":
                out.append("O")
                prev = None
                continue
            m = _TAG_RE.fullmatch(tag)
            if m is None:
                raise ValueError(f"{locate(i)}: invalid label {tag!r} (expected O, B-<type> or I-<type>)")
            prefix, raw_type = m.groups()
            if prefix == "I" and prev != raw_type:
                if self.scheme == "iob1":  # IOB1 opens spans with I-; rewrite to IOB2
                    prefix = "B"
                else:
                    after = "the start" if i == 0 else ("O" if prev is None else f"a {prev!r} token")
                    raise ValueError(f"{locate(i)}: label {tag!r} follows {after} (IOB2 needs B-{raw_type} first)")
            natural: str | None = raw_type
            if self.label_map is not None:
                if raw_type not in self.label_map:
                    raise ValueError(
                        f"{locate(i)}: unknown label {tag!r} (type {raw_type!r} is not in the label map: "
                        f"{', '.join(self.label_map)})"
                    )
                natural = self.label_map[raw_type]
            self.raw_types.setdefault(raw_type)
            if natural is None:
                if prefix == "B":
                    self.dropped[raw_type] += 1
                out.append("O")
            else:
                out.append(f"{prefix}-{natural}")
            prev = raw_type
        return out

    def finish(self) -> NERCorpus:
        if self.label_map is not None:
            # label-map order, restricted to labels the dataset declares or uses
            wanted = [self.label_map[r] for r in self.label_map if r in self.raw_types]
        else:
            wanted = list(self.raw_types)
        types = list(dict.fromkeys(t for t in wanted if t is not None))
        sentences = [sentence_from_bio(sid, toks, tags, types, src) for sid, toks, tags, src in self.rows]
        stats = dict(self.stats)
        stats["sentences"] = len(sentences)
        return NERCorpus(name=self.name, sentences=sentences, types=types, dropped=dict(self.dropped), stats=stats)


def _declared_types(names: Sequence[str]) -> list[str]:
    out: dict[str, None] = {}
    for label in names:
        m = _TAG_RE.fullmatch(label)
        if m:
            out.setdefault(m.group(2))
    return list(out)


def _classlabel_names(feature: Any) -> list[str] | None:
    """Names of a ClassLabel inside a sequence feature (Sequence(ClassLabel) or [ClassLabel])."""
    import datasets

    inner = feature
    if isinstance(feature, datasets.Sequence):
        inner = feature.feature
    elif isinstance(feature, list) and feature:
        inner = feature[0]
    elif hasattr(datasets, "List") and isinstance(feature, datasets.List):
        inner = feature.feature
    return list(inner.names) if isinstance(inner, datasets.ClassLabel) else None


def _open_bio_source(
    source: Any, split: str, hf_config: str | None
) -> tuple[list[str], Iterator[tuple[int, str, dict[str, Any]]], dict[str, Any]]:
    """(columns, rows as (index, location, row), features) of a dataset object, folder, file or hub id."""
    import datasets

    if isinstance(source, (datasets.Dataset, datasets.DatasetDict)):
        ds: Any = source
    else:
        ref = str(source)
        path = Path(ref).expanduser()
        if path.is_file() and path.suffix in (".json", ".jsonl"):
            records = list(_iter_json_records(path))
            columns = list(dict.fromkeys(k for _, _, r in records if isinstance(r, dict) for k in r))
            for index, line, row in records:
                if not isinstance(row, dict):
                    raise ValueError(f"{path} row {index} (line {line}): a row must be a JSON object")
            rows = ((i, f"row {i} (line {line})", r) for i, line, r in records)
            return columns, rows, {}
        if path.is_file() and path.suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            # HF writes its features (ClassLabel names) into the parquet metadata; recover them
            features = dict(datasets.Features.from_arrow_schema(table.schema))
            return table.column_names, ((i, f"row {i}", r) for i, r in enumerate(table.to_pylist())), features
        if path.is_dir():
            ds = datasets.load_from_disk(str(path))
        elif looks_local(ref, suffixes=(".json", ".jsonl", ".parquet")):
            raise FileNotFoundError(f"BIO dataset not found: {ref}")
        else:
            ds = datasets.load_dataset(ref, hf_config, split=split)
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise ValueError(f"{source}: no split {split!r}; splits: {', '.join(ds)}")
        ds = ds[split]
    return list(ds.column_names), ((i, f"row {i}", r) for i, r in enumerate(ds)), dict(ds.features)


def load_bio(
    source: str | Path | Any,
    split: str = "test",
    tokens_column: str = "tokens",
    tags_column: str = "ner_tags",
    label_map: str | Path | Mapping[str, str | None] | None = None,
    *,
    name: str | None = None,
    hf_config: str | None = None,
    tag_names: Sequence[str] | None = None,
    split_documents: bool = False,
    scheme: Scheme = "iob2",
) -> NERCorpus:
    """Sentences of a token/tag dataset: a hub id, a save_to_disk folder, a .json/.jsonl/.parquet file,
    or a datasets.Dataset.

    Integer tags are read through the column's ClassLabel names (or `tag_names`); string tags are used
    as they are. Tags must be IOB2 (`scheme="iob1"` rewrites IOB1 first); with a label map every type
    must be in it. `split_documents` cuts rows holding several sentences (see `split_bio`).
    """
    is_object = hasattr(source, "column_names")
    # errors name the dataset as the caller wrote it; sentence ids use the short name
    dataset = name or ("dataset" if is_object else str(source))
    id_prefix = name or ("dataset" if is_object else Path(str(source)).name)
    mapping = load_label_map(label_map) if label_map is not None else None
    columns, rows, features = _open_bio_source(source, split, hf_config)
    for column in (tokens_column, tags_column):
        if column not in columns:
            raise ValueError(f"{dataset}: missing column {column!r}; columns: {', '.join(columns)}")
    names = list(tag_names) if tag_names is not None else None
    if names is None and tags_column in features:
        names = _classlabel_names(features[tags_column])
    collector = _BIOCollector(dataset, mapping, scheme, split_documents, _declared_types(names or ()))
    for index, location, row in rows:
        where = f"{dataset} {location}"
        tokens, raw_tags = row.get(tokens_column), row.get(tags_column)
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ValueError(f"{where}: column {tokens_column!r} must be a list of strings")
        if not isinstance(raw_tags, list):
            raise ValueError(f"{where}: column {tags_column!r} must be a list of tags")
        tags: list[str] = []
        for i, tag in enumerate(raw_tags):
            if isinstance(tag, str):
                tags.append(tag)
            elif isinstance(tag, int) and not isinstance(tag, bool):
                if names is None:
                    raise ValueError(
                        f"{where}: integer tags but no label names (no ClassLabel feature; pass tag_names)"
                    )
                if not 0 <= tag < len(names):
                    raise ValueError(f"{where}, token {i}: label id {tag} outside 0..{len(names) - 1}")
                tags.append(names[tag])
            else:
                raise ValueError(f"{where}, token {i}: label {tag!r} is neither a string nor a label id")
        collector.add(f"{id_prefix}-{index}", list(tokens), tags, where, lambda i, w=where: f"{w}, token {i}")
    return collector.finish()


def load_conll(
    path: str | Path,
    label_map: str | Path | Mapping[str, str | None] | None = None,
    *,
    name: str | None = None,
    split_documents: bool = False,
    scheme: Scheme = "iob2",
) -> NERCorpus:
    """Sentences of a CoNLL file: one token per line (first column the token, last the tag),
    a blank line between sentences, -DOCSTART- lines skipped. Errors name file and line."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"CoNLL file not found: {p}")
    mapping = load_label_map(label_map) if label_map is not None else None
    collector = _BIOCollector(name or p.stem, mapping, scheme, split_documents)
    tokens: list[str] = []
    tags: list[str] = []
    lines: list[int] = []

    def flush() -> None:
        if tokens:
            first = lines[0]
            collector.add(
                f"{collector.name}-L{first}",
                list(tokens),
                list(tags),
                f"{p}:{first}",
                lambda i, ls=list(lines): f"{p}:{ls[i]}",
            )
        tokens.clear()
        tags.clear()
        lines.clear()

    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            cols = line.split()
            if not cols:
                flush()
                continue
            if cols[0] == "-DOCSTART-":
                flush()
                continue
            if len(cols) < 2:
                raise ValueError(f"{p}:{lineno}: expected a token and a tag, got {line.strip()!r}")
            tokens.append(cols[0])
            tags.append(cols[-1])
            lines.append(lineno)
    flush()
    return collector.finish()
