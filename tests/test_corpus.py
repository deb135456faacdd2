"""Corpus sampling: readers for every source kind, passage cutting, dedupe, seeded sampling, stable ids."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from distill_ner.config import CorpusConfig, CorpusSource
from distill_ner.corpus import SentenceSplitter, normalize_whitespace, sample_passages, split_document


def words(s: str) -> int:
    """The tests' token counter: one token per whitespace-separated word."""
    return len(s.split())


SENTENCES = [
    "Marie Curie was born in Warsaw in 1867.",
    "She moved to Paris to study physics at the Sorbonne.",
    "Dr. Curie won the Nobel Prize twice, in 1903 and 1911.",
    "Her daughter Irène also won a Nobel Prize.",
    "The element polonium is named after Poland.",
    "What did she discover? Radium and polonium!",
]


def long_doc(n: int = 30) -> str:
    # raw text with messy whitespace and a paragraph break, as files really look
    body = "  ".join(SENTENCES[i % len(SENTENCES)] + f" Fact {i} is here." for i in range(n))
    return body[: len(body) // 2] + "\n\n\t" + body[len(body) // 2 :] + "\n"


def cfg(tmp_path: Path, *sources: CorpusSource, **kw: object) -> CorpusConfig:
    base: dict[str, object] = dict(sources=list(sources), max_tokens=30, num_passages=1000, min_words=3, seed=0)
    base.update(kw)
    return CorpusConfig(**base)


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


DOCS = [
    {"doc": "a1", "body": "Short   note about\tBerlin and   the Spree river."},
    {"doc": "a2", "body": long_doc()},
    {"doc": "a3", "body": "Short note about Berlin and the Spree river."},  # same text after normalisation
    {"doc": "a4", "body": "ok then"},  # near-empty
]


# ------------------------------------------------------------------------------------------ readers


def test_jsonl_with_fields_and_ids(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", DOCS)
    ps = sample_passages(cfg(tmp_path, CorpusSource(path=str(path), text_field="body", id_field="doc")), words)
    st = ps.stats
    assert st["documents"] == 4 and st["duplicates"] == 1 and st["near_empty"] == 1
    assert st["passages_before_dedupe"] == st["eligible"] + st["duplicates"] + st["near_empty"]
    assert st["sampled"] == len(ps.passages) == st["eligible"]
    assert ps.passages[0].text == "Short note about Berlin and the Spree river."
    assert ps.passages[0].source == f"{path}:a1#0"
    assert ps.passages[1].source == f"{path}:a2#0"


def test_txt_file_and_folder(tmp_path: Path) -> None:
    folder = tmp_path / "txt"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("Second document, about Lisbon and the Tagus river.\n")
    (folder / "sub" / "a.txt").write_text(long_doc(8))
    (folder / ".hidden.txt").write_text("hidden files are skipped entirely, not read at all")
    (folder / "notes.md").write_text("other suffixes are skipped")
    ps = sample_passages(cfg(tmp_path, CorpusSource(path=str(folder))), words)
    assert ps.stats["documents"] == 2
    assert ps.passages[0].text == "Second document, about Lisbon and the Tagus river."  # sorted: b.txt < sub/a.txt
    one = sample_passages(cfg(tmp_path, CorpusSource(path=str(folder / "b.txt"))), words)
    assert [p.text for p in one.passages] == ["Second document, about Lisbon and the Tagus river."]


def test_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"body": [d["body"] for d in DOCS], "doc": [d["doc"] for d in DOCS], "extra": [1, 2, 3, 4]})
    pq.write_table(table, tmp_path / "c.parquet")
    src = CorpusSource(path=str(tmp_path / "c.parquet"), text_field="body", id_field="doc")
    from_parquet = sample_passages(cfg(tmp_path, src), words)
    from_jsonl = sample_passages(
        cfg(
            tmp_path, CorpusSource(path=str(write_jsonl(tmp_path / "c.jsonl", DOCS)), text_field="body", id_field="doc")
        ),
        words,
    )
    assert [p.text for p in from_parquet.passages] == [p.text for p in from_jsonl.passages]
    assert from_parquet.stats == from_jsonl.stats
    bad = CorpusSource(path=str(tmp_path / "c.parquet"), text_field="nope")
    with pytest.raises(ValueError, match=r"c\.parquet: no column 'nope'"):
        sample_passages(cfg(tmp_path, bad), words)


