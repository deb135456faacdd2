"""Mentions with offsets and scores from texts of any length: segmentation, scoring of answered strings,
locating every occurrence, and the Predictor end to end on the tiny model."""

from __future__ import annotations

import math
import random

import pytest

from distill_ner.engine.common import Generation
from distill_ner.ner.mentions import Mention, locate, merge, occurrences, scored_items, segments

WORDS = "the of river valley council report harbour engine meadow signal archive bridge".split()


def long_text(n_chars: int, seed: int = 0) -> tuple[str, str, str]:
    """(text, first sentence, last sentence): varied filler sentences between two planted ones."""
    rng = random.Random(seed)
    first = "Marie Curie was born in Warsaw."
    last = "Ada Lovelace died in London."
    parts = [first]
    size = len(first)
    i = 0
    while size < n_chars - len(last) - 80:
        i += 1
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14)))
        sentence = f"Entry {i} mentions {words}."
        # a line break now and then, as documents have
        parts.append(("\n" if i % 17 == 0 else " ") + sentence)
        size += len(sentence) + 1
    parts.append(" " + last)
    return "".join(parts), first, last


def test_segments_cover_a_100k_text_in_order_within_the_limit() -> None:
    text, first, last = long_text(100_000)
    assert len(text) >= 99_000
    ranges = segments(text, max_chars=1000)
    assert text[slice(*ranges[0])] == first and text[slice(*ranges[-1])] == last
    assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:]))
    assert all(0 < e - s <= 1000 and text[s:e] == text[s:e].strip() for s, e in ranges)
    # nothing but whitespace lies outside the segments
    covered = set()
    for s, e in ranges:
        covered.update(range(s, e))
    assert all(text[i].isspace() for i in range(len(text)) if i not in covered)


def test_a_sentence_longer_than_the_limit_is_cut_at_spaces() -> None:
    text = "Start " + " ".join(f"word{i}" for i in range(400)) + " end"  # one 3,000-character sentence
    ranges = segments(text, max_chars=200)
    assert len(ranges) > 10 and all(e - s <= 200 for s, e in ranges)
    assert " ".join(text[s:e] for s, e in ranges) == text
    blob = "x" * 450  # no space at all: cut anywhere
    assert [e - s for s, e in segments(blob, max_chars=200)] == [200, 200, 50]


def test_scores_are_the_probability_of_the_tokens_that_spell_each_string(tokenizer) -> None:
    answer = '["Warsaw", "Paris"]'
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    logprobs = [-0.1 * (k + 1) for k in range(len(ids))]
    generation = Generation(token_ids=ids, stopped=True, text=tokenizer.decode(ids), token_logprobs=logprobs)
    scored = dict(scored_items(generation, tokenizer))
    assert list(scored) == ["Warsaw", "Paris"]
    ends, expected = [], {}
    for k in range(1, len(ids) + 1):
        ends.append(len(tokenizer.decode(ids[:k])))
    starts = [0, *ends[:-1]]
    for item in ("Warsaw", "Paris"):
        lo = answer.index(f'"{item}"')
        hi = lo + len(item) + 2
        expected[item] = math.exp(sum(lp for s, e, lp in zip(starts, ends, logprobs) if s < hi and e > lo))
    assert scored == pytest.approx(expected)
    assert 0 < scored["Paris"] < scored["Warsaw"] < 1  # later tokens were given lower log-probabilities here
    # a backend without log-probabilities: strings still come back, scored 1
    assert scored_items(Generation(token_ids=ids, stopped=True, text=answer), tokenizer) == [
        ("Warsaw", 1.0),
        ("Paris", 1.0),
    ]


