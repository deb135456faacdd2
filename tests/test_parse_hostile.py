"""The teacher-answer parser against hostile and careless answers: it never raises, it reads every
input in linear time up to MAX_ANSWER_CHARS, and well-formed answers still parse exactly.

Time bounds are generous correctness bounds (the machine may be shared); the figures themselves are
printed by benchmarks/bench_parse.py.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill_ner.config import TeacherConfig
from distill_ner.ner.annotate import annotate_passages, teacher_request
from distill_ner.ner.parse import MAX_ANSWER_CHARS, ParseResult, extract_list, parse_answer
from distill_ner.records import Passage
from distill_ner.teacher.cache import ResponseCache

PASSAGE = "Barack Obama met Angela Merkel in Berlin in 2009."
SOUP = "[](){}\"',: \\a1.-\nTN"
BOUND_S = 0.5  # per input; the old parser took 72 s on '[a ' * 16000 and never ended on '[' * 100000
# no example database in the working tree; the same examples on every run
FUZZ = settings(
    database=None, derandomize=True, deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow]
)


def timed_parse(answer: str) -> tuple[ParseResult, float]:
    start = time.perf_counter()
    result = parse_answer(answer, PASSAGE)
    return result, time.perf_counter() - start


def test_deep_brackets_are_an_unparseable_answer_not_an_error() -> None:
    for answer in ("[" * 1000, "(" * 1000, "{" * 1000, '["' * 1000, "[" * 1000 + "]" * 1000):
        result, _ = timed_parse(answer)
        assert not result.parsed and result.counts == {"unparseable": 1}


def test_the_answers_that_hung_the_old_parser_parse_quickly() -> None:
    for answer in ("[" * 100_000, "[a " * 66_000):
        result, seconds = timed_parse(answer)
        assert not result.parsed
        assert seconds < BOUND_S, f"{answer[:6]!r}...: {seconds:.2f} s"


def test_hostile_answers_parse_in_linear_time() -> None:
    # a linear parser reads each in about a second on an idle machine (benchmarks/bench_parse.py), ten on
    # one shared by a dozen jobs; a quadratic one takes hours at this length (72 s at 48,000 characters)
    hostile = {
        "[a ] * 50000": "[a ]" * 50_000,
        "[1, * 66000": "[1," * 66_000,
        "nested open-close": "[" * 100_000 + "]" * 100_000,
        "escaped quotes": '["\\' * 60_000,
        "quotes": "'" * MAX_ANSWER_CHARS,
        "1+ * 100000": "[1" + "+1" * 100_000 + "]",
        "- * 100000": "[" + "-" * 100_000 + "1]",
        "adjacent strings": '["' + '" "ab' * 40_000 + '", "t")]',
    }
    for name, answer in hostile.items():
        result, seconds = timed_parse(answer)
        assert isinstance(result, ParseResult), name
        assert seconds < 60, f"{name}: {seconds:.2f} s"


def test_ten_thousand_random_soups_each_parse_quickly() -> None:
    rng = random.Random(0)
    slowest = 0.0
    for _ in range(10_000):
        answer = "".join(rng.choice(SOUP) for _ in range(rng.randint(0, 300)))
        result, seconds = timed_parse(answer)
        assert isinstance(result, ParseResult) and result.parsed == (result.counts.get("unparseable", 0) == 0)
        slowest = max(slowest, seconds)
    assert slowest < BOUND_S, slowest


@FUZZ
@given(st.text(alphabet=SOUP, max_size=2000))
def test_bracket_quote_soup_never_raises(answer: str) -> None:
    result, seconds = timed_parse(answer)
    assert isinstance(result, ParseResult)
    assert seconds < BOUND_S


@FUZZ
@given(st.text(max_size=500))
def test_any_text_never_raises(answer: str) -> None:
    result, _ = timed_parse(answer)
    assert isinstance(result, ParseResult)


ITEMS = st.lists(st.tuples(st.text(max_size=20), st.text(max_size=20)), max_size=6)
PROSE = st.sampled_from(["", "Sure! Here they are:\n", "Answer: ", "It's this: ", "```python\n"])


@FUZZ
@given(ITEMS, PROSE)
def test_well_formed_answers_parse_exactly(items: list[tuple[str, str]], prose: str) -> None:
    # any strings at all (quotes, brackets, backslashes, any script) survive Python's and JSON's spelling
    suffix = "\n```" if prose.startswith("```") else ""
    assert extract_list(prose + repr(items) + suffix) == items
    assert extract_list(prose + json.dumps(items) + suffix) == [list(i) for i in items]
    assert extract_list(prose + json.dumps(items, ensure_ascii=False) + suffix) == [list(i) for i in items]
    if items:
        assert extract_list(", ".join(map(repr, items))) == items  # bare tuples, no brackets


def test_literal_forms_answers_use() -> None:
    assert extract_list('[("New " "York", "city")]') == [("New York", "city")]
    assert extract_list("[{'entity': 'Berlin', 'type': 'city'}]") == [{"entity": "Berlin", "type": "city"}]
    assert extract_list('{"entities": [["Berlin", "city"]]}') == [["Berlin", "city"]]
    assert extract_list('[["Berlin", null], ["x", true], ["y", -1.5e3]]') == [
        ["Berlin", None],
        ["x", True],
        ["y", -1500.0],
    ]
    assert extract_list('[("caf\\u00e9", "t"), ("a\\x41", "t"), ("\\ud83d\\ude00", "t")]') == [
        ("café", "t"),
        ("aA", "t"),
        ("😀", "t"),
    ]
    assert extract_list("[('O\\'Brien', 'person')]") == [("O'Brien", "person")]
    # a prose bracket whose quote swallows the real list does not hide it
    assert extract_list("[1 'note]: [('Berlin', 'city')]") == [("Berlin", "city")]
    for not_literal in ("[(1 + 1, 'x')]", "[f('x')]", "[('a', 'b') ('c', 'd')]", "[('a',, 'b')]"):
        assert extract_list(not_literal) is None, not_literal


def test_an_unparseable_cached_answer_is_a_counted_failure(tmp_path: Path) -> None:
    """A hostile answer already in the response cache fails its passage; the others are annotated."""
    config = TeacherConfig(cache_path=str(tmp_path / "cache.sqlite"), offline=True)
    passages = [Passage(id=f"p{i}", text=f"Berlin is a city number {i}.") for i in range(3)]
    answers = ['[("Berlin", "city")]', "[" * 100_000, "[a " * 66_000]
    cache = ResponseCache(config.cache_path)
    for passage, answer in zip(passages, answers):
        req = teacher_request(passage.text, config)
        cache.put(
            req.key,
            backend=config.backend,
            model=config.model,
            messages=req.messages,
            params=req.params,
            response=answer,
            usage={},
        )
    cache.close()
    result = annotate_passages(passages, config, progress=False)
    assert [p.id for p in result.passages] == ["p0"]
    assert [(f.passage_id, f.reason) for f in result.failures] == [("p1", "unparseable"), ("p2", "unparseable")]
    assert result.usage["failures"] == 2 and result.usage["requests"] == 0