def test_hf_saved_folder_and_local_dataset(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = {"text": [d["body"] for d in DOCS], "id": [d["doc"] for d in DOCS]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "saved_dict"))
    raw = tmp_path / "raw"
    raw.mkdir()
    write_jsonl(raw / "part-0.jsonl", [{"text": d["body"], "id": d["doc"]} for d in DOCS])
    expected = [
        p.text for p in sample_passages(cfg(tmp_path, CorpusSource(path=str(raw / "part-0.jsonl"))), words).passages
    ]
    for ref, streaming in ((tmp_path / "saved", True), (tmp_path / "saved_dict", False), (raw, True), (raw, False)):
        src = CorpusSource(hf_dataset=str(ref), id_field="id", streaming=streaming)
        ps = sample_passages(cfg(tmp_path, src), words)
        assert [p.text for p in ps.passages] == expected, (ref, streaming)
        assert ps.passages[0].source.endswith(":a1#0")
    with pytest.raises(ValueError, match="no split 'test'"):
        sample_passages(cfg(tmp_path, CorpusSource(hf_dataset=str(tmp_path / "saved_dict"), split="test")), words)


def test_bad_input_names_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine document with enough words"}\n{"text": "oops"\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: invalid JSON"):
        sample_passages(cfg(tmp_path, CorpusSource(path=str(path))), words)
    path.write_text('{"text": "fine document with enough words"}\n\n{"body": "x"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: no key 'text'"):
        sample_passages(cfg(tmp_path, CorpusSource(path=str(path))), words)
    path.write_text('{"text": 42}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: field 'text' must be a string"):
        sample_passages(cfg(tmp_path, CorpusSource(path=str(path))), words)
    path.write_text('{"text": "has no id here at all"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: no key 'doc_id' \(id_field\)"):
        sample_passages(cfg(tmp_path, CorpusSource(path=str(path), id_field="doc_id")), words)
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"x\.csv: unsupported file type"):
        sample_passages(cfg(tmp_path, CorpusSource(path=str(tmp_path / "x.csv"))), words)
    with pytest.raises(ValueError, match="path does not exist"):
        CorpusSource(path=str(tmp_path / "missing.jsonl"))


def test_max_documents(tmp_path: Path) -> None:
    rows = [{"text": f"document number {i} has a few words"} for i in range(10)]
    src = CorpusSource(path=str(write_jsonl(tmp_path / "c.jsonl", rows)), max_documents=4)
    assert sample_passages(cfg(tmp_path, src), words).stats["documents"] == 4


# ------------------------------------------------------------------------------------------ cutting


def test_document_that_fits_stays_one_passage() -> None:
    text = "  A  document\n\nthat fits.\tIt has two sentences.  "
    assert split_document(text, 20, words) == ["A document that fits. It has two sentences."]
    assert normalize_whitespace(text) == "A document that fits. It has two sentences."
    assert split_document(" \n\t ", 20, words) == []


def test_long_document_cut_on_sentence_boundaries() -> None:
    text = long_doc(30)
    norm = normalize_whitespace(text)
    sentences = [s for s in SENTENCES] + [f"Fact {i} is here." for i in range(30)]
    for limit in (12, 30, 64):
        pieces = split_document(text, limit, words)
        assert len(pieces) > 1
        assert all(words(p) <= limit for p in pieces)
        assert " ".join(pieces) == norm  # nothing lost, nothing reordered
        for p in pieces:
            assert p in norm
            assert p.endswith((".", "!", "?")), p  # every cut falls between sentences
            assert any(p.startswith(s.split()[0]) for s in sentences), p


def test_passages_are_as_long_as_allowed() -> None:
    pieces = split_document(long_doc(30), 30, words)
    splitter = SentenceSplitter()
    for a, b in zip(pieces, pieces[1:]):
        first_of_next = splitter._segments(b)[0].strip()
        assert words(a + " " + first_of_next) > 30


def test_over_long_sentence_cut_between_words_and_long_word_between_chars() -> None:
    sentence = " ".join(f"w{i}" for i in range(50)) + "."
    pieces = split_document("Short one. " + sentence + " Tail here.", 8, words)
    assert pieces[0] == "Short one."
    assert all(1 <= words(p) <= 8 for p in pieces)
    assert " ".join(pieces) == "Short one. " + sentence + " Tail here."
    chars = lambda s: len(s)  # noqa: E731 - a character "tokenizer"
    pieces = split_document("x" * 95, 20, chars)
    assert [len(p) for p in pieces] == [20, 20, 20, 20, 15]


def test_regex_fallback_splitter() -> None:
    splitter = SentenceSplitter()
    splitter._sbd = None  # as if pysbd were not installed
    text = 'He left. "Who knows?" she asked. 3 cats stayed! the end. The end'
    assert [text[s:e] for s, e in splitter.spans(text)] == [
        "He left.",
        '"Who knows?" she asked.',
        "3 cats stayed! the end.",
        "The end",
    ]


def test_long_paragraph_is_windowed_not_lost() -> None:
    """pysbd is quadratic; long paragraphs are fed in windows without dropping or cutting sentences."""
    text = " ".join(f"Sentence number {i} is about Rome." for i in range(800))  # ~28k chars, one paragraph
    spans = SentenceSplitter().spans(text)
    assert len(spans) == 800 and all(text[s:e].startswith("Sentence") and text[s:e].endswith(".") for s, e in spans)


# --------------------------------------------------------------------------------------- sampling


def corpus_file(tmp_path: Path, n: int = 60) -> Path:
    rows = [{"text": f"Passage {i} tells how {SENTENCES[i % 6]} and more {i}", "id": f"d{i}"} for i in range(n)]
    return write_jsonl(tmp_path / "many.jsonl", rows)


def test_seeded_sampling_reproducible(tmp_path: Path) -> None:
    src = CorpusSource(path=str(corpus_file(tmp_path)))
    a = sample_passages(cfg(tmp_path, src, num_passages=10, seed=7), words)
    b = sample_passages(cfg(tmp_path, src, num_passages=10, seed=7), words)
    c = sample_passages(cfg(tmp_path, src, num_passages=10, seed=8), words)
    assert a == b
    assert len(a.passages) == 10 and a.stats["sampled"] == 10 and a.stats["eligible"] == 60
    assert [p.id for p in a.passages] != [p.id for p in c.passages]
    order = [int(p.text.split()[1]) for p in a.passages]
    assert order == sorted(order)  # returned in corpus order
    all_ = sample_passages(cfg(tmp_path, src, num_passages=1000), words)
    assert len(all_.passages) == 60


def test_sampling_is_roughly_uniform(tmp_path: Path) -> None:
    src = CorpusSource(path=str(corpus_file(tmp_path)))
    hits = [0] * 60
    for seed in range(100):
        for p in sample_passages(cfg(tmp_path, src, num_passages=10, seed=seed), words).passages:
            hits[int(p.text.split()[1])] += 1
    assert sum(hits[:30]) == pytest.approx(sum(hits[30:]), rel=0.25)  # the reservoir does not favour either end


def test_stable_content_ids(tmp_path: Path) -> None:
    path = corpus_file(tmp_path)
    a = sample_passages(cfg(tmp_path, CorpusSource(path=str(path))), words)
    for p in a.passages:
        assert p.id == "p-" + hashlib.sha1(p.text.encode("utf-8")).hexdigest()[:16]
    lines = path.read_text().splitlines()
    reordered = tmp_path / "reordered.jsonl"
    reordered.write_text("\n".join(reversed(lines)) + "\n")
    b = sample_passages(cfg(tmp_path, CorpusSource(path=str(reordered))), words)
    assert {p.id: p.text for p in a.passages} == {p.id: p.text for p in b.passages}
    assert len({p.id for p in a.passages}) == len(a.passages)
