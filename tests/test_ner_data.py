"""Loaders for UniNER JSON, BIO datasets and CoNLL files; label maps; sentence splitting."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from distill_ner.ner.data import (
    expand_label,
    list_label_maps,
    load_bio,
    load_conll,
    load_label_map,
    load_uniner_json,
    sentence_from_bio,
    spans_from_bio,
    split_bio,
    split_sentences,
)

CONLL_NAMES = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def _entry(i: int, text: str, typ: str, answer: str) -> dict:
    return {
        "id": f"t_{i}",
        "conversations": [
            {"from": "human", "value": f"Text: {text}"},
            {"from": "gpt", "value": "I've read this text."},
            {"from": "human", "value": f"What describes {typ} in the text?"},
            {"from": "gpt", "value": answer},
        ],
    }


def _write(path: Path, entries: list) -> Path:
    path.write_text(json.dumps(entries, indent=2), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# UniNER JSON


def test_uniner_groups_queries_by_sentence(tmp_path: Path) -> None:
    entries = [
        _entry(0, "Ada Lovelace met Babbage in London .", "person", '["Ada Lovelace", "Babbage", "Babbage"]'),
        _entry(1, "Ada Lovelace met Babbage in London .", "location", '["London"]'),
        _entry(2, "Python is a language .", "person", "[]"),
        _entry(3, "Ada Lovelace met Babbage in London .", "date", "[]"),
        _entry(4, "Python is a language .", "programming language", '["Python"]'),
        # the same sentence again (CrossNER_AI has one): a second sentence, not merged
        _entry(5, "Ada Lovelace met Babbage in London .", "person", '["Babbage"]'),
    ]
    corpus = load_uniner_json(_write(tmp_path / "b.json", entries))
    assert corpus.name == "b"
    assert [s.id for s in corpus.sentences] == ["t_0", "t_2", "t_5"]
    first = corpus.sentences[0]
    assert first.gold == {"person": ["Ada Lovelace", "Babbage"], "location": ["London"], "date": []}
    assert first.query_ids == {"person": "t_0", "location": "t_1", "date": "t_3"}
    assert corpus.types == ["person", "location", "date", "programming language"]
    assert corpus.sentences[2].gold == {"person": ["Babbage"]}
    assert corpus.stats["queries"] == 6
    assert "entry 0 (line 2)" in first.source


def test_uniner_jsonl_and_label_map(tmp_path: Path) -> None:
    path = tmp_path / "b.jsonl"
    rows = [_entry(0, "Bob works at ACME .", "PER", '["Bob"]'), _entry(1, "Bob works at ACME .", "MISC", "[]")]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    corpus = load_uniner_json(path, label_map="conll2003")
    assert corpus.sentences[0].gold == {"person": ["Bob"]}
    assert corpus.dropped == {"MISC": 1}


def test_uniner_invalid_json_names_file_entry_and_line(tmp_path: Path) -> None:
    good = json.dumps([_entry(0, "A b .", "person", "[]")], indent=2)
    path = tmp_path / "broken.json"
    path.write_text(good[:-2] + ',\n  {"id": "t_1", "conversations": [}\n]', encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.json: invalid JSON in entry 1 \(line 23, column 35\)"):
        load_uniner_json(path)
    path.write_text('{"not": "a list"}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.json: expected a JSON list"):
        load_uniner_json(path)


def test_uniner_missing_field_names_entry_and_line(tmp_path: Path) -> None:
    entries = [_entry(0, "A b .", "person", "[]"), {"id": "t_1"}]
    with pytest.raises(ValueError, match=r"m\.json entry 1 \(line 23\): missing field 'conversations'"):
        load_uniner_json(_write(tmp_path / "m.json", entries))


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ('"Paris"', "is not a JSON list"),
        ('{"a": 1}', "is not a JSON list"),
        ("Paris", "is not valid JSON"),
        ('["Paris", 3]', "non-string item"),
    ],
)
def test_uniner_bad_gold(tmp_path: Path, answer: str, message: str) -> None:
    entries = [_entry(0, "A b .", "person", "[]"), _entry(1, "A b .", "location", answer)]
    with pytest.raises(ValueError, match=rf"g\.json entry 1 \(line \d+\): gold answer .* {message}"):
        load_uniner_json(_write(tmp_path / "g.json", entries))


def test_uniner_wrong_shape(tmp_path: Path) -> None:
    bad_question = _entry(0, "A b .", "person", "[]")
    bad_question["conversations"][2]["value"] = "List the persons."
    with pytest.raises(ValueError, match=r"entry 0 .*is not 'What describes <type> in the text\?'"):
        load_uniner_json(_write(tmp_path / "q.json", [bad_question]))
    short = _entry(0, "A b .", "person", "[]")
    short["conversations"] = short["conversations"][:2]
    with pytest.raises(ValueError, match=r"entry 0 .*'conversations' must be a list"):
        load_uniner_json(_write(tmp_path / "s.json", [short]))
    no_text = _entry(0, "A b .", "person", "[]")
    no_text["conversations"][0]["value"] = "A b ."
    with pytest.raises(ValueError, match=r"must start with 'Text: '"):
        load_uniner_json(_write(tmp_path / "t.json", [no_text]))
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        load_uniner_json(tmp_path / "nowhere.json")


# ---------------------------------------------------------------------------------------------
# BIO datasets


def _conll_features() -> datasets.Features:
    return datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=CONLL_NAMES)),
        }
    )


def _save(tmp_path: Path, tokens: list[list[str]], tags: list[list[str]], name: str = "ds") -> Path:
    ids = [[CONLL_NAMES.index(t) for t in row] for row in tags]
    ds = datasets.Dataset.from_dict({"tokens": tokens, "ner_tags": ids}, features=_conll_features())
    out = tmp_path / name
    ds.save_to_disk(str(out))
    return out


def test_bio_classlabel_with_label_map(tmp_path: Path) -> None:
    folder = _save(
        tmp_path,
        [["John", "Smith", "lives", "in", "Paris", "."], ["The", "Euro", "rose", "at", "Acme", "Corp"]],
        [["B-PER", "I-PER", "O", "O", "B-LOC", "O"], ["O", "B-MISC", "O", "O", "B-ORG", "I-ORG"]],
    )
    corpus = load_bio(str(folder), label_map="conll2003", name="tiny")
    assert corpus.types == ["person", "location", "organization"]  # label-map order, MISC dropped
    first, second = corpus.sentences
    assert first.text == "John Smith lives in Paris ."
    assert first.gold == {"person": ["John Smith"], "location": ["Paris"], "organization": []}
    assert first.tags == ["B-person", "I-person", "O", "O", "B-location", "O"]
    assert second.tags == ["O", "O", "O", "O", "B-organization", "I-organization"]
    assert corpus.dropped == {"MISC": 1}
    assert first.id == "tiny-0" and "tiny row 0" in first.source


def test_bio_without_label_map_keeps_raw_types_in_classlabel_order(tmp_path: Path) -> None:
    folder = _save(tmp_path, [["Paris", "and", "Bob"]], [["B-LOC", "O", "B-PER"]])
    corpus = load_bio(folder)
    assert corpus.types == ["PER", "ORG", "LOC", "MISC"]
    assert corpus.sentences[0].gold["LOC"] == ["Paris"]


def test_bio_i_after_o_names_dataset_row_and_label(tmp_path: Path) -> None:
    folder = _save(
        tmp_path, [["a", "b"], ["Bob", "Smith", "x", "York"]], [["O", "O"], ["B-PER", "I-PER", "O", "I-LOC"]], "iob"
    )
    with pytest.raises(ValueError, match=r"iob row 1, token 3: label 'I-LOC' follows O"):
        load_bio(str(folder), label_map="conll2003")
    folder = _save(tmp_path, [["Bob", "York"]], [["B-PER", "I-LOC"]], "iob_type")
    with pytest.raises(ValueError, match=r"iob_type row 0, token 1: label 'I-LOC' follows a 'PER' token"):
        load_bio(str(folder))
    # IOB1 input is accepted when declared, and rewritten to IOB2
    corpus = load_bio(str(folder), scheme="iob1")
    assert corpus.sentences[0].tags == ["B-PER", "B-LOC"]


def test_bio_unknown_label_names_dataset_row_and_label(tmp_path: Path) -> None:
    folder = _save(tmp_path, [["Bob"], ["Paris"]], [["B-PER"], ["B-LOC"]], "unk")
    with pytest.raises(ValueError, match=r"unk row 1, token 0: unknown label 'B-LOC'"):
        load_bio(str(folder), label_map={"PER": "person"})


def test_bio_missing_column(tmp_path: Path) -> None:
    folder = _save(tmp_path, [["Bob"]], [["B-PER"]], "cols")
    with pytest.raises(ValueError, match=r"cols.*missing column 'labels'; columns: tokens, ner_tags"):
        load_bio(str(folder), tags_column="labels")


def test_bio_string_tags_from_jsonl_and_json(tmp_path: Path) -> None:
    rows = [
        {"words": ["Ann", "met", "Bo", "."], "tags": ["B-person", "O", "B-person", "O"]},
        {"words": ["Rome", "!"], "tags": ["I-place", "O"]},
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    expected = r"rows\.jsonl row 1 \(line 2\), token 0: label 'I-place' follows the start"
    with pytest.raises(ValueError, match=expected):
        load_bio(str(path), tokens_column="words", tags_column="tags")
    rows[1]["tags"] = ["B-place", "O"]
    path.write_text(json.dumps(rows), encoding="utf-8")
    other = tmp_path / "rows.json"
    path.rename(other)
    corpus = load_bio(str(other), tokens_column="words", tags_column="tags")
    assert corpus.types == ["person", "place"]
    assert corpus.sentences[0].gold == {"person": ["Ann", "Bo"], "place": []}


def test_bio_parquet_keeps_classlabel_and_datasetdict_split(tmp_path: Path) -> None:
    ds = datasets.Dataset.from_dict({"tokens": [["Bob", "runs"]], "ner_tags": [[1, 0]]}, features=_conll_features())
    ds.to_parquet(str(tmp_path / "d.parquet"))
    assert load_bio(str(tmp_path / "d.parquet")).sentences[0].gold["PER"] == ["Bob"]
    datasets.DatasetDict({"validation": ds}).save_to_disk(str(tmp_path / "dd"))
    assert load_bio(str(tmp_path / "dd"), split="validation").sentences[0].tags == ["B-PER", "O"]
    with pytest.raises(ValueError, match="no split 'test'; splits: validation"):
        load_bio(str(tmp_path / "dd"))


def test_bio_integer_tags_without_names(tmp_path: Path) -> None:
    path = tmp_path / "ints.jsonl"
    path.write_text(json.dumps({"tokens": ["Bob"], "ner_tags": [1]}), encoding="utf-8")
    with pytest.raises(ValueError, match="integer tags but no label names"):
        load_bio(str(path))
    gold = load_bio(str(path), tag_names=CONLL_NAMES).sentences[0].gold
    assert gold == {"PER": ["Bob"], "ORG": [], "LOC": [], "MISC": []}  # declared types asked too
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        load_bio(str(tmp_path / "missing.parquet"))


def test_bio_document_rows_are_split_at_sentence_ends(tmp_path: Path) -> None:
    tokens = "Bob lives in St . Louis . He works for Acme Inc . now ! Why ? because .".split()
    tags = ["B-PER", "O", "O", "B-LOC", "I-LOC", "I-LOC", "O"]
    tags += ["O", "O", "O", "B-ORG", "I-ORG", "I-ORG", "O", "O", "O", "O", "O", "O"]
    folder = _save(tmp_path, [tokens], [tags], "doc")
    corpus = load_bio(str(folder), split_documents=True, name="doc")
    texts = [s.text for s in corpus.sentences]
    # not after "St ." (inside the entity), not after "Inc ." (inside, and "now" is lowercase),
    # not after "Why ?" ("because" is lowercase)
    assert texts == ["Bob lives in St . Louis .", "He works for Acme Inc . now !", "Why ? because ."]
    assert corpus.sentences[0].gold["LOC"] == ["St . Louis"]
    assert [s.id for s in corpus.sentences] == ["doc-0.0", "doc-0.1", "doc-0.2"]
    assert corpus.stats["documents_split"] == 1
    assert split_bio(["A", ".", "B"], ["O", "O", "O"]) == [(0, 2), (2, 3)]


# ---------------------------------------------------------------------------------------------
# CoNLL files


def test_conll_file(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_text(
        "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\n\n"
        "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n",
        encoding="utf-8",
    )
    corpus = load_conll(path, "conll2003")
    assert [s.text for s in corpus.sentences] == ["EU rejects German", "Peter Blackburn"]
    assert corpus.sentences[1].gold == {"person": ["Peter Blackburn"], "organization": []}
    assert corpus.types == ["person", "organization"]
    assert corpus.dropped == {"MISC": 1}
    assert corpus.sentences[0].source.endswith("train.txt:3")


def test_conll_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("Peter B-PER\n\nin O\nNew I-LOC\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.txt:4: label 'I-LOC' follows O"):
        load_conll(path)
    path.write_text("Peter B-PER\nParis B-GPE\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.txt:2: unknown label 'B-GPE'"):
        load_conll(path, "conll2003")
    path.write_text("Peter B-PER\nlonely\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.txt:2: expected a token and a tag"):
        load_conll(path)
    path.write_text("Peter X-PER\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.txt:1: invalid label 'X-PER'"):
        load_conll(path)


# ---------------------------------------------------------------------------------------------
# Label maps and helpers


def test_shipped_label_maps() -> None:
    names = list_label_maps()
    assert {"conll2003", "crossner_ai", "ontonotes5", "mit_restaurant", "mit_movie", "wnut17"} <= set(names)
    for name in names:
        mapping = load_label_map(name)
        assert all(v is None or (isinstance(v, str) and v == v.strip() and v) for v in mapping.values())
    assert load_label_map("crossner_ai")["programlang"] == "programming language"
    assert load_label_map("mit_restaurant")["Restaurant_Name"] == "restaurant name"
    assert expand_label("PER", load_label_map("conll2003")) == "person"
    assert expand_label("MISC", load_label_map("conll2003")) is None
    with pytest.raises(ValueError, match="unknown label 'GPE'"):
        expand_label("GPE", load_label_map("conll2003"))
    with pytest.raises(ValueError, match="unknown label map 'nope'; known: .*conll2003"):
        load_label_map("nope")


def test_label_map_from_path_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"A": "alpha", "B": 3}), encoding="utf-8")
    with pytest.raises(ValueError, match="label 'B' must map to a non-empty string or null"):
        load_label_map(path)
    path.write_text(json.dumps({"A": "alpha"}), encoding="utf-8")
    assert load_label_map(str(path)) == {"A": "alpha"}


def test_spans_and_sentence_from_bio() -> None:
    tokens = ["New", "York", "and", "New", "York", "Times"]
    tags = ["B-location", "I-location", "O", "B-organization", "I-organization", "I-organization"]
    assert spans_from_bio(tokens, tags) == [("location", 0, 2), ("organization", 3, 6)]
    assert spans_from_bio(["a", "b"], ["B-x", "B-x"]) == [("x", 0, 1), ("x", 1, 2)]
    with pytest.raises(ValueError, match="token 1: 'I-y' does not continue"):
        spans_from_bio(["a", "b"], ["B-x", "I-y"])
    sentence = sentence_from_bio("s", tokens, tags, ["person", "location"])
    assert sentence.gold == {"person": [], "location": ["New York"], "organization": ["New York Times"]}
    assert sentence.text == "New York and New York Times"


def test_split_sentences_keeps_spans_whole() -> None:
    text = "Dr. Smith went to Washington. He met Mr. Jones! Was it fun? Yes."
    assert split_sentences(text) == ["Dr. Smith went to Washington.", "He met Mr. Jones!", "Was it fun?", "Yes."]
    # an entity running over a sentence end keeps the two sentences together
    start = text.index("Washington")
    assert split_sentences(text, [(start, start + len("Washington. He"))]) == [
        "Dr. Smith went to Washington. He met Mr. Jones!",
        "Was it fun?",
        "Yes.",
    ]
    assert split_sentences("") == []
