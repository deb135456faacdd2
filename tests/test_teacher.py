"""Teacher annotation against a real local HTTP server with injected faults (tests/fake_openai_server.py).

Nothing is mocked on the client side: the official `openai` client talks HTTP to a server process.
Durations are scaled down (timeouts 0.5 s, Retry-After 0.05 s) so the whole file runs in seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_openai_server import FakeOpenAIServer, annotate, passage_hash, passage_of  # noqa: E402

from distill_ner.config import TeacherConfig  # noqa: E402
from distill_ner.ner.annotate import annotate_passages, teacher_request  # noqa: E402
from distill_ner.ner.parse import (  # noqa: E402  # noqa: E402
    FILTER_REASONS,
    extract_list,
    find_in_text,
    is_non_english,
    normalize_type,
    parse_answer,
)
from distill_ner.ner.prompt import SYSTEM_PROMPT, build_messages  # noqa: E402
from distill_ner.records import AnnotationSet, Passage  # noqa: E402
from distill_ner.teacher.backends import (  # noqa: E402
    OpenAIBackend,
    TeacherError,
    parse_retry_after,
    redact,
    resolve_api_key,  # noqa: E402
)
from distill_ner.teacher.cache import ResponseCache, request_key  # noqa: E402
from distill_ner.teacher.client import TeacherCacheMissError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KEY_ENV = "DISTILL_NER_TEST_TEACHER_KEY"
FAKE_KEY = "sk-distill-FAKEKEY-5f0c9e7a3b1d4e2f"
# the mix the brief asks for: 20 % 429 (Retry-After), 10 % 500, 5 % hangs past the timeout, 5 % broken bodies
FAULTS: dict[str, Any] = dict(
    rate_429=0.2,
    rate_500=0.1,
    rate_hang=0.05,
    rate_malformed=0.05,
    time_scale=0.05,
    retry_after_s=1.0,
    hang_s=20.0,
    latency_s=0.0,
)
NO_FAULTS: dict[str, Any] = dict(
    rate_429=0.0,
    rate_500=0.0,
    rate_hang=0.0,
    rate_malformed=0.0,
    latency_s=0.0,
    fail_marker=None,
    auth_fail_marker=None,
)

NAMES = ["Alice Moreau", "Bob Okafor", "Chen Wei", "Dana Scully", "Emil Larsen", "Fatima Zahra", "Goran Ivic"]
CITIES = ["Paris", "New York", "Rome", "Lagos", "Osaka", "Lima", "Oslo", "Cape Town"]
ORGS = ["Red Cross", "United Nations", "Siemens", "Nokia", "World Bank", "Louvre Museum"]


def make_passages(n: int, seed: int = 0, marked: dict[int, str] | None = None) -> list[Passage]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 10 == 9:
            text = f"the weather stayed mild and nothing much happened on day number {i}."
        else:
            text = (
                f"{rng.choice(NAMES)} travelled to {rng.choice(CITIES)} in {1900 + i} to meet "
                f"{rng.choice(NAMES)} at the {rng.choice(ORGS)}."
            )
        if marked and i in marked:
            text += " " + marked[i]
        out.append(Passage(id=f"doc-{i}", text=text, source="test"))
    return out


def make_config(tmp_path: Path, server: FakeOpenAIServer, **overrides: Any) -> TeacherConfig:
    base: dict[str, Any] = dict(
        base_url=server.base_url,
        model="fake-teacher",
        api_key_env=KEY_ENV,
        concurrency=16,
        timeout_s=0.5,
        max_retries=8,
        retry_backoff_s=0.02,
        retry_backoff_max_s=0.2,
        cache_path=str(tmp_path / "cache.sqlite"),
    )
    base.update(overrides)
    return TeacherConfig(**base)


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)


def cached_passage_hashes(cache_path: Path) -> set[str]:
    with ResponseCache(cache_path) as cache:
        return {passage_hash(passage_of(rec.messages)) for rec in cache.records()}


# ----------------------------------------------------------------------------------- annotation runs


def test_faulty_server_every_passage_annotated_or_failed(tmp_path: Path, server: FakeOpenAIServer) -> None:
    server.control(reset=True, **{**NO_FAULTS, **FAULTS, "fail_marker": "FAILME", "seed": 1})
    passages = make_passages(200, marked={5: "FAILME", 77: "FAILME"})
    config = make_config(tmp_path, server, max_retries=4)
    t0 = time.monotonic()
    result = annotate_passages(passages, config, progress=False)
    elapsed = time.monotonic() - t0

    annotated = [p.id for p in result.passages]
    failed = [f.passage_id for f in result.failures]
    assert sorted(annotated + failed) == sorted(p.id for p in passages)  # each exactly once
    assert not set(annotated) & set(failed)
    reasons = {f.passage_id: f for f in result.failures}
    for pid in ("doc-5", "doc-77"):
        assert reasons[pid].reason == "server_error"
        assert "after 5 attempt(s)" in reasons[pid].detail
    assert all(f.reason in {"server_error", "rate_limited", "timeout", "malformed_response"} for f in result.failures)

    counts = server.stats()["counts"]
    for fault in ("429", "500", "hang", "malformed"):
        assert counts.get(fault, 0) > 0, f"fault {fault} was never injected: {counts}"
    assert result.usage["requests"] == counts["requests"]
    assert result.usage["failures"] == len(result.failures)
    assert result.usage["cache_hits"] == 0

    # what was annotated is exactly the server's deterministic answer, parsed
    by_id = {p.id: p for p in passages}
    for ap in result.passages:
        expected = parse_answer(annotate(by_id[ap.id].text), by_id[ap.id].text)
        assert ap.entities == expected.entities
    assert result.type_counts["proper noun"] > 0
    assert set(result.filter_counts) == set(FILTER_REASONS)
    assert elapsed < 20


def _write_child_inputs(tmp_path: Path, config: TeacherConfig, passages: list[Passage]) -> tuple[Path, Path]:
    cfg_path, passages_path = tmp_path / "config.json", tmp_path / "passages.json"
    cfg_path.write_text(config.model_dump_json())
    passages_path.write_text(json.dumps([p.model_dump() for p in passages]))
    return cfg_path, passages_path


def _run_child(cfg_path: Path, passages_path: Path, out_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, __file__, str(cfg_path), str(passages_path), str(out_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _cache_rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=1) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # table not created yet


def test_sigkill_halfway_then_resume_sends_nothing_twice(tmp_path: Path, server: FakeOpenAIServer) -> None:
    # 429s, 500s and broken bodies keep retries in flight at the kill; hangs would only add wall time
    server.control(
        reset=True,
        **{
            **NO_FAULTS,
            "rate_429": 0.1,
            "rate_500": 0.05,
            "rate_malformed": 0.05,
            "time_scale": 0.05,
            "retry_after_s": 1.0,
            "latency_s": 0.4,
            "seed": 2,
        },
    )
    passages = make_passages(200, seed=3)
    config = make_config(tmp_path, server, concurrency=4, max_retries=12)
    cfg_path, passages_path = _write_child_inputs(tmp_path, config, passages)

    proc = _run_child(cfg_path, passages_path, tmp_path / "unused.json")
    cache_path = Path(config.cache_path)
    deadline = time.monotonic() + 60
    while _cache_rows(cache_path) < 100 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    _, child_err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the child ended before it was killed: {child_err[-2000:]!r}"

    answered = cached_passage_hashes(cache_path)
    assert 100 <= len(answered) < 200

    server.control(reset=True)
    resumed = annotate_passages(passages, config.model_copy(update={"concurrency": 16}), progress=False)
    requested = {entry["passage"] for entry in server.stats()["log"]}
    assert not requested & answered, "a passage already in the cache was requested again"
    assert requested == {passage_hash(p.text) for p in passages} - answered
    assert resumed.usage["cache_hits"] == len(answered)

    # the uninterrupted reference run; faults change how it gets there, not what it gets
    server.control(reset=True, **NO_FAULTS)
    fresh = annotate_passages(
        passages,
        make_config(tmp_path, server, concurrency=16, cache_path=str(tmp_path / "fresh.sqlite")),
        progress=False,
    )
    assert not fresh.failures and not resumed.failures
    assert resumed.model_dump(exclude={"usage"}) == fresh.model_dump(exclude={"usage"})


def test_ctrl_c_does_not_wait_for_hung_requests(tmp_path: Path, server: FakeOpenAIServer) -> None:
    # every request hangs for 120 s, under a client timeout of 120 s: before the fix, Ctrl-C waited that long
    server.control(reset=True, **{**NO_FAULTS, "rate_hang": 1.0, "hang_s": 120.0, "time_scale": 1.0, "seed": 4})
    config = make_config(tmp_path, server, concurrency=4, timeout_s=120.0, max_retries=0)
    cfg_path, passages_path = _write_child_inputs(tmp_path, config, make_passages(8, seed=5))
    proc = _run_child(cfg_path, passages_path, tmp_path / "unused.json")
    try:
        deadline = time.monotonic() + 120
        while server.stats()["counts"]["requests"] < 4 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the child ended before its requests were in flight"
        in_flight = server.stats()["counts"]["requests"]
        interrupted = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            _, child_err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)  # the child's faulthandler: every thread's stack, to say where it hangs
            time.sleep(2)
            proc.kill()
            _, child_err = proc.communicate()
            raise AssertionError(
                f"the child did not exit within 60 s of Ctrl-C ({in_flight} requests had arrived); its stderr ends:\n"
                + child_err.decode(errors="replace")[-6000:]
            ) from None
        waited = time.monotonic() - interrupted
    finally:
        proc.kill()
        server.control(reset=True, **NO_FAULTS)
    assert b"KeyboardInterrupt" in child_err
    assert waited < 30, f"Ctrl-C took {waited:.1f} s: it waited for the hung requests"


def test_offline_cache_miss_raises_before_sending(tmp_path: Path, server: FakeOpenAIServer) -> None:
    server.control(reset=True, **NO_FAULTS)
    passages = make_passages(25, seed=4)
    online = make_config(tmp_path, server)
    warm = annotate_passages(passages[:20], online, progress=False)
    assert warm.usage["requests"] == 20

    server.control(reset=True)
    offline = make_config(tmp_path, server, offline=True)
    with pytest.raises(TeacherCacheMissError) as err:
        annotate_passages(passages, offline, progress=False)
    message = str(err.value)
    assert "5 of 25 teacher requests" in message and str(Path(online.cache_path)) in message
    assert err.value.missing == 5
    assert server.stats()["counts"]["requests"] == 0

    full = annotate_passages(passages[:20], offline, progress=False)
    assert server.stats()["counts"]["requests"] == 0
    assert full.usage["requests"] == 0 and full.usage["cache_hits"] == 20
    assert full.model_dump(exclude={"usage"}) == warm.model_dump(exclude={"usage"})

    # the export format round-trips: an empty cache plus the export as a recorded file answers offline
    export = tmp_path / "recorded.jsonl"
    with ResponseCache(online.cache_path) as cache:
        assert cache.export_jsonl(export) == 20
    replay = make_config(
        tmp_path,
        server,
        offline=True,
        cache_path=str(tmp_path / "replay.sqlite"),
        recorded_responses=[str(export)],
        base_url=None,
    )
    replayed = annotate_passages(passages[:20], replay, progress=False)
    assert replayed.model_dump(exclude={"usage"}) == warm.model_dump(exclude={"usage"})
    assert server.stats()["counts"]["requests"] == 0


def test_api_key_never_stored_or_logged(
    tmp_path: Path, server: FakeOpenAIServer, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    server.control(
        reset=True, **{**NO_FAULTS, **FAULTS, "fail_marker": "FAILME", "auth_fail_marker": "DENYME", "seed": 5}
    )
    caplog.set_level(logging.DEBUG)  # includes the openai and HTTP client loggers
    passages = make_passages(60, seed=6, marked={3: "FAILME", 4: "DENYME"})
    config = make_config(tmp_path, server, max_retries=3)
    result = annotate_passages(passages, config, progress=True)
    export = tmp_path / "export.jsonl"
    with ResponseCache(config.cache_path) as cache:
        cache.export_jsonl(export)

    # the key was really sent...
    assert hashlib.sha256(FAKE_KEY.encode()).hexdigest() in server.stats()["auth_sha256"]
    denied = next(f for f in result.failures if f.passage_id == "doc-4")
    assert denied.reason == "http_401" and "***" in denied.detail  # the server echoed it; we scrubbed it
    # ...and is nowhere we keep or print anything
    out, err = capfd.readouterr()
    places = {
        "AnnotationSet JSON": result.model_dump_json(),
        "export": export.read_text(),
        "logs": caplog.text,
        "stdout": out,
        "stderr": err,
        "config JSON": config.model_dump_json(),
    }
    for name, text in places.items():
        assert FAKE_KEY not in text, f"API key leaked into {name}"
    for f in tmp_path.iterdir():
        assert FAKE_KEY.encode() not in f.read_bytes(), f"API key leaked into {f.name}"
    assert "teacher" in err  # the progress bar did print, so stderr was really captured


def test_missing_key_for_openai_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV)
    config = TeacherConfig(api_key_env=KEY_ENV, cache_path=str(tmp_path / "c.sqlite"))
    assert resolve_api_key(config) is None
    with pytest.raises(ValueError, match="no API key"):
        annotate_passages(make_passages(2), config, progress=False)


def test_api_key_from_zenml_secret(tmp_path: Path) -> None:
    """env var wins; else the ZenML secret's `api_key`; run in a child with its own ZenML store."""
    script = textwrap.dedent(f"""
        import os
        from zenml.client import Client
        from distill_ner.config import TeacherConfig
        from distill_ner.teacher.backends import resolve_api_key
        Client().create_secret("teacher-test", values={{"api_key": "sk-from-zenml-secret"}})
        cfg = TeacherConfig(api_key_env="{KEY_ENV}", api_key_secret="teacher-test")
        assert resolve_api_key(cfg) == "sk-from-zenml-secret", "secret not used"
        os.environ["{KEY_ENV}"] = "sk-from-env"
        assert resolve_api_key(cfg) == "sk-from-env", "env var must win"
        del os.environ["{KEY_ENV}"]
        try:
            resolve_api_key(TeacherConfig(api_key_env="{KEY_ENV}", api_key_secret="no-such-secret"))
        except ValueError as exc:
            assert "no-such-secret" in str(exc)
        else:
            raise AssertionError("missing secret accepted")
        print("OK")
    """)
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    env.update(
        PYTHONPATH=str(REPO),
        ZENML_CONFIG_PATH=str(tmp_path / "zen"),
        ZENML_ANALYTICS_OPT_IN="false",
        ZENML_LOGGING_VERBOSITY="ERROR",
    )
    # cwd outside the repo: ZenML would otherwise find the repo's .zen/ and rewrite its active stack
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


