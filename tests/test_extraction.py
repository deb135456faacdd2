"""The extraction (NuExtract) recipe's pure parts: prompts, templates, the verbatim filter, negatives,
the tree metric, loaders and the benchmark file. Fast; no model, no ZenML."""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from pathlib import Path

import pytest

from distill_ner.extraction import prompts
from distill_ner.extraction.data import ExtractionExample, ExtractionSet, load_examples
from distill_ner.extraction.filters import (
    Verbatim,
    check_filling,
    check_filling_answer,
    check_template_answer,
    normalise_value,
)
from distill_ner.extraction.metric import (
    TreeScore,
    _assign_dp,
    _assign_greedy,
    assign,
    kind_scores,
    levenshtein,
    score_document,
    similarity,
    tree_score,
)
from distill_ner.extraction.negatives import add_negatives, blank_missing, remove_sentences
from distill_ner.extraction.templates import (
    TemplateError,
    conformance_errors,
    conforms,
    depth,
    empty_fill,
    parse_json_object,
    skeleton,
    string_leaves,
    validate_template,
)

ROOT = Path(__file__).resolve().parents[1]
SEED = Path("/work/shared/seeds/000_62b32ce1965c8a51.txt")
BENCHMARK = ROOT / "data/extraction/benchmark.jsonl"
DEMO_WRITTEN = ROOT / "data/extraction/demo/written.jsonl"


# --------------------------------------------------------------------------------------------- prompts


@pytest.mark.skipif(not SEED.exists(), reason="seed document not present")
def test_teacher_prompts_are_the_seed_verbatim():
    blocks = re.findall(r"```\n(.*?)\n```", SEED.read_text(encoding="utf-8"), re.S)
    assert prompts.TEMPLATE_GENERATION_PROMPT == blocks[0]
    assert prompts.EXTRACTION_PROMPT == blocks[1]


def test_template_generation_messages():
    text = "Invoice {7} from *<few-shot examples>* Ltd."
    [message] = prompts.template_generation_messages(text)
    assert message["role"] == "user"
    content = message["content"]
    assert content.startswith(
        "!!!START Context!!!\n\nInvoice {7} from *<few-shot examples>* Ltd.\n\n!!!END Context!!!\n\nGoal: Generate"
    )
    # zero-shot: the placeholder and its blank line are gone, the text's own copy of it is untouched
    assert content.endswith("with a clear relationship between fields.")
    with_examples = prompts.template_generation_messages("T", few_shot="Example schema: {}")[0]["content"]
    assert with_examples.endswith("between fields.\n\nExample schema: {}")


def test_extraction_messages_hold_text_and_indented_schema():
    template = {"name": "", "items": [{"sku": ""}]}
    content = prompts.extraction_messages("Order *<schema>* by Ann", template)[0]["content"]
    assert "!!!START Context!!!\n\nOrder *<schema>* by Ann\n\n!!!END Context!!!" in content
    assert content.endswith(
        'Information to extract:\n\n{\n    "name": "",\n    "items": [\n        {\n            "sku": ""\n        }\n    ]\n}'
    )
    assert "THE STRING SHOULD BE PRESENT EXACTLY AS IT IS IN THE CONTEXT DOCUMENT. NO PARAPHRASING ALLOWED." in content


def test_student_prompt_formats():
    t = {"a": ""}
    assert (
        prompts.student_prompt(t, "Hi", indent=None)
        == '<|input|>\n### Template:\n{"a":""}\n### Text:\nHi\n\n<|output|>'
    )
    assert (
        prompts.student_prompt(t, "Hi", fmt="1.0", indent=None)
        == '<|input|>\n### Template:\n{"a":""}\n### Text:\nHi\n<|output|>\n'
    )
    assert prompts.student_prompt(t, "Hi", fmt="1.0", examples=[{"a": "x"}, {"a": "y"}], indent=None) == (
        '<|input|>\n### Template:\n{"a":""}\n### Example:\n{"a":"x"}\n### Example:\n{"a":"y"}\n### Text:\nHi\n<|output|>\n'
    )
    with pytest.raises(ValueError, match="no examples"):
        prompts.student_prompt(t, "Hi", examples=[{"a": "x"}])
    messages = prompts.student_messages(t, "Hi", {"a": "Łódź"}, indent=None)
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["content"] == '{"a":"Łódź"}'  # UTF-8 kept, no \u escapes


