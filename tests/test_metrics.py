"""The UniNER metric against an independent implementation of RECIPE.md's rules, and the span metric."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from distill_ner.ner.benchmarks import load_benchmark
from distill_ner.ner.data import NERSentence, sentence_from_bio
from distill_ner.ner.metrics import (
    average,
    extract_items,
    normalize,
    parse_answer,
    span_report,
    span_scores,
    strings_to_tags,
    uniner_scores,
)
from distill_ner.records import Scores

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED = PROJECT_ROOT.parent / "shared" / "benchmarks" / "uniner"
SHARED_FILES = {"crossner_ai": SHARED / "CrossNER_AI.json", "mit_restaurant": SHARED / "mit-restaurant.json"}

# ---------------------------------------------------------------------------------------------
# Independent implementation, written from RECIPE.md's words (no regex for the answer, no
# str.translate, explicit word runs for the articles), to check ours against.

_PUNCTUATION = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def _ref_normalize(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    # a/an/the as whole words: a "word" is a maximal run of alphanumerics or "_" (what \b delimits)
    pieces: list[str] = []
    i = 0
    while i < len(s):
        if s[i].isalnum() or s[i] == "_":
            j = i
            while j < len(s) and (s[j].isalnum() or s[j] == "_"):
                j += 1
            word = s[i:j]
            pieces.append(" " if word in ("a", "an", "the") else word)
            i = j
        else:
            pieces.append(s[i])
            i += 1
    return " ".join("".join(pieces).split())


def _ref_items(text: str) -> list:
    # "take the first [...] only if the text starts with [": up to the first "]", which the
    # reference's non-DOTALL pattern only reaches when no line break comes before it
    if not text.startswith("["):
        return []
    close = text.find("]")
    if close < 0 or "\n" in text[:close]:
        return []
    try:
        value = json.loads(text[: close + 1])
    except json.JSONDecodeError:
        return []
    items: list = []
    for item in value:
        if isinstance(item, str):
            key = _ref_normalize(item)
        elif isinstance(item, list) and all(isinstance(e, str) for e in item):
            key = tuple(_ref_normalize(e) for e in item)
        else:
            return []
        if key not in items:
            items.append(key)
    return items


def _ref_scores(predictions: list[str], golds: list[str]) -> tuple[float, float, float]:
    correct = n_pred = n_gold = 0
    for prediction, gold in zip(predictions, golds):
        gold_items = _ref_items(gold)
        for item in _ref_items(prediction):
            n_pred += 1
            if item in gold_items:
                correct += 1
        n_gold += len(gold_items)
    p = correct / (n_pred + 1e-10)
    r = correct / (n_gold + 1e-10)
    return p, r, 2 * p * r / (p + r + 1e-10)


def _perturb(gold: list[str], pool: list[str], rng: random.Random, kind: int) -> str:
    """A model-like answer derived from the gold list."""
    g = list(gold)
    if kind == 0:
        return json.dumps(g)
    if kind == 1:  # extra items
        return json.dumps(g + rng.sample(pool, 2))
    if kind == 2:  # missing items
        return json.dumps(g[1:])
    if kind == 3:  # case variants
        return json.dumps([x.upper() if rng.random() < 0.5 else x.title() for x in g])
    if kind == 4:  # punctuation and article variants
        articles, endings = ["The ", "a ", "AN ", "the\t"], [".", ",", "!", "'s", ""]
        return json.dumps([rng.choice(articles) + x + rng.choice(endings) for x in g])
    if kind == 5:
        return rng.choice(["none", "None", "There are no entities.", "", "N/A"])
    if kind == 6:  # text before the list
        return "Answer: " + json.dumps(g)
    if kind == 7:  # truncated JSON
        full = json.dumps(g + [rng.choice(pool)])
        return full[: rng.randint(1, len(full) - 1)]
    if kind == 8:  # leading whitespace: not stripped by the parser
        return " " + json.dumps(g)
    if kind == 9:  # multi-line JSON: the reference's pattern does not cross the line break
        return json.dumps(g + [rng.choice(pool)], indent=1)
    if kind == 10:  # trailing text after the list
        return json.dumps(g) + ' and also ["x"]'
    if kind == 11:  # duplicates
        return json.dumps(g + g + [x.lower() for x in g])
    if kind == 12:  # a non-string item spoils the whole answer
        return json.dumps(g + [rng.choice([3, None, True, {"a": 1}])])
    if kind == 13:  # nested lists ("all types in one query" style tuples)
        return json.dumps([[x, "person"] for x in g] or [["x"]])
    if kind == 14:  # a "]" inside a string cuts the JSON
        return json.dumps([x + "]" for x in g] or ["]"])
    if kind == 15:  # an object, not a list
        return json.dumps({"entities": g})
    if kind == 16:  # non-ASCII kept raw, curly quotes are not string.punctuation
        return json.dumps([x.replace("'", "\u2019") + " \u00d7" for x in g], ensure_ascii=False)
    if kind == 17:
        return "[]"
    if kind == 18:  # hyphen and underscore joins words after punctuation removal
        return json.dumps([x.replace(" ", rng.choice(["-", "_", "  "])) for x in g])
    if kind == 19:  # a JSON string with escapes
        return json.dumps([x + '\\"' for x in g])
    return json.dumps(rng.sample(pool, 3))


N_KINDS = 21


@pytest.fixture(scope="module")
def shared_queries() -> dict[str, tuple[list[dict], dict[str, list[str]]]]:
    """Per shared file: the raw entries and our loader's gold per query id."""
    out = {}
    for name, path in SHARED_FILES.items():
        entries = json.loads(path.read_text(encoding="utf-8"))
        bench = load_benchmark(name)
        ours = {s.query_ids[t]: s.gold[t] for s, t in bench.queries()}
        out[name] = (entries, ours)
    return out


