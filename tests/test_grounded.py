"""Grounded decoding's pieces without a model: the passage's suffix automaton, the answer language, token texts."""

from __future__ import annotations

import json
import random

import pytest

from distill_ner.engine.grounded import GroundedVocab, SubstringListConstraint, SuffixAutomaton, token_texts

PASSAGE = 'Marie Curie said "radium" in Paris \\ Warsaw [1].'


def test_suffix_automaton_is_exactly_the_substrings():
    rng = random.Random(0)
    for _ in range(50):
        text = "".join(rng.choice("abc") for _ in range(rng.randint(0, 30)))
        sam = SuffixAutomaton(text)
        for i in range(len(text)):
            for j in range(i, len(text) + 1):
                assert text[i:j] in sam
        for _ in range(50):
            probe = "".join(rng.choice("abcd") for _ in range(rng.randint(1, 8)))
            assert (probe in sam) == (probe in text), (text, probe)


@pytest.fixture(scope="module")
def vocab(tokenizer) -> GroundedVocab:
    return GroundedVocab(tokenizer, [tokenizer.convert_tokens_to_ids("<|im_end|>")])


@pytest.mark.parametrize(
    "answer, ok",
    [
        ("[]", True),
        (" [ ]", True),
        ('["Marie Curie", "Paris"]', True),
        ('["Marie Curie","Paris" ]', True),
        ('["arie Cu"]', True),  # any substring, not only whole words: the metric decides what is right
        ('["\\"radium\\""]', True),  # the passage's quotes, escaped
        ('["Paris \\\\ Warsaw"]', True),
        ('["Paris \\/ Warsaw"]', False),  # "/" is not in the passage
        ('["London"]', False),
        ('["paris"]', False),  # case counts
        ('[""]', False),  # an empty string names nothing
        ('["Warsaw [1"]', True),
        ('["Warsaw [1]"]', False),  # `]` inside a string would cut the metric's `\[(.*?)\]` match
        ('["Paris"] and more', False),
        ('["Paris"]]', False),
        ('["Paris",]', False),
        ('["Paris"  , "Marie"]', False),  # at most one blank in a gap
        ('["Paris\\nWarsaw"]', False),
        ("Paris", False),
    ],
)
def test_language(vocab: GroundedVocab, answer: str, ok: bool):
    assert SubstringListConstraint(vocab, PASSAGE).accepts(answer) is ok
    if ok:
        assert all(item in PASSAGE for item in json.loads(answer))


def test_token_texts_concatenate_to_the_decoded_answer(tokenizer):
    texts = token_texts(tokenizer)
    for s in ['["Marie Curie", "Paris"]', ' [ "Warsaw" ]', '["\\"radium\\""]', "Łódź and Kraków"]:
        ids = tokenizer(s, add_special_tokens=False)["input_ids"]
        if any("\ufffd" in texts[i] for i in ids):
            continue  # a character split over byte tokens: never allowed, so never concatenated
        assert "".join(texts[i] for i in ids) == tokenizer.decode(ids, skip_special_tokens=True) == s


def test_allowed_ids_agree_with_allows(tokenizer, vocab: GroundedVocab):
    """The trie walk finds exactly the ids that the one-token check accepts, in every state of an answer."""
    stop = vocab.stop_ids[0]
    constraint = SubstringListConstraint(vocab, PASSAGE)
    answer = tokenizer('["Marie Curie", "\\"radium\\""]', add_special_tokens=False)["input_ids"]
    for step, token in enumerate([*answer, stop]):
        for remaining in (1, 3, 100):
            allowed = set(constraint.allowed_ids(remaining))
            assert allowed == {i for i in range(len(tokenizer)) if constraint.allows(i, remaining)}
        assert constraint.allows(token, 100), (step, vocab.texts[token])
        assert (stop in constraint.allowed_ids(100)) == (step == len(answer))
        constraint.advance(token)


def test_budget_always_leaves_room_to_close(tokenizer, vocab: GroundedVocab):
    """Whatever allowed token is taken, the list can still be closed in the tokens left."""
    rng = random.Random(0)
    for budget in range(2, 12):
        for _ in range(20):
            constraint = SubstringListConstraint(vocab, PASSAGE)
            text = ""
            for remaining in range(budget, 0, -1):
                allowed = constraint.allowed_ids(remaining)
                assert allowed, (budget, text)
                token = rng.choice(allowed)
                constraint.advance(token)
                if token in vocab.stop_ids:
                    break
                text += vocab.texts[token]
            assert constraint.complete and constraint.accepts(text), (budget, text)


def test_a_repeated_string_ends_the_list(tokenizer, vocab: GroundedVocab):
    """A student looping on one span (`["Paris", "Paris", ...`) is stopped at the first repeat: the list must
    close after it, so the loop costs two strings, not max_new_tokens. Distinct strings go on as before."""

    def feed(answer: str) -> SubstringListConstraint:
        constraint = SubstringListConstraint(vocab, PASSAGE)
        for token in tokenizer(answer, add_special_tokens=False)["input_ids"]:
            assert constraint.allows(token, 100), (answer, tokenizer.decode([token]))
            constraint.advance(token)
        return constraint

    comma = tokenizer(",", add_special_tokens=False)["input_ids"][0]
    close = tokenizer("]", add_special_tokens=False)["input_ids"][0]
    repeated = feed('["Paris", "Paris"')
    assert not repeated.allows(comma, 100) and repeated.allows(close, 100)
    assert comma not in repeated.allowed_ids(100) and close in repeated.allowed_ids(100)
    distinct = feed('["Paris", "Marie Curie"')
    assert distinct.allows(comma, 100) and comma in distinct.allowed_ids(100)
    # the engine's state for a fresh passage is not affected by another row's repeat (per-row flag)
    assert feed('["Paris"').allows(comma, 100)