# ------------------------------------------------------------------------------------------- templates


GOOD = {
    "title": "",
    "tags": [],
    "author": {"name": "", "links": []},
    "sections": [{"heading": "", "notes": [{"text": ""}]}],
}


def test_valid_template_and_depth():
    assert validate_template(GOOD) is GOOD
    assert depth(GOOD) == 3  # root -> sections[] -> notes[]
    with pytest.raises(TemplateError, match="deeper than 2"):
        validate_template(GOOD, max_depth=2)


@pytest.mark.parametrize(
    "bad, where",
    [
        ([], "<root>: expected an object"),
        ({}, "<root>: empty object"),
        ({"a": "x"}, 'a: a template leaf is ""'),
        ({"a": 1}, "a: expected"),
        ({"a": True}, "a: expected"),
        ({"a": None}, "a: expected"),
        ({"a": [""]}, "a: expected"),
        ({"a": [{"b": ""}, {"b": ""}]}, "a: expected"),
        ({"a": [{}]}, "a[]: empty object"),
        ({"a": {"b": {}}}, "a.b: empty object"),
        ({" ": ""}, "empty key"),
    ],
)
def test_invalid_templates_name_the_path(bad, where):
    with pytest.raises(TemplateError, match=re.escape(where)):
        validate_template(bad)


def test_skeleton_blanks_sample_values_but_rejects_non_strings():
    template, changed = skeleton(
        {"name": "John", "tags": ["a", "b"], "items": [{"x": "1"}, {"y": "2"}], "addr": {"c": ""}}
    )
    assert template == {"name": "", "tags": [], "items": [{"x": "", "y": ""}], "addr": {"c": ""}}
    assert changed
    assert skeleton(GOOD) == (GOOD, False)
    with pytest.raises(TemplateError, match="only strings"):
        skeleton({"age": 42})
    with pytest.raises(TemplateError, match="only strings or only objects"):
        skeleton({"mix": ["a", {"b": ""}]})


def test_parse_json_object_finds_the_object():
    assert parse_json_object('Sure! ```json\n{"a": "{b}"}\n``` done') == {"a": "{b}"}
    assert parse_json_object('prefix {"a": ""}<|end-output|> trailing {') == {"a": ""}
    with pytest.raises(ValueError, match="duplicate key 'a'"):
        parse_json_object('{"a": "", "a": ""}')
    with pytest.raises(ValueError, match="no JSON object"):
        parse_json_object("[1, 2] and nothing else")
    # student answers: duplicates keep the last value; a truncated object is not rescued by an inner one
    assert parse_json_object('{"a": "x", "a": "y"}', strict=False) == {"a": "y"}
    truncated = '{"items": [{"name": "chair"}, {"name": "de'
    for strict in (True, False):
        with pytest.raises(ValueError):
            parse_json_object(truncated, strict=strict)
    assert parse_json_object('Fields like {name} go in: {"name": "", "note": "a } b"}') == {"name": "", "note": "a } b"}


def test_empty_fill_and_conformance():
    empty = empty_fill(GOOD)
    assert empty == {"title": "", "tags": [], "author": {"name": "", "links": []}, "sections": []}
    assert conforms(empty, GOOD)
    filled = {
        "title": "T",
        "tags": ["x"],
        "author": {"name": "N", "links": []},
        "sections": [{"heading": "H", "notes": [{"text": "n"}, {"text": ""}]}],
    }
    assert conforms(filled, GOOD)
    wrong = {
        "title": ["T"],
        "tags": "x",
        "author": {"name": "N"},
        "sections": [{"heading": "H", "notes": [{"text": 1}]}],
        "extra": "",
    }
    assert sorted(conformance_errors(wrong, GOOD)) == sorted(
        [
            "author.links: missing key",
            "extra: key not in the template",
            "title: expected a string, got list",
            "tags: expected a list of strings",
            "sections[0].notes[0].text: expected a string, got int",
        ]
    )
    assert list(string_leaves(filled)) == [
        ("title", "T"),
        ("tags[0]", "x"),
        ("author.name", "N"),
        ("sections[0].heading", "H"),
        ("sections[0].notes[0].text", "n"),
    ]


