"""Rows of concurrent requests decoded together: a server's threads submit their rows and wait; one worker
thread owns the engine and runs what is queued in batches.

A batch starts when `max_batch` rows are waiting or `wait_s` after the oldest waiting row arrived, so a lone
request pays at most `wait_s` and requests that arrive together share their decoding steps. A batch takes
rows from every waiting request in turn (round robin), so a long document does not hold short requests
back until it is done. Rows are only batched with rows of the same `key` (e.g. free vs grounded decoding).

A request whose deadline passes (its client gave up, or the server's request time limit) is answered with
TimeoutError and its rows not yet decoded are dropped; rows already in a running batch finish with it (a
batch is bounded: at most max_batch rows of at most max_new_tokens tokens).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class _Request:
    rows: list[Any]
    key: Hashable
    deadline: float | None
    arrived: float
    future: Future = field(default_factory=Future)
    results: list[Any] = field(default_factory=list)  # filled in row order
    next_row: int = 0  # rows before it are decoded or in a running batch

    @property
    def waiting(self) -> int:
        return len(self.rows) - self.next_row


class Batcher:
    """`submit(rows, key, deadline)` -> Future of `run(rows, key)`'s results for those rows, in order.

    `run(rows, key)` must return one result per row, in order; the worker thread is its only caller."""

    def __init__(
        self,
        run: Callable[[list[Any], Hashable], Sequence[Any]],
        max_batch: int = 64,
        wait_s: float = 0.01,
        name: str = "batcher",
    ) -> None:
        if max_batch <= 0 or wait_s < 0:
            raise ValueError("max_batch must be positive and wait_s not negative")
        self._run = run
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._queue: list[_Request] = []
        self._cond = threading.Condition()
        self._closed = False
        self.batches = 0  # batches run, and the rows in them: how much batching happened
        self.batched_rows = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, rows: Sequence[Any], key: Hashable = None, deadline: float | None = None) -> Future:
        """Queue rows; `deadline` is a time.monotonic() after which the request is abandoned."""
        request = _Request(rows=list(rows), key=key, deadline=deadline, arrived=time.monotonic())
        if not request.rows:
            request.future.set_result([])
            return request.future
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._queue.append(request)
            self._cond.notify_all()
        return request.future

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    # ------------------------------------------------------------------------------------ worker

    def _expire(self, now: float) -> None:
        for request in [r for r in self._queue if r.deadline is not None and now >= r.deadline]:
            self._queue.remove(request)
            request.future.set_exception(
                TimeoutError(f"request abandoned after its deadline ({request.waiting} rows undone)")
            )

    def _take(self) -> tuple[Hashable, list[tuple[_Request, int, int]]] | None:
        """Wait for a batch to be due; returns its key and (request, first row, end row) slices."""
        while True:
            now = time.monotonic()
            self._expire(now)
            if self._closed and not self._queue:
                return None
            waiting = [r for r in self._queue if r.waiting > 0]
            if not waiting:
                self._cond.wait(timeout=self._next_deadline(now))
                continue
            key = waiting[0].key
            same = [r for r in waiting if r.key == key]
            # the wait window is for newcomers: a request already being decoded goes on at once
            due = min(r.arrived + (self.wait_s if r.next_row == 0 else 0.0) for r in same)
            if sum(r.waiting for r in same) >= self.max_batch or now >= due or self._closed:
                break
            self._cond.wait(timeout=min(due - now, self._next_deadline(now) or due - now))
        # round robin over the requests of this key, one row each per turn
        take = {id(r): 0 for r in same}
        room = self.max_batch
        while room > 0:
            progressed = False
            for r in same:
                if room > 0 and take[id(r)] < r.waiting:
                    take[id(r)] += 1
                    room -= 1
                    progressed = True
            if not progressed:
                break
        slices = []
        for r in same:
            n = take[id(r)]
            if n:
                slices.append((r, r.next_row, r.next_row + n))
                r.next_row += n
        return key, slices

    def _next_deadline(self, now: float) -> float | None:
        deadlines = [r.deadline - now for r in self._queue if r.deadline is not None]
        return max(min(deadlines), 0.0) if deadlines else None

    def _loop(self) -> None:
        while True:
            with self._cond:
                batch = self._take()
            if batch is None:
                return
            key, slices = batch
            rows = [row for r, lo, hi in slices for row in r.rows[lo:hi]]
            try:
                results = list(self._run(rows, key))
                if len(results) != len(rows):
                    raise RuntimeError(f"{len(results)} results for {len(rows)} rows")
            except BaseException as exc:  # noqa: BLE001  (the waiting requests must hear of it, not hang)
                with self._cond:
                    for r, _, _ in slices:
                        if r in self._queue:
                            self._queue.remove(r)
                        if not r.future.done():
                            r.future.set_exception(exc)
                continue
            self.batches += 1
            self.batched_rows += len(rows)
            with self._cond:
                at = 0
                for r, lo, hi in slices:
                    r.results.extend(results[at : at + hi - lo])
                    at += hi - lo
                    if len(r.results) == len(r.rows) and not r.future.done():
                        self._queue.remove(r)
                        r.future.set_result(r.results)