def test_concurrent_requests_and_duplicate_passages(tmp_path: Path, server: FakeOpenAIServer) -> None:
    server.control(reset=True, **{**NO_FAULTS, "latency_s": 0.1, "time_scale": 1.0})
    passages = make_passages(32, seed=7)
    # two passages with the same text but different ids share one request and one cache row
    passages.append(Passage(id="copy-of-0", text=passages[0].text))
    config = make_config(tmp_path, server, concurrency=16)
    t0 = time.monotonic()
    result = annotate_passages(passages, config, progress=False)
    elapsed = time.monotonic() - t0
    assert server.stats()["counts"]["requests"] == 32
    assert elapsed < 32 * 0.1 / 3, f"requests were not concurrent ({elapsed:.2f}s)"
    assert {p.id for p in result.passages} == {p.id for p in passages}
    with pytest.raises(ValueError, match="duplicate passage ids"):
        annotate_passages([passages[0], passages[0]], config, progress=False)


def test_unparseable_answer_is_a_failure(tmp_path: Path, server: FakeOpenAIServer) -> None:
    """A response that parses to no list fails its passage (reason unparseable) and is counted."""
    server.control(reset=True, **NO_FAULTS)
    passages = make_passages(3, seed=8)
    config = make_config(tmp_path, server)
    req = teacher_request(passages[1].text, config)
    with ResponseCache(config.cache_path) as cache:
        cache.put(
            req.key,
            backend="openai",
            model=config.model,
            messages=req.messages,
            params=req.params,
            response="I am sorry, I cannot help with that.",
        )
    result = annotate_passages(passages, config, progress=False)
    assert [f.passage_id for f in result.failures] == [passages[1].id]
    assert result.failures[0].reason == "unparseable"
    assert result.filter_counts["unparseable"] == 1
    assert result.usage["cache_hits"] == 1 and result.usage["requests"] == 2


