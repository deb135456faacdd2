"""The server's batcher: concurrent requests share batches, results keep their order, abandoned requests
stop costing work, a failure reaches every waiting request."""

from __future__ import annotations

import threading
import time

import pytest

from distill_ner.engine.batcher import Batcher


class Recorder:
    """A run function that records each batch it is given (rows are answered by doubling)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, rows, key):
        with self.lock:
            self.batches.append(list(rows))
        time.sleep(self.delay)
        return [2 * r for r in rows]


def test_requests_arriving_together_share_a_batch_and_keep_their_order() -> None:
    run = Recorder()
    batcher = Batcher(run, max_batch=64, wait_s=0.2)
    try:
        futures = [batcher.submit(list(range(10 * i, 10 * i + 3))) for i in range(5)]
        results = [f.result(timeout=10) for f in futures]
    finally:
        batcher.close()
    assert results == [[2 * r for r in range(10 * i, 10 * i + 3)] for i in range(5)]
    assert len(run.batches) == 1 and len(run.batches[0]) == 15


def test_a_full_batch_starts_without_waiting_and_batches_never_exceed_max_batch() -> None:
    run = Recorder()
    batcher = Batcher(run, max_batch=8, wait_s=30.0)
    try:
        t0 = time.monotonic()
        assert batcher.submit(list(range(20))).result(timeout=10) == [2 * r for r in range(20)]
        assert time.monotonic() - t0 < 10  # full batches go at once, and so does the rest of a started request
    finally:
        batcher.close()
    assert [len(b) for b in run.batches][:2] == [8, 8] and all(len(b) <= 8 for b in run.batches)


def test_rows_of_different_keys_are_never_mixed() -> None:
    keys: list[tuple[str, list[int]]] = []

    def run(rows, key):
        keys.append((key, list(rows)))
        return rows

    batcher = Batcher(run, max_batch=64, wait_s=0.1)
    try:
        a, b = batcher.submit([1, 2], key="free"), batcher.submit([3], key="grounded")
        assert a.result(timeout=10) == [1, 2] and b.result(timeout=10) == [3]
    finally:
        batcher.close()
    assert sorted(keys) == [("free", [1, 2]), ("grounded", [3])]


def test_a_long_request_does_not_hold_a_short_one_back() -> None:
    """Round robin: a 3-row request submitted behind a 40-row one is done in the first batches."""
    run = Recorder(delay=0.05)
    batcher = Batcher(run, max_batch=8, wait_s=0.05)
    try:
        long = batcher.submit(list(range(100, 140)))
        short = batcher.submit([1, 2, 3])
        assert short.result(timeout=10) == [2, 4, 6]
        assert not long.done(), "the short request finished while the long one still had rows queued"
        assert long.result(timeout=10) == [2 * r for r in range(100, 140)]
    finally:
        batcher.close()


def test_an_abandoned_request_is_dropped_and_the_next_one_is_served() -> None:
    """Rows of a request past its deadline are never decoded (without the expiry every row would be)."""
    run = Recorder(delay=0.05)
    batcher = Batcher(run, max_batch=4, wait_s=0.0)
    try:
        doomed = batcher.submit(list(range(1000, 1200)), deadline=time.monotonic() + 0.3)
        with pytest.raises(TimeoutError):
            doomed.result(timeout=10)
        assert batcher.submit([7]).result(timeout=10) == [14]
    finally:
        batcher.close()
    decoded = [r for b in run.batches for r in b if r >= 1000]
    assert len(decoded) < 200 / 2


def test_a_failing_run_reaches_every_waiting_request_and_the_batcher_goes_on() -> None:
    calls = []

    def run(rows, key):
        calls.append(list(rows))
        if len(calls) == 1:
            raise RuntimeError("engine broke")
        return rows

    batcher = Batcher(run, max_batch=64, wait_s=0.1)
    try:
        first, second = batcher.submit([1]), batcher.submit([2])
        for future in (first, second):
            with pytest.raises(RuntimeError, match="engine broke"):
                future.result(timeout=10)
        assert batcher.submit([3]).result(timeout=10) == [3]
    finally:
        batcher.close()
