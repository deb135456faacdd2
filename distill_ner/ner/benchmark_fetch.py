"""`distill-ner benchmarks list|fetch`: which benchmark files are here, and getting the missing ones.

    distill-ner benchmarks list
    distill-ner benchmarks fetch --suite uniner_zero_shot            # from each spec's public `url`
    distill-ner benchmarks fetch crossner_music --from ~/universal-ner/src/eval/test_data
    distill-ner benchmarks fetch --suite uniner_zero_shot --base-url http://mirror.local/test_data/

A file lands in the benchmark cache (benchmarks.benchmark_cache_dir()) only once it is complete and
verified: it is streamed into a temporary file beside its destination, hashed on the way, checked
against the spec's pinned sha256 (or, where the spec pins none, the hash recorded when it was first
fetched), and then moved into place with os.replace. A fetch killed half-way leaves only a `.part`
file, which no loader reads. Downloads have a connect/read timeout and an overall deadline, so a server
that hangs or trickles fails instead of blocking.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from distill_ner.ner.benchmarks import (
    RECORDED_SUFFIX,
    BenchmarkSpec,
    benchmark_cache_dir,
    benchmark_specs,
    benchmark_suites,
    file_sha256,
    get_benchmark_spec,
    verify_file,
)

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0
# a whole file; the largest UniNER test file is a few tens of MB
DEADLINE_S = 600.0
CHUNK = 1 << 16


class FetchError(RuntimeError):
    """A benchmark file could not be fetched or did not verify; nothing was written in its place."""

    def __init__(self, message: str, done: dict[str, tuple[Path, str]] | None = None) -> None:
        super().__init__(message)
        self.done = done or {}  # what a multi-file fetch did complete


def _source_url(spec: BenchmarkSpec, base_url: str | None) -> str:
    if spec.url is None:
        raise FetchError(f"benchmark {spec.name}: its spec has no `url`; place the file at {spec.declared_path()}")
    return f"{base_url.rstrip('/')}/{spec.file_name}" if base_url else spec.url


def _download(url: str, dest: Any, *, connect_timeout: float, read_timeout: float, deadline: float, desc: str) -> None:
    """Stream `url` into the open binary file `dest`, with a progress bar; FetchError on any failure."""
    import requests
    import urllib3
    from tqdm.auto import tqdm

    start = time.monotonic()
    try:
        with requests.get(url, stream=True, timeout=(connect_timeout, read_timeout)) as response:
            if response.status_code != 200:
                raise FetchError(f"{desc}: GET {url} answered HTTP {response.status_code} {response.reason}")
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=None, file=sys.stderr) as bar:
                while True:
                    if time.monotonic() - start > deadline:
                        raise FetchError(f"{desc}: GET {url} took longer than {deadline:g} s; stopped")
                    # read1 returns what has arrived (iter_content would wait for a full chunk), so a
                    # server that trickles bytes still meets the deadline check
                    chunk = response.raw.read1(CHUNK, decode_content=True)
                    if not chunk:
                        break
                    dest.write(chunk)
                    bar.update(len(chunk))
    except (requests.Timeout, urllib3.exceptions.TimeoutError) as e:
        raise FetchError(
            f"{desc}: GET {url} timed out (connect {connect_timeout} s, read {read_timeout} s): {e}"
        ) from None
    except (requests.RequestException, urllib3.exceptions.HTTPError) as e:
        raise FetchError(f"{desc}: GET {url} failed: {e}") from None


def fetch_one(
    spec: BenchmarkSpec,
    *,
    from_dir: str | Path | None = None,
    base_url: str | None = None,
    force: bool = False,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    read_timeout: float = READ_TIMEOUT_S,
    deadline: float = DEADLINE_S,
) -> tuple[Path, str]:
    """(path, what happened) after making one benchmark's file present and verified."""
    present = spec.resolved_path()
    if present is not None and present.is_file() and not force:
        try:
            verify_file(spec, present)
        except ValueError as e:
            raise FetchError(f"{e}; or rerun with --force to replace the cached copy") from None
        return present, "present"
    dest = spec.cache_path()
    if dest is None:
        raise FetchError(f"benchmark {spec.name}: its spec has no `url`; place the file at {spec.declared_path()}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            if from_dir is not None:
                source = Path(from_dir).expanduser() / dest.name
                if not source.is_file():
                    raise FetchError(f"benchmark {spec.name}: no {dest.name} in {Path(from_dir).expanduser()}")
                with open(source, "rb") as src:
                    shutil.copyfileobj(src, out)
                origin = str(source)
            else:
                origin = _source_url(spec, base_url)
                _download(
                    origin,
                    out,
                    connect_timeout=connect_timeout,
                    read_timeout=read_timeout,
                    deadline=deadline,
                    desc=spec.name,
                )
            out.flush()
            os.fsync(out.fileno())
        actual = file_sha256(tmp)
        expected, where = spec.expected_sha256()
        if expected is not None and actual != expected:
            raise FetchError(
                f"benchmark {spec.name}: checksum mismatch for {origin}: sha256 {actual}, expected {expected} ({where}); "
                "nothing was written"
            )
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; the cache is shared like any data file
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    if expected is None:
        recorded = dest.with_name(dest.name + RECORDED_SUFFIX)
        _write_atomic(recorded, f"{actual}  {dest.name}\n")
        logger.warning(
            "benchmark %s: its spec pins no sha256; recorded %s in %s at this first fetch, and later fetches "
            "and loads are checked against it. Pin it in data/benchmarks/%s.yaml as `sha256: %s`",
            spec.name,
            actual,
            recorded,
            spec.name,
            actual,
        )
        return dest, f"fetched from {origin} (sha256 recorded, not pinned)"
    return dest, f"fetched from {origin} (sha256 verified)"


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def fetch(names: Iterable[str], **kwargs: Any) -> dict[str, tuple[Path, str]]:
    """fetch_one for each benchmark, all attempted; FetchError listing every failure at the end."""
    done: dict[str, tuple[Path, str]] = {}
    failures: list[str] = []
    for name in names:
        try:
            done[name] = fetch_one(get_benchmark_spec(name), **kwargs)
        except (FetchError, ValueError, OSError) as e:
            failures.append(str(e))
    if failures:
        raise FetchError("\n".join(failures), done)
    return done


def overview() -> list[dict[str, Any]]:
    """One row per registered benchmark: present or not, size, query rule, licence, source, suites."""
    from distill_ner.ner.benchmarks import load_benchmark

    suites = benchmark_suites()
    rows = []
    for name, spec in sorted(benchmark_specs().items()):
        path = spec.resolved_path()
        row: dict[str, Any] = {
            "name": name,
            "present": spec.is_present() and path is not None,
            "sentences": None,
            "types": None,
            "queries": None,
            "rule": spec.query_rule,
            "licence": " ".join(spec.licence.split()),
            "source": spec.url or spec.path or spec.hf_id,
            "path": str(path) if path is not None else "",
            "suites": [s.name for s in suites.values() if name in s.benchmarks],
        }
        if row["present"]:
            try:
                bench = load_benchmark(name)
                row.update(sentences=len(bench.sentences), types=len(bench.types), queries=bench.n_queries)
            except (ValueError, OSError) as e:
                row.update(present=False, path=f"{path} (unusable: {e})")
        rows.append(row)
    return rows


def overview_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| benchmark | present | sentences x types (queries) | rule | suites | licence | source |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        size = f"{r['sentences']} x {r['types']} ({r['queries']})" if r["sentences"] is not None else "-"
        lines.append(
            f"| {r['name']} | {'yes' if r['present'] else 'no'} | {size} | {r['rule']} | {', '.join(r['suites']) or '-'} "
            f"| {r['licence']} | {r['source']} |"
        )
    return "\n".join(lines)


def cmd_list(args: argparse.Namespace) -> None:
    rows = overview()
    print(overview_markdown(rows))
    missing = [r["name"] for r in rows if not r["present"]]
    if missing:
        print(
            f"\nnot present: {', '.join(missing)}; fetch: distill-ner benchmarks fetch {' '.join(missing)}",
            file=sys.stderr,
        )


def cmd_fetch(args: argparse.Namespace) -> None:
    names = list(args.names)
    if args.suite:
        names += [n for n in benchmark_suites()[args.suite].benchmarks if n not in names]
    if not names:
        sys.exit("name benchmarks or give --suite (see `distill-ner benchmarks list`)")
    print(f"benchmark cache: {benchmark_cache_dir()}", file=sys.stderr)
    failed: FetchError | None = None
    try:
        done = fetch(
            names,
            from_dir=args.from_dir,
            base_url=args.base_url,
            force=args.force,
            read_timeout=args.timeout,
            connect_timeout=min(args.timeout, CONNECT_TIMEOUT_S),
        )
    except FetchError as e:
        done, failed = e.done, e
    for name, (path, what) in done.items():
        print(f"{name}: {path}: {what}")
    if failed is not None:
        sys.exit(f"benchmarks fetch failed for {len(names) - len(done)} of {len(names)}:\n{failed}")


def add_benchmarks_parser(sub: Any) -> None:
    """`distill-ner benchmarks list|fetch`, added to the console command's subparsers."""
    parser = sub.add_parser("benchmarks", help="list the registered benchmarks, fetch missing benchmark files")
    actions = parser.add_subparsers(dest="benchmarks_command", required=True)
    p = actions.add_parser("list", help="every benchmark: present or not, sentences x types, rule, licence, source")
    p.set_defaults(func=cmd_list)
    p = actions.add_parser("fetch", help="download (or import) benchmark files into the cache, verified")
    p.add_argument("names", nargs="*", help="benchmark names (see `benchmarks list`)")
    p.add_argument("--suite", default=None, help="every benchmark of a suite, e.g. uniner_zero_shot")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--from", dest="from_dir", default=None, help="folder that already holds the files")
    source.add_argument("--base-url", default=None, help="fetch <base-url>/<file name> instead of each spec's url")
    p.add_argument("--force", action="store_true", help="replace a cached copy even if present")
    p.add_argument("--timeout", type=float, default=READ_TIMEOUT_S, help="seconds without data before giving up")
    p.set_defaults(func=cmd_fetch)