def test_permanent_http_error_is_not_retried(tmp_path: Path, server: FakeOpenAIServer) -> None:
    server.control(reset=True, **{**NO_FAULTS, "model": "only-this-model"})
    try:
        result = annotate_passages(make_passages(4), make_config(tmp_path, server, model="other"), progress=False)
    finally:
        server.control(model=None)
    assert {f.reason for f in result.failures} == {"http_404"}
    assert server.stats()["counts"]["requests"] == 4  # one attempt each


# ------------------------------------------------------------------------------------- units: prompt


def test_prompt_is_the_uniner_prompt() -> None:
    msgs = build_messages("Lionel Messi plays for Inter Miami.")
    assert msgs[0] == {"role": "system", "content": "You are a helpful information extraction system."}
    assert SYSTEM_PROMPT == msgs[0]["content"]
    assert msgs[1] == {
        "role": "user",
        "content": (
            "Given a passage, your task is to extract all entities and identify their entity types. "
            'The output should be in a list of tuples of the following format: [("entity 1", "type of entity 1"), ... ].'
            "\n\nPassage: Lionel Messi plays for Inter Miami."
        ),
    }
    desc = build_messages("x {y}", "entities_with_descriptions")[1]["content"]
    assert "description" in desc and desc.endswith("\n\nPassage: x {y}")
    with pytest.raises(ValueError, match="unknown teacher prompt"):
        build_messages("x", "nope")


