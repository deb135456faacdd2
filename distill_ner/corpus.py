"""Corpus sampling for UniNER-style data construction: documents -> passages -> seeded sample.

Sources: local .txt (one document per file), .jsonl (one document per line, `text_field` and
optional `id_field`) and .parquet (same columns) files, given as a file or a folder (searched
recursively, in sorted order); or a Hugging Face dataset, by hub id or local folder (a folder written
by `save_to_disk` is opened with `load_from_disk`, any other with `load_dataset`).

Passages:
- whitespace is normalised the same way everywhere: every run of whitespace becomes one space and
  the ends are stripped (`" ".join(text.split())`);
- a document whose normalised text fits in `max_tokens` (as counted by the student tokenizer's
  `count_tokens`) is exactly one passage;
- a longer one is cut on sentence boundaries (pysbd, or a regex splitter if pysbd is missing or
  does not reproduce its input; a sentence never crosses a blank line); each passage is the longest
  run of whole sentences that fits (passages may span paragraphs, so headings and list items do not
  become passages of their own). A sentence that alone is too long is cut between words,
  and a single word that is too long between characters. Every passage is a verbatim substring of
  the normalised document.
Then exact duplicates (same normalised text) are dropped, keeping the first, and so are passages of
fewer than `min_words` words; `num_passages` are drawn by seeded reservoir sampling (memory stays
bounded on a streamed corpus) and returned in corpus order.

Passage ids are content-addressed: `p-` + the first 16 hex digits of sha1(passage text). They are
the same across runs, machines and corpus orderings, and unique because duplicates are dropped.
`Passage.source` records where it came from: `<file>:<line or row or document id>#<passage index>`.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill_ner.config import CorpusConfig, CorpusSource
from distill_ner.errors import InputError
from distill_ner.jsonl import iter_jsonl
from distill_ner.records import Passage, PassageSet

log = logging.getLogger(__name__)

SUFFIXES = (".txt", ".jsonl", ".parquet")
_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n\s*")
# fallback sentence end: . ! ? (plus closing quotes/brackets) followed by space and a capital/digit/quote
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]’”]*\s+(?=[\"'(\[‘“]?[A-Z0-9])")
_SBD_WINDOW = 4000  # pysbd is quadratic in its input length; it is fed windows of this many chars


@dataclass(frozen=True)
class Document:
    text: str
    origin: str  # file:line, file:row, hf name:index, or the document's own id


def normalize_whitespace(text: str) -> str:
    return " ".join(text.split())


def passage_id(text: str) -> str:
    return "p-" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


# ----------------------------------------------------------------------------------------- reading


def _origin(where: str, doc_id: Any) -> str:
    return f"{where.rsplit(':', 1)[0]}:{doc_id}" if doc_id is not None else where


def _text_value(value: Any, where: str, field: str) -> str:
    if value is None:
        return ""  # a missing text is an empty document, counted and skipped
    if not isinstance(value, str):
        raise InputError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
    return value


def _read_txt(path: Path) -> Iterator[Document]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    yield Document(text, str(path))


def _row_document(row: Any, where: str, source: CorpusSource) -> Document:
    if not isinstance(row, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if source.text_field not in row:
        raise InputError(f"{where}: no key {source.text_field!r} (text_field); keys: {sorted(row)[:10]}")
    text = _text_value(row[source.text_field], where, source.text_field)
    doc_id = None
    if source.id_field is not None:
        if row.get(source.id_field) is None:
            raise InputError(f"{where}: no key {source.id_field!r} (id_field); keys: {sorted(row)[:10]}")
        doc_id = row[source.id_field]
    return Document(text, _origin(where, doc_id))


def _read_jsonl(path: Path, source: CorpusSource) -> Iterator[Document]:
    for where, row in iter_jsonl(path, objects=False):  # _row_document names a non-object row
        yield _row_document(row, where, source)


def _read_parquet(path: Path, source: CorpusSource) -> Iterator[Document]:
    import pyarrow.parquet as pq  # lazy: only for parquet sources

    pf = pq.ParquetFile(path)
    columns = [source.text_field] + ([source.id_field] if source.id_field else [])
    names = pf.schema_arrow.names
    for col in columns:
        if col not in names:
            raise InputError(f"{path}: no column {col!r}; columns: {names}")
    row_no = 0
    for batch in pf.iter_batches(columns=columns, batch_size=1024):
        for row in batch.to_pylist():
            yield _row_document(row, f"{path}:row {row_no}", source)
            row_no += 1


def _local_files(root: Path) -> list[Path]:
    if root.is_file():
        if root.suffix not in SUFFIXES:
            raise InputError(f"corpus.sources[].path: {root}: unsupported file type; expected one of {SUFFIXES}")
        return [root]
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix in SUFFIXES and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise InputError(f"corpus.sources[].path: {root}: no {'/'.join(SUFFIXES)} files in this folder")
    return files


def _read_hf(source: CorpusSource) -> Iterator[Document]:
    import datasets  # lazy: heavy import

    ref = source.hf_dataset
    assert ref is not None
    local = Path(ref).expanduser()
    if local.is_dir() and ((local / "state.json").exists() or (local / "dataset_dict.json").exists()):
        ds: Any = datasets.load_from_disk(str(local))  # written by save_to_disk: not loadable by load_dataset
        if isinstance(ds, datasets.DatasetDict):
            if source.split not in ds:
                raise InputError(f"{ref}: no split {source.split!r}; splits: {sorted(ds)}")
            ds = ds[source.split]
    else:
        ds = datasets.load_dataset(ref, source.hf_config, split=source.split, streaming=source.streaming)
    names = getattr(ds, "column_names", None)
    if names is not None:
        for col in [source.text_field] + ([source.id_field] if source.id_field else []):
            if col not in names:
                raise InputError(f"{ref} [{source.split}]: no column {col!r}; columns: {names}")
        ds = ds.select_columns([source.text_field] + ([source.id_field] if source.id_field else []))
    for idx, row in enumerate(ds):
        yield _row_document(row, f"{ref}[{source.split}]:{idx}", source)


def read_documents(source: CorpusSource) -> Iterator[Document]:
    """Documents of one source, in a deterministic order, at most `max_documents`."""
    if source.hf_dataset is not None:
        docs = _read_hf(source)
    else:
        assert source.path is not None
        docs = (doc for f in _local_files(Path(source.path).expanduser()) for doc in _read_file(f, source))
    for n, doc in enumerate(docs):
        if source.max_documents is not None and n >= source.max_documents:
            break
        yield doc


def _read_file(path: Path, source: CorpusSource) -> Iterator[Document]:
    if path.suffix == ".txt":
        return _read_txt(path)
    if path.suffix == ".jsonl":
        return _read_jsonl(path, source)
    return _read_parquet(path, source)


# ---------------------------------------------------------------------------------------- splitting


class SentenceSplitter:
    """Sentence spans of a whitespace-normalised paragraph. pysbd when available, else a regex."""

    def __init__(self) -> None:
        try:
            import pysbd

            self._sbd: Any = pysbd.Segmenter(language="en", clean=False)
        except ImportError:
            log.warning("pysbd is not installed; using a regex sentence splitter")
            self._sbd = None

    def _regex(self, text: str) -> list[str]:
        pieces, start = [], 0
        for m in _SENTENCE_END.finditer(text):
            pieces.append(text[start : m.end()])
            start = m.end()
        pieces.append(text[start:])
        return pieces

    def _segments(self, text: str) -> list[str]:
        """Consecutive pieces that concatenate to `text` exactly."""
        if self._sbd is None:
            return self._regex(text)
        out: list[str] = []
        start = 0
        while start < len(text):
            window = text[start : start + _SBD_WINDOW]
            try:
                segs = [s for s in self._sbd.segment(window) if s]
            except Exception:  # pysbd raises assorted errors on odd input; the regex never does
                segs = []
            if "".join(segs) != window:
                segs = self._regex(window)
            at_end = start + len(window) >= len(text)
            if not at_end and len(segs) > 1:
                segs = segs[:-1]  # the window may have cut the last sentence: re-read it in the next one
            out.extend(segs)
            start += sum(len(s) for s in segs)
        return out

    def spans(self, text: str, offset: int = 0) -> list[tuple[int, int]]:
        spans, pos = [], 0
        for seg in self._segments(text):
            lead = len(seg) - len(seg.lstrip())
            body = seg.strip()
            if body:
                spans.append((offset + pos + lead, offset + pos + lead + len(body)))
            pos += len(seg)
        return spans


def _pack(text: str, spans: list[tuple[int, int]], fits: Callable[[str], bool]) -> list[tuple[int, int]]:
    """Greedy: each piece is the longest run of consecutive spans that fits (exponential + binary search)."""
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(spans):
        start = spans[i][0]
        if not fits(text[start : spans[i][1]]):
            out.extend(_split_long(text, spans[i], fits))
            i += 1
            continue
        good, step, bad = i + 1, 1, None  # `good`: an end index known to fit
        while good < len(spans):
            probe = min(good + step, len(spans))
            if fits(text[start : spans[probe - 1][1]]):
                good, step = probe, step * 2
            else:
                bad = probe
                break
        while bad is not None and bad - good > 1:
            mid = (good + bad) // 2
            if fits(text[start : spans[mid - 1][1]]):
                good = mid
            else:
                bad = mid
        out.append((start, spans[good - 1][1]))
        i = good
    return out


def _split_long(text: str, span: tuple[int, int], fits: Callable[[str], bool]) -> list[tuple[int, int]]:
    """An over-long sentence: cut between words; an over-long word: cut between characters."""
    s, e = span
    words = [(s + m.start(), s + m.end()) for m in re.finditer(r"\S+", text[s:e])]
    if len(words) > 1:
        return _pack(text, words, fits)
    out: list[tuple[int, int]] = []
    while s < e:
        lo, hi = s + 1, e  # at least one character per piece, so this always ends
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(text[s:mid]):
                lo = mid
            else:
                hi = mid - 1
        out.append((s, lo))
        s = lo
    return out


def split_document(
    text: str, max_tokens: int, count_tokens: Callable[[str], int], splitter: SentenceSplitter | None = None
) -> list[str]:
    """Passages of at most `max_tokens` tokens of one raw document (see the module doc)."""
    normalised = normalize_whitespace(text)
    if not normalised:
        return []

    def fits(s: str) -> bool:
        return count_tokens(s) <= max_tokens

    if fits(normalised):
        return [normalised]
    splitter = splitter or SentenceSplitter()
    spans: list[tuple[int, int]] = []
    offset = 0
    # paragraphs are normalised one by one and joined with one space: the same string as `normalised`
    for para in _PARAGRAPH.split(text):
        para_n = normalize_whitespace(para)
        if not para_n:
            continue
        spans.extend(splitter.spans(para_n, offset))
        offset += len(para_n) + 1
    return [normalised[s:e] for s, e in _pack(normalised, spans, fits)]


# ----------------------------------------------------------------------------------------- sampling


def sample_passages(config: CorpusConfig, count_tokens: Callable[[str], int]) -> PassageSet:
    """Read every source, cut documents into passages, dedupe, drop near-empty ones, sample `num_passages`."""
    rng = random.Random(config.seed)
    splitter = SentenceSplitter()
    seen: set[bytes] = set()
    reservoir: list[tuple[int, Passage]] = []
    stats = {
        "documents": 0,
        "empty_documents": 0,
        "documents_split": 0,
        "passages_before_dedupe": 0,
        "duplicates": 0,
        "near_empty": 0,
        "eligible": 0,
        "sampled": 0,
    }
    for source in config.sources:
        for doc in read_documents(source):
            stats["documents"] += 1
            pieces = split_document(doc.text, config.max_tokens, count_tokens, splitter)
            if not pieces:
                stats["empty_documents"] += 1
                continue
            stats["documents_split"] += len(pieces) > 1
            for k, text in enumerate(pieces):
                stats["passages_before_dedupe"] += 1
                digest = hashlib.sha1(text.encode("utf-8")).digest()
                if digest in seen:
                    stats["duplicates"] += 1
                    continue
                seen.add(digest)
                if len(text.split()) < config.min_words:
                    stats["near_empty"] += 1
                    continue
                # reservoir sampling (Algorithm R): a uniform, seeded sample of a stream of unknown length
                n = stats["eligible"]
                stats["eligible"] += 1
                passage = Passage(id=passage_id(text), text=text, source=f"{doc.origin}#{k}")
                if n < config.num_passages:
                    reservoir.append((n, passage))
                else:
                    j = rng.randint(0, n)
                    if j < config.num_passages:
                        reservoir[j] = (n, passage)
    reservoir.sort(key=lambda item: item[0])  # corpus order: easier to read, and still deterministic
    stats["sampled"] = len(reservoir)
    if stats["eligible"] < config.num_passages:
        log.warning(
            "corpus: only %d passages available, fewer than num_passages=%d", stats["eligible"], config.num_passages
        )
    return PassageSet(passages=[p for _, p in reservoir], stats=stats)