@pytest.mark.parametrize("name", list(SHARED_FILES))
def test_acceptance_matches_independent_implementation(name: str, shared_queries) -> None:
    entries, ours = shared_queries[name]
    assert len(ours) == len(entries)  # every query of the file is kept by the loader
    pool = sorted({x for e in entries for x in json.loads(e["conversations"][-1]["value"])})
    rng = random.Random(20230806)
    predictions, golds_raw, golds_ours = [], [], []
    for i, entry in enumerate(entries):
        gold_raw = entry["conversations"][-1]["value"]
        predictions.append(_perturb(json.loads(gold_raw), pool, rng, i % N_KINDS if i % 3 else rng.randrange(N_KINDS)))
        golds_raw.append(gold_raw)
        golds_ours.append(ours[entry["id"]])

    expected = _ref_scores(predictions, golds_raw)
    got = uniner_scores(predictions, golds_ours)
    assert got.n_queries == len(entries)
    for ours_value, ref_value in zip((got.precision, got.recall, got.f1), expected):
        assert abs(ours_value - ref_value) < 1e-9
    assert 0.05 < got.f1 < 0.95  # the perturbations give a non-trivial score

    # the raw gold texts give the same numbers as the loader's gold lists
    again = uniner_scores(predictions, golds_raw)
    assert (again.precision, again.recall, again.f1) == (got.precision, got.recall, got.f1)

    # per perturbation kind too, so a rule that only one kind exercises cannot hide in the pool
    for kind in range(N_KINDS):
        idx = [i for i in range(len(entries)) if i % 3 and i % N_KINDS == kind]
        exp = _ref_scores([predictions[i] for i in idx], [golds_raw[i] for i in idx])
        sub = uniner_scores([predictions[i] for i in idx], [golds_ours[i] for i in idx])
        assert abs(sub.precision - exp[0]) < 1e-9 and abs(sub.recall - exp[1]) < 1e-9
        assert abs(sub.f1 - exp[2]) < 1e-9


def test_normalize_agrees_with_reference_on_all_gold_strings(shared_queries) -> None:
    for entries, _ in shared_queries.values():
        for entry in entries:
            for x in json.loads(entry["conversations"][-1]["value"]):
                for variant in (x, x.upper(), f"The {x}.", x.replace(" ", "-")):
                    assert normalize(variant) == _ref_normalize(variant)


def test_perfect_predictions_score_one(shared_queries) -> None:
    entries, ours = shared_queries["crossner_ai"]
    golds = [ours[e["id"]] for e in entries]
    s = uniner_scores([json.dumps(g) for g in golds], golds)
    assert s.precision == pytest.approx(1.0) and s.recall == pytest.approx(1.0) and s.f1 == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('["Paris", "the Louvre."]', ["paris", "louvre"]),
        ('["Paris", "paris", "PARIS!"]', ["paris"]),
        ('Answer: ["Paris"]', []),
        (' ["Paris"]', []),  # no strip: the reference strips before parsing, callers must too
        ("none", []),
        ('["Paris", "Rome"', []),
        ('[\n"Paris"\n]', []),  # no DOTALL in the reference pattern
        ('["Paris"]\nmore text', ["paris"]),
        ('["Paris"] ["Rome"]', ["paris"]),
        ('["a]b"]', []),  # cut at the first "]", invalid JSON
        ('["Paris", 3]', []),  # a non-string item spoils the whole answer
        ("[null]", []),
        ("[]", []),
        ('["An apple a day"]', ["apple day"]),
        ('["another theory"]', ["another theory"]),  # articles only as whole words
        ('["  New   York  "]', ["new york"]),
        ('["a\u00d7b", "the\u2019s"]', ["\u00d7b", "\u2019s"]),  # \b words: × and ’ are not punctuation
    ],
)
def test_parse_answer(text: str, expected: list[str]) -> None:
    assert parse_answer(text) == expected
    assert [x for x in parse_answer(text)] == [x for x in _ref_items(text)]


def test_nested_lists() -> None:
    # as text, the first "]" closes the inner list, so the JSON is always cut and invalid
    assert parse_answer('[["Paris", "location"]]') == []
    # as already extracted lists, inner lists count as items (the reference's tuples) that
    # match only an equal inner list, never a string
    s = uniner_scores([[["Paris", "location"], ["paris", "Location"]]], [["Paris"]])
    assert s.n_queries == 1 and s.precision == 0.0 and s.recall == 0.0
    s = uniner_scores([[["Paris", "location"]]], [[["paris", "Location"]]])
    assert s.precision == pytest.approx(1.0)