def test_request_key_depends_on_request_only() -> None:
    msgs = build_messages("a")
    k = request_key("openai", "m", msgs, {"temperature": 0.0, "max_tokens": 10})
    assert k == request_key("openai", "m", msgs, {"max_tokens": 10, "temperature": 0.0})  # key order irrelevant
    assert k != request_key("openai", "m2", msgs, {"temperature": 0.0, "max_tokens": 10})
    assert k != request_key("openai", "m", msgs, {"temperature": 0.0, "max_tokens": 11})
    assert len(k) == 64


# -------------------------------------------------------------------------------------- units: parse

PASSAGE = "Barack Obama met Angela Merkel in Berlin in 2009 at the Brandenburg Gate, said The New York Times."


def ents(result: Any) -> list[tuple[str, str]]:
    return [(e.text, e.type) for e in result.entities]


def test_parse_tuple_list_and_json_list() -> None:
    r = parse_answer('[("Barack Obama", "person"), ("Berlin", "city")]', PASSAGE)
    assert r.parsed and ents(r) == [("Barack Obama", "person"), ("Berlin", "city")]
    r = parse_answer('[["Angela Merkel", "Politician"], ["2009", "year"]]', PASSAGE)
    assert ents(r) == [("Angela Merkel", "politician"), ("2009", "year")]
    r = parse_answer("[('Brandenburg Gate', 'landmark'),]", PASSAGE)
    assert ents(r) == [("Brandenburg Gate", "landmark")]
    assert parse_answer("[]", PASSAGE).parsed and parse_answer("[]", PASSAGE).entities == []


