"""`benchmarks fetch` against a local HTTP server on 127.0.0.1: good file, corrupted file, 404, a hanging
server, a cut-off transfer; plus suites, the missing-benchmark error before any model loads, and the gate
over a suite."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_evaluation import ScriptedEngine, write_uniner

from distill_ner.cli import main as cli_main
from distill_ner.config import GateConfig
from distill_ner.ner import benchmark_fetch
from distill_ner.ner.benchmark_fetch import FetchError, fetch_one
from distill_ner.ner.benchmarks import (
    BenchmarkSpec,
    BenchmarkSuite,
    available_benchmarks,
    benchmark_paths,
    load_benchmark,
    register_benchmark,
    register_suite,
    unregister_benchmark,
    unregister_suite,
)
from distill_ner.ner.config import EvalConfig
from distill_ner.ner.evaluation import evaluate_model
from distill_ner.registry.gate import decide, metrics_from_report

SENTENCES = {
    "Marie Curie was born in Warsaw .": {"person": ["Marie Curie"], "location": ["Warsaw"]},
    "Python was written by Guido van Rossum .": {"person": ["Guido van Rossum"], "location": []},
}


class Files(BaseHTTPRequestHandler):
    """GET /<name>: the bytes in `files`; /hang/*: no answer until released; /cut/*: half, then close;
    /trickle/*: one byte at a time."""

    files: dict[str, bytes] = {}
    release = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        name = self.path.rsplit("/", 1)[-1]
        if self.path.startswith("/hang/"):
            self.release.wait(10)  # bounded, so the server can always shut down
            return
        body = self.files.get(name)
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path.startswith("/trickle/"):  # a byte every 0.1 s: never idle long enough for a read timeout
            for i in range(len(body)):
                if Files.release.wait(0.1):
                    return
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
            return
        self.wfile.write(body[: len(body) // 2] if self.path.startswith("/cut/") else body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Files.files = {}
    Files.release = threading.Event()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Files)  # a free port the OS picks
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        Files.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("DISTILL_NER_BENCHMARK_CACHE", str(folder))
    return folder


@pytest.fixture
def registered() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        unregister_benchmark(name)
    unregister_suite("mini_suite")


def uniner_bytes(tmp_path: Path, sentences: dict = SENTENCES) -> bytes:
    return write_uniner(tmp_path / "src.json", sentences).read_bytes()


def spec(registered: list[str], name: str, url: str, sha256: str | None = None) -> BenchmarkSpec:
    s = BenchmarkSpec(name=name, format="uniner", url=url, sha256=sha256)
    register_benchmark(s, overwrite=True)
    registered.append(name)
    return s


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_good_file_is_fetched_verified_and_loads(
    server: str, cache: Path, tmp_path: Path, registered: list[str]
) -> None:
    body = uniner_bytes(tmp_path)
    Files.files["good.json"] = body
    s = spec(registered, "good_set", f"{server}/data/good.json", hashlib.sha256(body).hexdigest())
    path, what = fetch_one(s)
    assert path == cache / "good.json" and path.read_bytes() == body and "sha256 verified" in what
    assert leftovers(cache) == ["good.json"], "no temporary file and no recorded hash when the spec pins one"
    bench = load_benchmark("good_set")
    assert len(bench.sentences) == 2 and bench.n_queries == 4
    assert benchmark_paths(["good_set"]) == [str(path)]
    assert fetch_one(s) == (path, "present")


def test_corrupted_file_is_refused_and_nothing_is_written(
    server: str, cache: Path, tmp_path: Path, registered: list[str]
) -> None:
    body = uniner_bytes(tmp_path)
    Files.files["bad.json"] = body.replace(b"Warsaw", b"Warsow")
    s = spec(registered, "bad_set", f"{server}/bad.json", hashlib.sha256(body).hexdigest())
    with pytest.raises(FetchError, match=r"checksum mismatch .*expected " + hashlib.sha256(body).hexdigest()):
        fetch_one(s)
    assert leftovers(cache) == []
    with pytest.raises(
        FileNotFoundError, match=r"benchmark bad_set: file not found: .*distill-ner benchmarks fetch bad_set"
    ):
        load_benchmark("bad_set")


def test_a_corrupted_cached_copy_does_not_load(server: str, cache: Path, tmp_path: Path, registered: list[str]) -> None:
    body = uniner_bytes(tmp_path)
    Files.files["good.json"] = body
    s = spec(registered, "good_set", f"{server}/good.json", hashlib.sha256(body).hexdigest())
    path, _ = fetch_one(s)
    path.write_bytes(body.replace(b"Warsaw", b"Warsow"))
    with pytest.raises(ValueError, match="has sha256 .* expected .*pinned in the good_set spec"):
        load_benchmark("good_set")
    with pytest.raises(FetchError, match="--force"):
        fetch_one(s)
    assert fetch_one(s, force=True)[0].read_bytes() == body


def test_unpinned_hash_is_recorded_with_a_warning_then_checked(
    server: str, cache: Path, tmp_path: Path, registered: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    body = uniner_bytes(tmp_path)
    Files.files["new.json"] = body
    s = spec(registered, "new_set", f"{server}/new.json")
    with caplog.at_level(logging.WARNING, logger=benchmark_fetch.__name__):
        _, what = fetch_one(s)
    assert "recorded, not pinned" in what
    assert "pins no sha256" in caplog.text and hashlib.sha256(body).hexdigest() in caplog.text
    assert (cache / "new.json.sha256").read_text().split()[0] == hashlib.sha256(body).hexdigest()
    # the upstream file changes: a forced re-fetch is checked against the recorded hash and refused
    Files.files["new.json"] = body.replace(b"Warsaw", b"Warsow")
    with pytest.raises(FetchError, match="checksum mismatch .*recorded at first fetch"):
        fetch_one(s, force=True)
    assert (cache / "new.json").read_bytes() == body, "the verified copy is kept"
    assert leftovers(cache) == ["new.json", "new.json.sha256"]


def test_http_404_writes_nothing(server: str, cache: Path, registered: list[str]) -> None:
    s = spec(registered, "gone_set", f"{server}/gone.json")
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_one(s)
    assert leftovers(cache) == []


def test_hanging_server_times_out(server: str, cache: Path, registered: list[str]) -> None:
    s = spec(registered, "slow_set", f"{server}/hang/slow.json")
    start = time.monotonic()
    with pytest.raises(FetchError, match="timed out"):
        fetch_one(s, connect_timeout=1.0, read_timeout=0.5)
    assert time.monotonic() - start < 5.0
    assert leftovers(cache) == []


def test_trickling_server_hits_the_overall_deadline(
    server: str, cache: Path, tmp_path: Path, registered: list[str]
) -> None:
    Files.files["drip.json"] = uniner_bytes(tmp_path)
    s = spec(registered, "drip_set", f"{server}/trickle/drip.json")
    start = time.monotonic()
    with pytest.raises(FetchError, match="took longer than 1 s"):
        fetch_one(s, read_timeout=2.0, deadline=1.0)
    assert time.monotonic() - start < 5.0
    assert leftovers(cache) == []


def test_cut_off_transfer_leaves_no_file(server: str, cache: Path, tmp_path: Path, registered: list[str]) -> None:
    """A transfer that stops half-way (as a killed fetch would) leaves nothing a loader could read,
    even where no hash is known to catch it."""
    Files.files["cut.json"] = uniner_bytes(tmp_path)
    s = spec(registered, "cut_set", f"{server}/cut/cut.json")
    with pytest.raises(FetchError):
        fetch_one(s, read_timeout=2.0)
    assert leftovers(cache) == []


def test_from_folder_and_base_url_and_cli(
    server: str, cache: Path, tmp_path: Path, registered: list[str], capsys
) -> None:
    body = uniner_bytes(tmp_path)
    folder = tmp_path / "have"
    folder.mkdir()
    (folder / "a.json").write_bytes(body)
    Files.files["b.json"] = body
    spec(registered, "set_a", "https://example.invalid/x/a.json", hashlib.sha256(body).hexdigest())
    spec(registered, "set_b", "https://example.invalid/x/b.json", hashlib.sha256(body).hexdigest())
    cli_main(["benchmarks", "fetch", "set_a", "--from", str(folder)])
    cli_main(["benchmarks", "fetch", "set_b", "--base-url", f"{server}/mirror/"])
    out = capsys.readouterr().out
    assert f"set_a: {cache / 'a.json'}: fetched from {folder / 'a.json'}" in out
    assert f"set_b: {cache / 'b.json'}: fetched from {server}/mirror/b.json" in out
    cli_main(["benchmarks", "list"])
    listing = capsys.readouterr().out
    assert "| set_a | yes | 2 x 2 (4) | as_in_file |" in listing
    with pytest.raises(SystemExit, match="no c.json in"):
        spec(registered, "set_c", "https://example.invalid/x/c.json")
        cli_main(["benchmarks", "fetch", "set_c", "--from", str(folder)])


def test_missing_benchmark_fails_before_the_model_loads(cache: Path, registered: list[str], monkeypatch) -> None:
    spec(registered, "absent_set", "https://example.invalid/absent.json")

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the benchmarks were checked")

    monkeypatch.setattr("distill_ner.ner.inference.NEREngine", no_model)
    with pytest.raises(
        FileNotFoundError, match=r"benchmark absent_set: file not found: .*distill-ner benchmarks fetch absent_set"
    ):
        evaluate_model("any-model", EvalConfig(benchmarks=["absent_set"]))


def test_suite_scores_present_members_names_absent_ones_and_gates_every_domain(
    cache: Path, tmp_path: Path, registered: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("dom_a", "dom_b"):
        write_uniner(tmp_path / f"{name}.json", SENTENCES)
        register_benchmark(
            BenchmarkSpec(name=name, format="uniner", path=str(tmp_path / f"{name}.json")), overwrite=True
        )
        registered.append(name)
    spec(registered, "dom_c", "https://example.invalid/dom_c.json")
    register_suite(BenchmarkSuite(name="mini_suite", benchmarks=["dom_a", "dom_b", "dom_c"]), overwrite=True)
    assert available_benchmarks(["mini_suite"]) == (["dom_a", "dom_b"], {"mini_suite": ["dom_c"]})
    with pytest.raises(ValueError, match="'dom_a' is listed twice"):
        available_benchmarks(["dom_a", "mini_suite"])

    engine = ScriptedEngine({("Marie Curie was born in Warsaw .", "person"): '["Marie Curie"]'})
    with caplog.at_level(logging.WARNING):
        report = evaluate_model("m", EvalConfig(benchmarks=["mini_suite"]), engine=engine)  # type: ignore[arg-type]
    assert list(report.per_dataset) == ["dom_a", "dom_b"]
    assert "suite mini_suite: 1 of 3 benchmarks not present, not scored: dom_c" in caplog.text
    assert "distill-ner benchmarks fetch --suite mini_suite" in caplog.text

    # the gate given the suite's report checks every domain: a drop on one of them alone fails it
    f1, coverage = metrics_from_report(report)
    production = {**f1, "dom_b": f1["dom_b"] + 0.2}
    passed, reasons = decide(f1, production, GateConfig(max_drop=0.05), coverage, coverage)
    assert not passed
    assert any(r.startswith("fail: benchmark dom_b: F1") for r in reasons)
    assert not any("dom_a: F1" in r and r.startswith("fail") for r in reasons)


def test_shipped_suite_lists_the_seven_sets() -> None:
    from distill_ner.ner.benchmarks import benchmark_specs, benchmark_suites

    suite = benchmark_suites()["uniner_zero_shot"]
    assert suite.benchmarks == [
        "mit_movie",
        "mit_restaurant",
        "crossner_ai",
        "crossner_literature",
        "crossner_music",
        "crossner_politics",
        "crossner_science",
    ]
    specs = benchmark_specs()
    for name in suite.benchmarks:
        s = specs[name]
        assert s.url and s.url.startswith("https://raw.githubusercontent.com/universal-ner/universal-ner/")
        assert s.query_rule == "as_in_file" and s.licence
    assert specs["crossner_ai"].sha256 and specs["mit_restaurant"].sha256
    assert json.loads(json.dumps(benchmark_paths(["uniner_zero_shot"]))) == [
        str(specs[n].resolved_path()) for n in suite.benchmarks
    ]