# ------------------------------------------------------------------------------------- verbatim filter


NFD_CAFE = "Cafe\u0301"  # "e" + COMBINING ACUTE ACCENT
NFC_CAFE = "Caf\u00e9"


@pytest.mark.parametrize(
    "passage, value, found",
    [
        # unicode: canonical equivalents match both ways; the passage's own spelling comes back
        (f"Lunch at {NFD_CAFE} Flore.", f"{NFC_CAFE} Flore", f"{NFD_CAFE} Flore"),
        (f"Lunch at {NFC_CAFE} Flore.", f"{NFD_CAFE} Flore", f"{NFC_CAFE} Flore"),
        # Hangul: conjoining jamo compose to a syllable in NFC (no combining marks involved)
        ("서울 \u1100\u1161\u11b7 shop", "서울 감", "서울 \u1100\u1161\u11b7"),
        # compatibility characters are NOT folded: a ligature is a different character
        ("the \ufb01nal offer", "the final offer", None),
        ("Ｈ２Ｏ bottles", "H2O", None),
        # whitespace: runs collapse on both sides, ends of the value are trimmed
        ("Acme  Corp\nLtd.", "Acme Corp Ltd", "Acme  Corp\nLtd"),
        ("Acme Corp Ltd.", "Acme\tCorp\n  Ltd", "Acme Corp Ltd"),
        ("price:\u00a0$40", "price: $40", "price:\u00a0$40"),
        ("Acme Corp", "  Acme Corp ", "Acme Corp"),
        # case, punctuation and quotes must match
        ("Acme Corp", "acme corp", None),
        ('He said "yes".', "He said “yes”", None),
        ("AcmeCorp", "Acme Corp", None),
        # substring semantics
        ("a 12-month term", "12", "12"),
    ],
)
def test_verbatim_comparison(passage, value, found):
    assert Verbatim(passage).locate(value) == found


def test_normalise_value():
    assert normalise_value(f" {NFD_CAFE}\n\n de\tFlore ") == f"{NFC_CAFE} de Flore"
    assert unicodedata.is_normalized("NFC", normalise_value(NFD_CAFE))


def test_check_filling_reasons_and_rewrite():
    template = {"vendor": "", "items": [{"name": ""}], "tags": []}
    passage = f"Bill from {NFD_CAFE} Ltd for two  chairs."
    kept = check_filling(
        {"vendor": f"{NFC_CAFE} Ltd", "items": [{"name": "two chairs"}], "tags": []}, template, passage
    )
    assert kept.reason == "" and kept.value == {
        "vendor": f"{NFD_CAFE} Ltd",
        "items": [{"name": "two  chairs"}],
        "tags": [],
    }
    assert kept.counts["values_rewritten"] == 2
    missing = check_filling({"vendor": "Café Ltd", "items": [{"name": "tables"}], "tags": ["x"]}, template, passage)
    assert missing.value is None and missing.reason == "not_in_text"
    assert missing.counts == Counter(not_in_text=1, values_not_in_text=2, values_rewritten=1)
    assert "items[0].name: 'tables'" in missing.detail
    shape = check_filling({"vendor": "Ltd", "items": []}, template, passage)
    assert shape.reason == "template_mismatch" and "tags: missing key" in shape.detail
    assert check_filling_answer("I could not find it.", template, passage).reason == "unparseable"


def test_check_template_answer():
    ok = check_template_answer('```json\n{"name": "Ann", "orders": [{"id": "1"}]}\n```')
    assert ok.value == {"name": "", "orders": [{"id": ""}]} and ok.counts["sample_values_blanked"] == 1
    assert check_template_answer("no schema here").reason == "unparseable"
    assert check_template_answer('{"age": 3}').reason == "invalid_template"
    assert check_template_answer('{"a": {"b": {"c": ""}}}', max_depth=2).reason == "invalid_template"


# ------------------------------------------------------------------------------------------- negatives