def test_parse_tolerates_prose_and_fences() -> None:
    answer = 'Sure! Here are the entities [1]:\n[("Berlin", "location"), ("Obama", "person")]\nHope this helps.'
    r = parse_answer(answer, PASSAGE)
    assert ents(r) == [("Berlin", "location"), ("Obama", "person")]
    r = parse_answer('```python\n[("Berlin", "city")]\n```', PASSAGE)
    assert ents(r) == [("Berlin", "city")]
    r = parse_answer('Output: [("The New York Times [paper]", "newspaper")]', "The New York Times [paper] wrote")
    assert ents(r) == [("The New York Times [paper]", "newspaper")]


def test_parse_malformed_answers() -> None:
    for bad in ("I cannot do that.", '[("Berlin", "city"', "", "[(Berlin, city)]", "{'a': 1}"):
        r = parse_answer(bad, PASSAGE)
        assert not r.parsed and r.counts == {"unparseable": 1}, bad
    r = parse_answer('[("Berlin",), ("Berlin", "city", "a place", "extra"), "Berlin", ("Berlin", "city")]', PASSAGE)
    assert ents(r) == [("Berlin", "city")] and r.counts["malformed_item"] == 3
    # never eval: an expression that would run code is just unparseable
    r = parse_answer('[(__import__("os").getcwd(), "x")]', PASSAGE)
    assert not r.parsed