def test_every_occurrence_is_located_word_bounded_in_text_coordinates() -> None:
    text = "Intro. Paris and Parisians love Paris. Done."
    start, end = 7, 38  # the middle sentence
    found = locate(text, start, end, "location", [("Paris", 0.9), ("paris", 0.5), ("Lyon", 0.8)])
    assert [(m.start, m.end, m.text) for m in found] == [(7, 12, "Paris"), (32, 37, "Paris")] * 2
    assert all(text[m.start : m.end] == m.text for m in found)
    merged = merge(found)
    assert [(m.start, m.score) for m in merged] == [(7, 0.9), (32, 0.9)]  # one per span, best score kept
    # a string that is only part of a word (grounded decoding may answer one) is found where it is
    assert occurrences("arisi", "Parisians") == [(1, 6)]
    # spaces a grounded answer carries are not part of the mention
    assert [m.text for m in locate("born in Warsaw.", 0, 15, "location", [(" Warsaw", 1.0)])] == ["Warsaw"]


def test_a_higher_threshold_never_returns_more_mentions() -> None:
    text = "Anna met Bob and Carl in Rome."
    items = [("Anna", 0.9), ("Bob", 0.4), ("Carl", 0.05), ("Rome", 0.6)]
    counts = [len(locate(text, 0, len(text), "x", items, threshold)) for threshold in (0, 0.05, 0.1, 0.5, 0.95, 1)]
    assert counts == sorted(counts, reverse=True) and counts[0] == 4 and counts[-1] == 0


def test_mention_as_dict_is_the_served_record() -> None:
    assert Mention("Warsaw", "location", 24, 30, 0.5).as_dict() == {
        "text": "Warsaw",
        "type": "location",
        "start": 24,
        "end": 30,
        "score": 0.5,
    }


def test_predictor_mentions_on_a_long_text_with_the_tiny_model(tiny_student) -> None:
    """Grounded (the default): every mention lies in the text at its offsets, scores in [0, 1], every
    sentence asked once per type, a repeated sentence asked once."""
    import torch

    from distill_ner.models import load_model, load_tokenizer
    from distill_ner.ner.inference import NEREngine, Predictor

    torch.manual_seed(0)
    model = load_model(str(tiny_student))
    engine = NEREngine.from_model(model, load_tokenizer(str(tiny_student)), max_new_tokens=10, batch_size=32)
    predictor = Predictor(engine=engine, surface_forms=True)
    text, _, _ = long_text(6_000, seed=1)
    text = text + " " + text.split(". ", 1)[0] + "."  # the first sentence again at the end
    (found,) = predictor.extract([text], ["person", "location"])
    n_sentences = len(segments(text))
    assert engine.last_stats.queries == 2 * (n_sentences - 1)
    assert found.mentions, "the tiny model answers some spans under grounded decoding"
    assert all(text[m.start : m.end] == m.text and 0.0 <= m.score <= 1.0 for m in found.mentions)
    assert [(m.start, m.end) for m in found.mentions] == sorted((m.start, m.end) for m in found.mentions)
    assert set(found.grouped) == {"person", "location"}
    assert all(entity in text for strings in found.grouped.values() for entity in strings)
    counts = [len(predictor.extract([text], ["person"], threshold=t)[0].mentions) for t in (0.0, 1e-9, 1e-6, 1.0)]
    assert counts == sorted(counts, reverse=True)


def test_on_the_demo_benchmark_every_mention_is_in_its_text_at_its_offsets(tiny_student) -> None:
    """Served as by default (grounded): no mention is absent from its text, every offset pair spells it."""
    from distill_ner.ner.benchmarks import load_benchmark
    from distill_ner.ner.inference import Predictor

    benchmark = load_benchmark("distill_ner_demo", max_sentences=40)
    predictor = Predictor(str(tiny_student), surface_forms=True, max_new_tokens=12, backend="transformers")
    texts = [s.text for s in benchmark.sentences]
    found = predictor.extract(texts, benchmark.types)
    mentions = [(text, m) for text, f in zip(texts, found) for m in f.mentions]
    assert len(mentions) > 20
    assert all(text[m.start : m.end] == m.text and m.text and 0.0 <= m.score <= 1.0 for text, m in mentions)