def test_remove_sentences_keeps_the_rest_verbatim():
    text = "One a. Two b. Three c. Four d."
    spans = [(0, 6), (7, 13), (14, 22), (23, 30)]
    assert remove_sentences(text, spans, 1, 2) == "One a. Four d."
    assert remove_sentences(text, spans, 0, 1) == "Two b. Three c. Four d."
    assert remove_sentences(text, spans, 2, 2) == "One a. Two b."


def test_blank_missing():
    filled = {
        "vendor": {"name": "Acme", "city": "Oslo"},
        "tags": ["red", "blue"],
        "items": [
            {"name": "chair", "price": "$40"},
            {"name": "desk", "price": "$90"},
            {"name": "lamp", "price": "$15"},
        ],
        "note": "",
    }
    counts: Counter[str] = Counter()
    shortened = "Acme sold a red chair. The lamp cost $15."
    assert blank_missing(filled, Verbatim(shortened), counts) == {
        "vendor": {"name": "Acme", "city": ""},
        "tags": ["red"],
        "items": [{"name": "chair", "price": ""}, {"name": "lamp", "price": "$15"}],
        "note": "",
    }
    # Oslo, blue, $40, desk, $90 blanked; the blue tag and the desk item removed from their lists
    assert counts == Counter(values_blanked=5, list_items_removed=2)


def _example(i: int, text: str) -> ExtractionExample:
    return ExtractionExample(
        id=f"d{i}", text=text, template={"city": "", "people": []}, filled={"city": "Oslo", "people": ["Ann", "Bo"]}
    )


def test_add_negatives_is_seeded_and_consistent():
    text = "Ann lives in Oslo. She works at a bakery. Bo visits on Sundays. They cook together. It is quiet there."
    data = ExtractionSet(examples=[_example(i, text) for i in range(200)] + [_example(999, "Ann and Bo in Oslo.")])
    out = add_negatives(data, fraction=0.5, min_drop=0.3, max_drop=0.6, seed=0)
    assert out == add_negatives(data, fraction=0.5, min_drop=0.3, max_drop=0.6, seed=0)
    negatives = [ex for ex in out.examples if ex.shortened]
    assert 70 <= len(negatives) <= 130  # about half of 200
    assert all(ex.id.endswith("~cut") for ex in negatives)
    sentences = re.split(r"(?<=\.) ", text)
    for ex in negatives:
        kept = re.split(r"(?<=\.) ", ex.text)
        assert 1 <= len(sentences) - len(kept) <= 3  # 30-60 % of 5 sentences, at least one, never all
        # one contiguous block removed: what is left is a prefix plus a suffix of the original sentences
        assert any(kept == sentences[:i] + sentences[len(sentences) - len(kept) + i :] for i in range(len(kept) + 1))
        # every kept value occurs in the shortened text, every blanked one does not
        values = [v for _, v in string_leaves(ex.filled)]
        for value in ["Oslo", "Ann", "Bo"]:
            assert (value in ex.text) == (value in values)
    assert out.examples[-1].id == "d999"  # one sentence: never shortened
    assert out.stats["negatives.negatives"] == len(negatives)
    assert add_negatives(data, fraction=0.0, min_drop=0.3, max_drop=0.6, seed=0).examples == data.examples


# ---------------------------------------------------------------------------------------------- metric


def test_levenshtein_and_similarity():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3 and levenshtein("abc", "abc") == 0
    assert similarity("sitting", "kitten") == pytest.approx(1 - 3 / 7)
    assert similarity("sitting", "kitten", "exact") == 0.0
    assert similarity("", "") == 1.0 and similarity("x", "") == 0.0


def test_flat_object_missing_and_extra_keys():
    gold = {"a": "Oslo", "b": "Ann", "c": ""}
    assert tree_score(gold, gold).score == 1.0
    # a missing key scores 0 (even one whose gold is empty); mean over the 3 gold keys
    assert tree_score({"a": "Oslo", "b": "Ann"}, gold).score == pytest.approx(2 / 3)
    # an extra key adds a zero to the mean: 3 right out of 4
    assert tree_score({**gold, "d": "x"}, gold).score == pytest.approx(3 / 4)
    # edit similarity on a leaf: "Osl" vs "Oslo" = 1 - 1/4
    assert tree_score({"a": "Osl", "b": "Ann", "c": ""}, gold).score == pytest.approx((0.75 + 1 + 1) / 3)
    assert tree_score({"a": "Osl", "b": "Ann", "c": ""}, gold, "exact").score == pytest.approx(2 / 3)