def test_parse_filters_count_by_reason() -> None:
    answer = repr(
        [
            ("Berlin", "None"),
            ("Berlin", "N/A"),
            ("Berlin", "misc."),
            ("Berlin", "ELSE"),
            ("Berlin", "Other"),
            ("Berlin", "unknown"),
            ("柏林", "city"),
            ("Москва", "city"),
            ("Berlin", "城市"),
            ("Paris", "city"),
            ("Obama", "person"),
            ("Obama", "person"),
            ("", "city"),
            ("Berlin", "  "),
            ("entity 1", "type of entity 1"),
            ("Merkel", "Person"),
            ("Berlin", "city"),
        ]
    )
    r = parse_answer(answer, PASSAGE)
    assert ents(r) == [("Obama", "person"), ("Merkel", "person"), ("Berlin", "city")]
    assert r.counts == {
        "else_type": 6,
        "non_english": 3,
        "not_in_text": 1,
        "duplicates": 1,
        "empty_entity": 1,
        "empty_type": 1,
        "template_echo": 1,
    }


def test_not_in_text_rules() -> None:
    text = "The US team won. Focus on São Paulo and barack obama."
    assert find_in_text("US", text) == "US"
    assert find_in_text("us", text) == "US"  # case-insensitive fallback takes the passage's spelling
    assert find_in_text("Barack Obama", text) == "barack obama"
    assert find_in_text("cus", text) is None  # word boundaries: not inside "Focus"
    assert find_in_text('"São Paulo".', text) == "São Paulo"  # surrounding quotes/punctuation stripped
    assert find_in_text("Rio", text) is None


def test_type_normalisation_and_language() -> None:
    assert normalize_type('  "Sports   TEAM". ') == "sports team"
    assert normalize_type("'Person'") == "person"
    assert normalize_type("“Organisation”") == "organisation"
    assert is_non_english("東京") and is_non_english("Москва") and is_non_english("---")
    assert not is_non_english("São Paulo") and not is_non_english("1999") and not is_non_english("Zürich")


def test_descriptions_variant_keeps_type() -> None:
    answer = '[("Berlin", "City", "a large urban settlement"), ("Obama", "person", "a human being")]'
    assert ents(parse_answer(answer, PASSAGE)) == [("Berlin", "city"), ("Obama", "person")]


def test_extract_list_bare_tuples() -> None:
    assert extract_list('("Berlin", "city"), ("Obama", "person")') == [("Berlin", "city"), ("Obama", "person")]
    assert extract_list('("Berlin", "city")') == [("Berlin", "city")]


# -------------------------------------------------------------------------------------- units: cache


