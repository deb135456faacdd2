"""Teacher annotation throughput: concurrency 1 vs N against a server with fixed latency, then a cached rerun.

    python benchmarks/bench_teacher.py [--passages 200] [--latency 0.2] [--concurrency 16]

Starts tests/fake_openai_server.py (a real HTTP server) with a fixed per-request latency, annotates
the same passages with fresh caches at concurrency 1 and N, and reruns on the warm cache.
Targets: speed-up >= 10x, and 0 requests on the cached rerun; exits 1 if either is missed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from fake_openai_server import FakeOpenAIServer  # noqa: E402

from distill_ner.config import TeacherConfig  # noqa: E402
from distill_ner.ner.annotate import annotate_passages  # noqa: E402
from distill_ner.records import Passage  # noqa: E402

MIN_SPEEDUP = 10.0


def passages(n: int) -> list[Passage]:
    cities = ["Paris", "Lagos", "Osaka", "Lima", "Oslo"]
    return [
        Passage(
            id=f"bench-{i}",
            text=f"Ada Lovelace wrote to Charles Babbage from {cities[i % 5]} "
            f"about engine number {i} in {1830 + i % 20}.",
        )
        for i in range(n)
    ]


def run(ps: list[Passage], server: FakeOpenAIServer, cache: Path, concurrency: int) -> tuple[float, int]:
    config = TeacherConfig(
        base_url=server.base_url,
        model="bench-teacher",
        api_key_env="BENCH_TEACHER_KEY",
        concurrency=concurrency,
        timeout_s=30,
        cache_path=str(cache),
    )
    server.control(reset=True)
    t0 = time.perf_counter()
    result = annotate_passages(ps, config, progress=False)
    elapsed = time.perf_counter() - t0
    sent = server.stats()["counts"]["requests"]
    assert not result.failures, result.failures[:3]
    assert result.usage["requests"] == sent
    return elapsed, sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per request at the server")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    os.environ.pop("BENCH_TEACHER_KEY", None)  # a local server needs no key

    ps = passages(args.passages)
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer(latency_s=args.latency) as server:
        t1, n1 = run(ps, server, Path(tmp) / "c1.sqlite", 1)
        print(f"concurrency 1:  {t1:7.2f} s  ({n1} requests, {n1 / t1:6.1f} req/s)")
        tn, nn = run(ps, server, Path(tmp) / "cn.sqlite", args.concurrency)
        print(f"concurrency {args.concurrency}: {tn:7.2f} s  ({nn} requests, {nn / tn:6.1f} req/s)")
        speedup = t1 / tn
        print(f"speed-up: {speedup:.1f}x (target >= {MIN_SPEEDUP:.0f}x)")
        tc, nc = run(ps, server, Path(tmp) / "cn.sqlite", args.concurrency)
        print(f"cached rerun:   {tc:7.2f} s  requests sent: {nc} (target 0)")

    ok = speedup >= MIN_SPEEDUP and nc == 0
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