def test_extract_items_keeps_raw_strings() -> None:
    assert extract_items('["Paris", "Paris", "the Louvre"]') == ["Paris", "the Louvre"]
    assert extract_items('["Paris", 3]') == []
    assert extract_items("no list") == []


def test_uniner_scores_epsilon_and_empty() -> None:
    s = uniner_scores(["[]"], ["[]"])
    assert (s.precision, s.recall, s.f1) == (0.0, 0.0, 0.0)
    s = uniner_scores([["Paris", "Rome"]], [["paris"]])
    assert s.precision == 1 / (2 + 1e-10)
    assert s.recall == 1 / (1 + 1e-10)
    assert s.f1 == 2 * s.precision * s.recall / (s.precision + s.recall + 1e-10)
    with pytest.raises(ValueError, match="2 predictions but 1 gold"):
        uniner_scores(["[]", "[]"], ["[]"])


def test_average_is_macro() -> None:
    a = Scores(
        precision=1.0,
        recall=0.5,
        f1=0.6,
        n_queries=10,
        n_sentences=2,
        span_f1=0.5,
        span_precision=0.5,
        span_recall=0.5,
    )
    b = Scores(precision=0.0, recall=0.5, f1=0.2, n_queries=5, n_sentences=1)
    avg = average({"a": a, "b": b})
    assert (avg.precision, avg.recall, avg.f1) == (0.5, 0.5, pytest.approx(0.4))
    assert avg.n_queries == 15 and avg.n_sentences == 3
    assert avg.span_f1 is None  # not every dataset has span scores
    assert average({}).f1 == 0.0


def _bio_sentence() -> NERSentence:
    tokens = "Barack Obama visited New York and new york with Obama .".split()
    tags = ["B-person", "I-person", "O", "B-location", "I-location", "O"]
    tags += ["B-location", "I-location", "O", "B-person", "O"]
    return sentence_from_bio("s1", tokens, tags, ["person", "location", "date"])


def test_span_scores_maps_strings_to_first_unused_occurrence() -> None:
    sentence = _bio_sentence()
    assert sentence.gold == {"person": ["Barack Obama", "Obama"], "location": ["New York", "new york"], "date": []}
    perfect = {("s1", t): g for t, g in sentence.gold.items()}
    assert span_scores([sentence], perfect) == (1.0, 1.0, 1.0)
    # case-insensitive; the second "new york" goes to the second occurrence
    preds = {("s1", "location"): ["NEW YORK", "New York"], ("s1", "person"): ["Obama"]}
    p, r, f1 = span_scores([sentence], preds)
    # "Obama" lands on its first unused occurrence, inside "Barack Obama": a wrong span under strict
    assert (p, r) == (pytest.approx(2 / 3), pytest.approx(2 / 4))
    assert f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert "location" in span_report([sentence], preds)


def test_span_scores_raw_answers_and_unplaceable_strings() -> None:
    sentence = _bio_sentence()
    preds = {("s1", "person"): '["Barack Obama", "Michelle"]', ("s1", "location"): "none"}
    p, r, _ = span_scores([sentence], preds)
    assert p == 1.0 and r == pytest.approx(1 / 4)
    tags, missed = strings_to_tags(sentence.tokens, {"person": ["Michelle", "Barack Obama", "Obama Barack"]})
    assert missed == 2 and tags[:2] == ["B-person", "I-person"]


def test_span_scores_without_token_gold_uses_gold_strings() -> None:
    sentence = NERSentence(
        id="u1", text="I love Smith 's bakery in Paris .", gold={"person": ["Smith"], "location": ["Paris"]}
    )
    preds = {("u1", "person"): ["smith"], ("u1", "location"): ["Paris", "Smith's"]}
    tags, _ = strings_to_tags(sentence.text.split(), {"organization": ["Smith's bakery"]})
    assert tags[2:5] == ["B-organization", "I-organization", "I-organization"]  # whitespace-free fallback
    p, r, _ = span_scores([sentence], preds)
    assert (p, r) == (1.0, 1.0)  # "Smith's" finds no unused tokens left


def test_evaluate_load_offline_matches_uniner_scores() -> None:
    evaluate = pytest.importorskip("evaluate")
    metric = evaluate.load(str(PROJECT_ROOT / "distill_ner" / "ner" / "metric_module" / "uniner_ner"))
    predictions = ['["Paris", "Rome"]', "none", '["The Louvre"]']
    references = ['["paris"]', '["Berlin"]', '["louvre", "Seine"]']
    got = metric.compute(predictions=predictions, references=references)
    want = uniner_scores(predictions, references)
    assert got["precision"] == want.precision and got["recall"] == want.recall and got["f1"] == want.f1
    listed = metric.compute(predictions=[["Paris"], []], references=[["paris", "Rome"], []])
    assert listed["recall"] == pytest.approx(0.5)