def test_cache_threads_and_processes(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "c.sqlite"
    cache = ResponseCache(path)
    msgs = build_messages("x")

    def put(i: int) -> None:
        cache.put(
            f"k{i:03d}",
            backend="openai",
            model="m",
            messages=msgs,
            params={"i": i},
            response=f"r{i}",
            usage={"prompt_tokens": i},
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(200)))
    assert len(cache) == 200 and cache.get("k007") is not None and cache.get("k007").response == "r7"
    assert not cache.put("k007", backend="openai", model="m", messages=msgs, params={}, response="other")
    assert cache.get("k007").response == "r7"  # first answer wins
    # another process sees every committed row at once
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sqlite3; print(sqlite3.connect({str(path)!r})"
            ".execute('select count(*) from responses').fetchone()[0])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "200"
    cache.close()


def test_cache_import_errors_name_file_and_line(tmp_path: Path) -> None:
    msgs = build_messages("x")
    params = {"temperature": 0.0, "max_tokens": 1024}
    good = {
        "key": request_key("openai", "m", msgs, params),
        "backend": "openai",
        "model": "m",
        "messages": msgs,
        "params": params,
        "response": "[]",
        "usage": {},
    }
    path = tmp_path / "rec.jsonl"
    cache = ResponseCache(tmp_path / "c.sqlite")

    path.write_text(json.dumps(good) + "\n\n" + json.dumps({**good, "key": "0" * 64}) + "\n")
    with pytest.raises(ValueError, match=r"rec\.jsonl:3: key 000000000000"):
        cache.import_jsonl(path)
    assert len(cache) == 0  # nothing written from a bad file

    path.write_text(json.dumps(good) + "\n" + json.dumps({k: v for k, v in good.items() if k != "response"}) + "\n")
    with pytest.raises(ValueError, match=r"rec\.jsonl:2: bad cache record at key 'response'"):
        cache.import_jsonl(path)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"rec\.jsonl:1"):
        cache.import_jsonl(path)

    path.write_text(json.dumps(good) + "\n")
    assert cache.import_jsonl(path) == 1 and cache.import_jsonl(path) == 0
    cache.close()


# ------------------------------------------------------------------------------------ units: backend


def test_retry_after_parsing() -> None:
    assert parse_retry_after({"retry-after": "0.25"}) == 0.25
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({}) is None
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < (parse_retry_after({"retry-after": date}) or 0) <= 31


def test_backend_maps_errors_and_redacts(server: FakeOpenAIServer) -> None:
    server.control(reset=True, **{**NO_FAULTS, "rate_429": 1.0, "time_scale": 0.05, "retry_after_s": 1.0})
    backend = OpenAIBackend("m", base_url=server.base_url, api_key=FAKE_KEY, timeout_s=2)
    with pytest.raises(TeacherError) as err:
        backend.complete(build_messages("Paris"), {"temperature": 0.0, "max_tokens": 5})
    assert err.value.reason == "rate_limited" and err.value.retryable and err.value.retry_after == pytest.approx(0.05)
    server.control(**{**NO_FAULTS, "auth_fail_marker": "Paris"})
    with pytest.raises(TeacherError) as err:
        backend.complete(build_messages("Paris"), {"temperature": 0.0, "max_tokens": 5})
    assert err.value.reason == "http_401" and not err.value.retryable and FAKE_KEY not in str(err.value)
    assert redact(f"key={FAKE_KEY}", FAKE_KEY) == "key=***"
    server.control(auth_fail_marker=None)