def test_empty_versus_absent_versus_null():
    gold = {"city": "", "tags": []}
    assert tree_score({"city": "", "tags": []}, gold).score == 1.0  # empty answered empty
    assert tree_score({}, gold).score == 0.0  # absent
    assert tree_score({"city": None, "tags": None}, gold).score == 0.0  # null counts as absent
    assert tree_score({"city": "Rome", "tags": ["x"]}, gold).score == 0.0  # invented values
    assert tree_score(None, gold).score == 0.0  # unparseable
    assert tree_score({}, {}).score == 1.0


def test_nested_objects_weigh_keys_not_leaves():
    gold = {"name": "Ann", "address": {"street": "Elm St", "city": "Oslo", "zip": "0150", "country": "Norway"}}
    pred = {"name": "Ann", "address": {"street": "Elm St", "city": "Oslo", "zip": "", "country": ""}}
    # address scores 2/4 = 0.5; the root is the mean of name (1) and address (0.5)
    assert tree_score(pred, gold).score == pytest.approx(0.75)
    assert tree_score({"name": "Ann", "address": "Elm St"}, gold).score == pytest.approx(0.5)  # wrong shape: 0


def test_lists_of_strings_are_matched_optimally():
    gold = {"tags": ["red", "green", "blue"]}
    assert tree_score({"tags": ["blue", "red", "green"]}, gold).score == 1.0  # order free
    assert tree_score({"tags": ["red"]}, gold).score == pytest.approx(1 / 3)  # two missing
    assert tree_score({"tags": ["red", "green", "blue", "pink"]}, gold).score == pytest.approx(3 / 4)  # one extra
    # "gren" pairs with "green" (1 - 1/5), not with "red"
    assert tree_score({"tags": ["gren", "red", "blue"]}, gold).score == pytest.approx((0.8 + 1 + 1) / 3)
    assert tree_score({"tags": []}, {"tags": []}).score == 1.0
    assert tree_score({"tags": ["x"]}, {"tags": []}).score == 0.0
    assert tree_score({"tags": []}, gold).score == 0.0


def test_lists_of_objects():
    gold = {"items": [{"name": "chair", "price": "$40"}, {"name": "desk", "price": "$90"}]}
    pred = {
        "items": [{"name": "desk", "price": "$90"}, {"name": "chair", "price": "$45"}, {"name": "lamp", "price": "$15"}]
    }
    # desk<->desk = 1; chair<->chair = (1 + (1 - 1/3)) / 2 = 5/6; lamp unpaired; divided by max(2, 3)
    assert tree_score(pred, gold).score == pytest.approx((1 + 5 / 6) / 3)
    assert tree_score(pred, gold, "exact").score == pytest.approx((1 + 0.5) / 3)
    # an element missing a key is paired, and scores its other keys
    assert tree_score({"items": [{"name": "chair"}, {"name": "desk", "price": "$90"}]}, gold).score == pytest.approx(
        (0.5 + 1) / 2
    )


def test_leaf_precision_recall():
    gold = {"a": "Oslo", "b": "", "tags": ["x", "y"]}
    pred = {"a": "Oslo", "b": "junk", "tags": ["x"], "extra": "z"}
    s = tree_score(pred, gold, "exact")
    # predicted non-empty strings: Oslo, junk, x, z = 4; gold: Oslo, x, y = 3; matched: Oslo, x
    assert (s.matched, s.n_pred, s.n_gold) == (2.0, 4, 3)
    assert s.score == pytest.approx((1 + 0 + 0.5) / 4)


