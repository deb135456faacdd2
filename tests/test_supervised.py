"""Human-annotated sentences -> passages for supervised mixing, and the dataset line in their conversations."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from distill_ner.ner.config import SFTConfig, SupervisedSource
from distill_ner.ner.conversations import build_sft_dataset, query_messages, query_prompt_ids, render_text
from distill_ner.ner.data import NERSentence
from distill_ner.ner.supervised import load_supervised, to_annotated_passages
from distill_ner.records import AnnotatedPassage, AnnotationSet, Entity

CONLL = """-DOCSTART- -X- O O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
met VBD B-VP O
Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
in IN B-PP O
Brussels NNP B-NP B-LOC
. . O O

It PRP B-NP O
rained VBD B-VP O
. . O O
"""


def test_converter_takes_gold_spans_as_entities_and_absent_types_as_negatives():
    sentences = [
        NERSentence(
            id="s1",
            text="Peter Blackburn met Peter Blackburn in Brussels .",
            gold={"person": ["Peter Blackburn", "Peter Blackburn"], "location": ["Brussels"], "organization": []},
        ),
        NERSentence(id="s2", text="It rained .", gold={"person": [], "location": [], "organization": []}),
    ]
    passages = to_annotated_passages(sentences, "conll2003")
    assert passages[0] == AnnotatedPassage(
        id="conll2003/s1",
        text="Peter Blackburn met Peter Blackburn in Brussels .",
        entities=[Entity(text="Peter Blackburn", type="person"), Entity(text="Brussels", type="location")],
        negatives=["organization"],
    )
    assert passages[1].entities == [] and passages[1].negatives == ["person", "location", "organization"]


def test_converter_accepts_any_record_of_that_shape_and_an_explicit_type_list():
    @dataclass
    class Sentence:  # e.g. a record that lists only the types present
        id: str
        text: str
        gold: dict[str, list[str]] = field(default_factory=dict)

    passages = to_annotated_passages(
        [Sentence("a", "Ada wrote code .", {"person": ["Ada"]})], "mini", types=["person", "programming language"]
    )
    assert passages[0].negatives == ["programming language"]
    assert passages[0].entities == [Entity(text="Ada", type="person")]
    # without `types`, the types are those the sentences mention
    assert to_annotated_passages([Sentence("a", "x", {"person": []})], "mini")[0].negatives == ["person"]


def test_load_supervised_conll_with_label_map(tmp_path: Path):
    path = tmp_path / "train.conll"
    path.write_text(CONLL, encoding="utf-8")
    passages = load_supervised(
        SupervisedSource(name="conll2003", path=str(path), format="conll", label_map="conll2003")
    )
    assert [p.text for p in passages] == [
        "EU rejects German call .",
        "Peter Blackburn met Peter Blackburn in Brussels .",
        "It rained .",
    ]
    first, second, third = passages
    # MISC is mapped to null: neither an entity nor a negative
    assert first.entities == [Entity(text="EU", type="organization")]
    assert set(first.negatives) == {"person", "location"}
    assert second.entities == [Entity(text="Peter Blackburn", type="person"), Entity(text="Brussels", type="location")]
    assert second.negatives == ["organization"]
    assert third.entities == [] and set(third.negatives) == {"person", "location", "organization"}
    assert all(p.id.startswith("conll2003/") for p in passages)

    sample = load_supervised(
        SupervisedSource(name="conll2003", path=str(path), format="conll", label_map="conll2003", max_examples=2)
    )
    assert len(sample) == 2 and all(p in passages for p in sample)
    assert sample == load_supervised(
        SupervisedSource(name="conll2003", path=str(path), format="conll", label_map="conll2003", max_examples=2)
    )


def test_load_supervised_uniner_json(tmp_path: Path):
    entries = [
        {
            "id": "0",
            "conversations": [
                {"from": "human", "value": "Text: Ada wrote Python code ."},
                {"from": "gpt", "value": "I've read this text."},
                {"from": "human", "value": "What describes programming language in the text?"},
                {"from": "gpt", "value": '["Python"]'},
                {"from": "human", "value": "What describes person in the text?"},
                {"from": "gpt", "value": '["Ada"]'},
                {"from": "human", "value": "What describes country in the text?"},
                {"from": "gpt", "value": "[]"},
            ],
        },
    ]
    path = tmp_path / "mini.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    (passage,) = load_supervised(SupervisedSource(name="mini", path=str(path), format="uniner"))
    assert passage.text == "Ada wrote Python code ."
    assert {(e.text, e.type) for e in passage.entities} == {("Python", "programming language"), ("Ada", "person")}
    assert passage.negatives == ["country"]


def test_supervised_conversations_carry_the_dataset_line_and_queries_do_not(tokenizer):
    sentences = [
        NERSentence(id=f"s{i}", text=f"EU rejects call {i} .", gold={"organization": ["EU"], "person": []})
        for i in range(4)
    ]
    mixed = [("conll2003", to_annotated_passages(sentences, "conll2003"))]
    teacher = AnnotationSet(
        passages=[
            AnnotatedPassage(id=f"t{i}", text=f"Paris {i}", entities=[Entity(text="Paris", type="city")])
            for i in range(4)
        ]
    )
    dataset = build_sft_dataset(teacher, SFTConfig(seed=1), tokenizer, mixed)
    supervised = [c for c in dataset.conversations if c.dataset == "conll2003"]
    assert len(supervised) == 4
    for conversation in supervised:
        assert conversation.turns[1].content.startswith("Dataset: conll2003 \n Text: EU rejects call")
        answers = dict(
            zip((t.content for t in conversation.turns[3::2]), (t.content for t in conversation.turns[4::2]))
        )
        assert answers == {
            "What describes organization in the text?": '["EU"]',
            "What describes person in the text?": "[]",
        }
    assert all(c.turns[1].content.startswith("Text: ") for c in dataset.conversations if c.dataset is None)

    # zero-shot inference leaves the line out; asking for it renders it exactly like training
    prompt = render_text(tokenizer, query_messages("EU rejects call 0 .", "person"), add_generation_prompt=True)
    assert "Dataset:" not in prompt and "Text: EU rejects call 0 ." in prompt
    named = tokenizer.decode(query_prompt_ids(tokenizer, "EU rejects call 0 .", "person", dataset="conll2003"))
    assert "Dataset: conll2003 \n Text: EU rejects call 0 ." in named
    row = next(r for r in dataset.rows if r.conversation_id == "conll2003/s0")
    assert tokenizer.decode(row.input_ids).startswith(named[: named.index("What describes")])


def test_load_supervised_bio_jsonl_and_format_errors(tmp_path: Path):
    path = tmp_path / "mini.jsonl"
    rows = [
        {
            "tokens": ["Ada", "Lovelace", "wrote", "in", "London", "."],
            "ner_tags": ["B-PER", "I-PER", "O", "O", "B-LOC", "O"],
        },
        {"tokens": ["It", "rained", "."], "ner_tags": ["O", "O", "O"]},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    passages = load_supervised(SupervisedSource(name="mini", path=str(path), format="bio", label_map="conll2003"))
    assert passages[0].entities == [Entity(text="Ada Lovelace", type="person"), Entity(text="London", type="location")]
    assert passages[0].negatives == []  # only the types the file uses are the dataset's types
    assert set(passages[1].negatives) == {"person", "location"}

    with pytest.raises(ValueError, match="give `path`"):
        load_supervised(SupervisedSource(name="hub", hf_dataset="someone/conll", format="conll"))


def test_training_on_a_benchmark_file_is_refused():
    from distill_ner.ner.benchmarks import benchmark_paths
    from distill_ner.ner.config import SupervisedSource
    from distill_ner.ner.supervised import load_supervised

    benchmark = benchmark_paths(["distill_ner_demo"])[0]
    source = SupervisedSource(name="leak", path=benchmark, format="uniner")
    with pytest.raises(ValueError, match="registered benchmark"):
        load_supervised(source)