def test_transformers_backend_tiny_model(tmp_path: Path) -> None:
    """The local backend end to end: a random tiny Llama with a trained BPE tokenizer and a chat template."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    from distill_ner.teacher.backends import TransformersBackend

    tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel()
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"])
    tok.train_from_iterator([SYSTEM_PROMPT, PASSAGE, "Given a passage, extract all entities."] * 5, trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.chat_template = (
        "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<s>assistant: {% endif %}"
    )
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "m")
    fast.save_pretrained(tmp_path / "m")

    backend = TransformersBackend(str(tmp_path / "m"))
    messages = build_messages("Berlin is a city.")
    a = backend.complete(messages, {"temperature": 0.0, "max_tokens": 8})
    b = backend.complete(messages, {"temperature": 0.0, "max_tokens": 8})
    assert a == b and 0 < a.completion_tokens <= 8 and a.prompt_tokens > 10  # greedy: deterministic


# ----------------------------------------------------------------------------------- demo data

DEMO = REPO / "data" / "demo"


@pytest.mark.skipif(not (DEMO / "teacher_responses.jsonl").exists(), reason="data/demo not built yet")
def test_demo_recorded_teacher_covers_demo_corpus(tmp_path: Path, server: FakeOpenAIServer) -> None:
    from distill_ner.config import CorpusConfig, CorpusSource
    from distill_ner.corpus import sample_passages

    docs = [json.loads(line) for line in (DEMO / "corpus.jsonl").read_text().splitlines() if line.strip()]
    corpus = CorpusConfig(
        sources=[CorpusSource(path=str(DEMO / "corpus.jsonl"), id_field="id")],
        max_tokens=256,
        num_passages=10_000,
        min_words=1,
    )
    passages = sample_passages(corpus, lambda s: int(len(s.split()) * 1.6) + 1)
    assert passages.stats["documents"] == len(docs) and len(passages.passages) == len(docs)
    assert {p.text for p in passages.passages} == {" ".join(d["text"].split()) for d in docs}

    server.control(reset=True)
    # pointed at the fake server, so a request sent by mistake would show in its counter
    config = TeacherConfig(
        model="demo-recorded-teacher",
        offline=True,
        cache_path=str(tmp_path / "c.sqlite"),
        base_url=server.base_url,
        api_key_env=KEY_ENV,
        recorded_responses=[str(DEMO / "teacher_responses.jsonl")],
    )
    result = annotate_passages(passages.passages, config, progress=False)
    assert result.usage["requests"] == 0 and result.usage["cache_hits"] == len(docs)
    assert len(result.passages) + len(result.failures) == len(docs)
    assert all(f.reason == "unparseable" for f in result.failures)
    assert server.stats()["counts"]["requests"] == 0
    # the demo's deliberate noise is caught by the filters, and only it
    noisy = Counter(
        json.loads(line).get("noise")
        for g in sorted((DEMO / "written").glob("group*.jsonl"))
        for line in g.read_text().splitlines()
        if line.strip()
    )
    assert result.filter_counts["else_type"] == noisy["else_type"]
    assert result.filter_counts["not_in_text"] == noisy["not_in_text"]
    assert result.filter_counts["unparseable"] == len(result.failures) == noisy["malformed"]


# ----------------------------------------------------------------------------------- llama.cpp


def test_llama_cpp_server_integration(tmp_path: Path) -> None:
    """Optional: a real OpenAI-compatible LLM server. Needs llama_cpp and DISTILL_NER_GGUF=<model.gguf>."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python[server] is not installed")
    gguf = os.environ.get("DISTILL_NER_GGUF")
    if not gguf or not Path(gguf).is_file():
        pytest.skip("set DISTILL_NER_GGUF to a .gguf model file to run against llama.cpp")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        config = TeacherConfig(
            base_url=f"http://127.0.0.1:{port}/v1",
            model="local",
            api_key_env=KEY_ENV,
            max_tokens=64,
            timeout_s=60,
            max_retries=20,
            retry_backoff_s=0.5,
            retry_backoff_max_s=2,
            concurrency=2,
            cache_path=str(tmp_path / "c.sqlite"),
        )
        result = annotate_passages(make_passages(4), config, progress=False)  # retries cover server start-up
        assert len(result.passages) + len(result.failures) == 4
        assert all(f.reason == "unparseable" for f in result.failures)  # small models answer with prose
    finally:
        proc.terminate()
        proc.wait(10)


# ------------------------------------------------------------------------- child process for SIGKILL


def _child_main(cfg_path: str, passages_path: str, out_path: str) -> None:
    config = TeacherConfig.model_validate_json(Path(cfg_path).read_text())
    passages = [Passage(**p) for p in json.loads(Path(passages_path).read_text())]
    result: AnnotationSet = annotate_passages(passages, config, progress=False)
    Path(out_path).write_text(result.model_dump_json())


if __name__ == "__main__":
    import faulthandler

    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # Ctrl-C as a terminal's foreground process gets it: a suite started in the background (`cmd &` in a script)
    # hands its processes SIGINT ignored, and Python then keeps it ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _child_main(*sys.argv[1:4])