def test_kind_scores_feed_the_gate():
    docs = [
        score_document("invoice", {"a": "x"}, {"a": "x"}),
        score_document("invoice", {"a": ""}, {"a": "x"}),
        score_document("memo", None, {"b": "y"}),
    ]
    per_kind = kind_scores(docs)
    assert per_kind["invoice"].tree_score == pytest.approx(0.5)
    assert per_kind["invoice"].leaf_precision == 1.0 and per_kind["invoice"].leaf_recall == pytest.approx(0.5)
    assert per_kind["invoice"].documents == 2
    memo = per_kind["memo"]
    assert memo.tree_score == 0.0 and memo.leaf_precision == 1.0 and memo.leaf_recall == 0.0


def test_assignment_fallbacks_agree_with_hungarian():
    import random

    rng = random.Random(0)
    for _ in range(200):
        rows, cols = rng.randint(1, 6), rng.randint(1, 6)
        matrix = [[rng.random() for _ in range(cols)] for _ in range(rows)]
        best = sum(matrix[i][j] for i, j in assign(matrix))
        assert sum(matrix[i][j] for i, j in _assign_dp(matrix)) == pytest.approx(best)
        greedy = _assign_greedy(matrix)
        assert len({i for i, _ in greedy}) == len(greedy) == min(rows, cols)


def test_tree_score_type():
    assert isinstance(tree_score({"a": ""}, {"a": ""}), TreeScore)
    with pytest.raises(TypeError):
        tree_score("x", 3)


# ---------------------------------------------------------------------------------------------- loaders


def test_loader_errors_name_file_and_line(tmp_path: Path):
    good = {"id": "a", "kind": "memo", "text": "Ann met Bo.", "template": {"who": []}, "gold": {"who": ["Ann", "Bo"]}}
    cases = {
        "not json": "bad.jsonl:2: invalid JSON",
        json.dumps({**good, "gold": {"who": ["Ann", "Cy"]}}): "bad.jsonl:2: who[1] = 'Cy' does not occur verbatim",
        json.dumps({**good, "gold": {"who": "Ann"}}): "bad.jsonl:2: filling does not follow the template",
        json.dumps({**good, "template": {"who": 1}}): "bad.jsonl:2: template: who: expected",
        json.dumps({**good, "colour": "red"}): "bad.jsonl:2: colour: Extra inputs are not permitted",
        json.dumps({k: v for k, v in good.items() if k != "gold"}): "bad.jsonl:2: give exactly one of",
    }
    for line, message in cases.items():
        path = tmp_path / "bad.jsonl"
        path.write_text(json.dumps(good) + "\n" + line + "\n", encoding="utf-8")
        with pytest.raises(ValueError, match=re.escape(message)):
            load_examples(path)
    path.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        load_examples(path)


def test_benchmark_file():
    docs = load_examples(BENCHMARK)  # validates every line: template, shape, verbatim gold
    kinds = Counter(d.kind for d in docs)
    assert len(docs) >= 60 and len(kinds) >= 5 and min(kinds.values()) >= 5
    for d in docs:
        assert 40 <= len(d.text.split()) <= 150, d.id
        assert d.text == " ".join(d.text.split()), f"{d.id}: whitespace not normalised like corpus passages"
    templates = {json.dumps(d.template) for d in docs}
    assert any(depth(json.loads(t)) >= 2 for t in templates)
    assert any("[{" in t.replace(" ", "") for t in templates) and any(": []" in t for t in templates)
    assert sum(1 for d in docs if any(v in ("", []) for v in _all_values(d.filled))) >= len(docs) // 3, (
        "too few empty fields"
    )


def _all_values(value):
    if isinstance(value, dict):
        for v in value.values():
            yield v
            yield from _all_values(v)
    elif isinstance(value, list):
        for v in value:
            yield from _all_values(v)


@pytest.mark.skipif(not DEMO_WRITTEN.exists(), reason="demo training data not written yet")
def test_benchmark_shares_no_text_with_the_demo_training_data():
    demo = load_examples(DEMO_WRITTEN)
    bench = load_examples(BENCHMARK)

    def shingles(text: str) -> set[str]:
        words = text.lower().split()
        return {" ".join(words[i : i + 8]) for i in range(len(words) - 7)}

    demo_shingles = set().union(*(shingles(d.text) for d in demo))
    leaked = [b.id for b in bench if shingles(b.text) & demo_shingles]
    assert not leaked, f"benchmark documents sharing an 8-word run with the demo data: {leaked}"
