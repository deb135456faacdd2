"""The teacher client for any prompt: cache first, then concurrent requests with retries.

Every request ends in exactly one place: `TeacherRun.answers` or `TeacherRun.failures` with a reason
(transport failure after the last retry, or a permanent HTTP error). Responses are committed to the cache
as they arrive, so an interrupted run loses nothing it was answered. Recipes build the prompts and parse
the answers (`distill_ner.ner.annotate`, `distill_ner.extraction.annotate`).
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from distill_ner.config import TeacherConfig
from distill_ner.teacher.backends import Completion, TeacherBackend, TeacherError, make_backend, sampling_params
from distill_ner.teacher.cache import CachedResponse, ResponseCache, request_key

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_S = 600.0  # sanity bound on a server's Retry-After


class TeacherCacheMissError(RuntimeError):
    """Offline mode found requests with no cached teacher response; nothing was sent."""

    def __init__(self, missing: int, total: int, cache_path: str, recorded: list[str]) -> None:
        recorded_note = f"; recorded files loaded: {', '.join(recorded)}" if recorded else "; no recorded files given"
        super().__init__(
            f"teacher.offline is true but {missing} of {total} teacher requests have no cached response "
            f"in {cache_path}{recorded_note}. Add recorded responses (teacher.recorded_responses) that "
            "cover them, or set teacher.offline=false to query the teacher."
        )
        self.missing = missing
        self.cache_path = cache_path


@dataclass(frozen=True)
class TeacherRequest:
    key: str
    messages: list[dict[str, str]]
    params: dict[str, Any]


def make_request(messages: list[dict[str, str]], config: TeacherConfig) -> TeacherRequest:
    """A request for any prompt, keyed by backend kind, model, messages and sampling params."""
    params = sampling_params(config)
    return TeacherRequest(request_key(config.backend, config.model, messages, params), messages, params)


@dataclass
class _Outcome:
    key: str
    attempts: int
    completion: Completion | None = None
    reason: str = ""
    detail: str = ""


class _Sender:
    """Sends one request with retries; runs in worker threads."""

    def __init__(
        self, backend: TeacherBackend, cache: ResponseCache, config: TeacherConfig, stop: threading.Event
    ) -> None:
        self.backend, self.cache, self.config, self.stop = backend, cache, config, stop
        self._rng = random.Random()  # jitter only; not part of any result

    def delay(self, attempt: int, err: TeacherError) -> float:
        if err.retry_after is not None:
            # the server said when; a little jitter keeps waiting workers from returning in lockstep
            return min(err.retry_after, MAX_RETRY_AFTER_S) * self._rng.uniform(1.0, 1.2)
        base = min(self.config.retry_backoff_max_s, self.config.retry_backoff_s * 2**attempt)
        return base * self._rng.uniform(0.5, 1.0)  # "equal jitter"

    def __call__(self, req: TeacherRequest) -> _Outcome:
        attempt = 0
        while True:
            if self.stop.is_set():
                return _Outcome(req.key, attempt, reason="interrupted")
            try:
                completion = self.backend.complete(req.messages, req.params)
            except TeacherError as err:
                attempt += 1
                if not err.retryable or attempt > self.config.max_retries:
                    return _Outcome(req.key, attempt, reason=err.reason, detail=err.detail)
                log.debug("teacher request %s: %s, retry %d", req.key[:12], err.reason, attempt)
                if self.stop.wait(self.delay(attempt - 1, err)):
                    return _Outcome(req.key, attempt, reason="interrupted")
                continue
            attempt += 1
            if self.stop.is_set():  # the run ended (Ctrl-C) while this request was in flight: its cache is closed
                return _Outcome(req.key, attempt, reason="interrupted")
            # committed before the worker returns: a kill after this line loses nothing
            self.cache.put(
                req.key,
                backend=self.config.backend,
                model=self.config.model,
                messages=req.messages,
                params=req.params,
                response=completion.text,
                usage={"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens},
            )
            return _Outcome(req.key, attempt, completion=completion)


def _send_all(
    requests: list[TeacherRequest], backend: TeacherBackend, cache: ResponseCache, config: TeacherConfig, progress: bool
) -> dict[str, _Outcome]:
    stop = threading.Event()
    sender = _Sender(backend, cache, config, stop)
    todo: queue.SimpleQueue[TeacherRequest] = queue.SimpleQueue()
    finished: queue.SimpleQueue[_Outcome | BaseException] = queue.SimpleQueue()
    for req in requests:
        todo.put(req)

    def work() -> None:
        while not stop.is_set():
            try:
                req = todo.get_nowait()
            except queue.Empty:
                return
            try:
                finished.put(sender(req))
            except BaseException as exc:  # a bug in a worker: raised in the caller's thread below
                finished.put(exc)
                return

    # Daemon threads, not a ThreadPoolExecutor: its workers are joined at exit, so Ctrl-C would wait up to
    # timeout_s for every request in flight. Answers already received are cached; a late one is dropped.
    for i in range(min(config.concurrency, len(requests))):
        threading.Thread(target=work, name=f"teacher-{i}", daemon=True).start()
    outcomes: dict[str, _Outcome] = {}
    failures = 0
    bar = tqdm(total=len(requests), desc="teacher", unit="req", disable=not progress, smoothing=0.1)
    try:
        while len(outcomes) < len(requests):
            try:
                out = finished.get(timeout=0.2)  # a bounded wait keeps the main thread responsive to signals
            except queue.Empty:
                continue
            if isinstance(out, BaseException):
                raise out
            outcomes[out.key] = out
            failures += out.completion is None
            bar.update(1)
            bar.set_postfix(failed=failures, refresh=False)
    finally:
        stop.set()  # Ctrl-C or an error: workers take no new request and stop retrying
        bar.close()
    return outcomes


@dataclass
class TeacherRun:
    """What the teacher answered, per request key: every key is in exactly one of `answers` or `failures`."""

    answers: dict[str, str]
    failures: dict[str, tuple[str, str]]  # key -> (reason, detail): transport or HTTP failure after retries
    usage: dict[str, float]


def run_teacher(
    requests: list[TeacherRequest],
    config: TeacherConfig,
    *,
    backend: TeacherBackend | None = None,
    progress: bool = True,
) -> TeacherRun:
    """Answers for `requests`: the cache (with recorded files) first, then concurrent sends with retries.

    Shared by every recipe; only prompts and answer parsers differ. `backend` replaces how requests
    are sent (default: built from `config`). Offline, a cache miss raises before anything is sent.
    """
    unique: dict[str, TeacherRequest] = {r.key: r for r in requests}
    cache = ResponseCache(config.cache_path)
    try:
        for path in config.recorded_responses:
            added = cache.import_jsonl(path)
            log.info("teacher: loaded %d new recorded responses from %s", added, path)
        cached: dict[str, CachedResponse] = cache.get_many(unique)
        missing = [r for k, r in unique.items() if k not in cached]
        n_missing = sum(1 for r in requests if r.key not in cached)
        if missing and config.offline:
            raise TeacherCacheMissError(n_missing, len(requests), str(cache.path), config.recorded_responses)
        outcomes: dict[str, _Outcome] = {}
        if missing:
            log.info(
                "teacher: %d requests cached, sending %d (concurrency %d)",
                len(requests) - n_missing,
                len(missing),
                config.concurrency,
            )
            if backend is None:
                backend = make_backend(config)
            outcomes = _send_all(missing, backend, cache, config, progress)
    finally:
        cache.close()

    answers = {k: c.response for k, c in cached.items()}
    failures: dict[str, tuple[str, str]] = {}
    for key, out in outcomes.items():
        if out.completion is None:
            failures[key] = (out.reason, f"after {out.attempts} attempt(s): {out.detail}".strip())
        else:
            answers[key] = out.completion.text
    fresh = [o.completion for o in outcomes.values() if o.completion is not None]
    prompt_tokens = sum(c.prompt_tokens for c in fresh)
    completion_tokens = sum(c.completion_tokens for c in fresh)
    usage: dict[str, float] = {
        "requests": sum(o.attempts for o in outcomes.values()),  # HTTP requests sent, retries included
        "cache_hits": sum(1 for r in requests if r.key in cached),
        "failures": sum(1 for r in requests if r.key in failures),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "estimated_cost": round(
            prompt_tokens / 1000 * config.price_per_1k_prompt_tokens
            + completion_tokens / 1000 * config.price_per_1k_completion_tokens,
            6,
        ),
    }
    return TeacherRun(answers=answers, failures=failures, usage=usage)
