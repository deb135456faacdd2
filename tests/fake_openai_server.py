"""A real local HTTP server that speaks OpenAI chat-completions, with fault injection.

Run as a process (the tests and benchmarks/bench_teacher.py start it with `FakeOpenAIServer`):

    python tests/fake_openai_server.py --port 0 --config '{"rate_429": 0.2, "time_scale": 0.05}'

It prints `LISTENING <port>` on stdout once it accepts connections.

Answers are deterministic functions of the passage: every maximal run of capitalised words becomes
`("Run Of Words", "proper noun")`, every number `("1999", "number")`; one passage in seven gets a line
of prose before the list, so clients must tolerate it. Faults are drawn per request from a seeded RNG:
429 with Retry-After, 500, a hang past the client's timeout, or a malformed body. Every duration
(latency, Retry-After, hang) is multiplied by `time_scale`, so tests can run the same mix fast.

Endpoints: POST /v1/chat/completions; GET /stats (request counters and a per-request log of
passage hashes and outcomes); POST /control {"config": {...}, "reset": bool} to change faults or
clear counters between tests. Only the stdlib is used, so the server runs wherever Python does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_CONFIG: dict[str, Any] = {
    "rate_429": 0.0,  # share of requests answered 429 with a Retry-After header
    "rate_500": 0.0,  # share answered 500
    "rate_hang": 0.0,  # share that sleep `hang_s` before answering (past the client's timeout)
    "rate_malformed": 0.0,  # share answered 200 with a broken body
    "latency_s": 0.0,  # fixed delay before every answer
    "retry_after_s": 1.0,
    "hang_s": 30.0,
    "time_scale": 1.0,  # multiplies latency_s, retry_after_s and hang_s
    "seed": 0,
    # passages containing this marker always get a 500, so tests can force a permanent failure
    "fail_marker": None,
    # passages containing this marker get a 401 whose message echoes the bearer token, like a careless
    # server would: clients must scrub the key from errors they keep
    "auth_fail_marker": None,
    "model": None,  # when set, requests naming another model get a 404
}

_CAPS = re.compile(r"\b[A-Z][A-Za-z'\-]*(?:\s+[A-Z][A-Za-z'\-]*)*")
_NUMBER = re.compile(r"\b\d+(?:\.\d+)?\b")


def passage_of(messages: list[dict[str, Any]]) -> str:
    """The passage the client asked about: what follows 'Passage: ' in the last user message."""
    user = [m for m in messages if m.get("role") == "user"]
    content = str(user[-1].get("content", "")) if user else ""
    _, sep, passage = content.partition("Passage: ")
    return passage if sep else content


def passage_hash(passage: str) -> str:
    return hashlib.sha1(passage.encode("utf-8")).hexdigest()[:16]


def annotate(passage: str) -> str:
    """The deterministic 'teacher answer' for a passage, in UniNER's tuple-list format."""
    items: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for match in _CAPS.finditer(passage):
        item = (match.group(0), "proper noun")
        if item not in seen:
            seen.add(item)
            items.append(item)
    for match in _NUMBER.finditer(passage):
        item = (match.group(0), "number")
        if item not in seen:
            seen.add(item)
            items.append(item)
    body = "[" + ", ".join(f"({json.dumps(e)}, {json.dumps(t)})" for e, t in items) + "]"
    if int(passage_hash(passage), 16) % 7 == 0:
        body = "Here are the entities I found:\n" + body
    return body


class _State:
    def __init__(self, config: dict[str, Any]) -> None:
        self.lock = threading.Lock()
        self.config = {**DEFAULT_CONFIG, **config}
        self.rng = random.Random(self.config["seed"])
        self.reset_counters()

    def reset_counters(self) -> None:
        self.counts: dict[str, int] = {"requests": 0}
        self.log: list[dict[str, Any]] = []
        self.auth_sha256: set[str] = set()

    def record(self, outcome: str, passage: str | None, auth: str | None) -> None:
        with self.lock:
            self.counts["requests"] += 1
            self.counts[outcome] = self.counts.get(outcome, 0) + 1
            self.log.append({"outcome": outcome, "passage": passage_hash(passage) if passage is not None else None})
            if auth:
                # only a hash is kept: tests check the key was sent without the server holding it
                self.auth_sha256.add(hashlib.sha256(auth.encode("utf-8")).hexdigest())

    def draw_fault(self) -> str:
        cfg = self.config
        with self.lock:
            r = self.rng.random()
        for name in ("rate_429", "rate_500", "rate_hang", "rate_malformed"):
            if r < cfg[name]:
                return name[len("rate_") :]
            r -= cfg[name]
        return "ok"

    def seconds(self, key: str) -> float:
        return float(self.config[key]) * float(self.config["time_scale"])


_MALFORMED_BODIES = [
    b'{"id": "x", "object": "chat.completion", "choices": [{"index": 0, "mess',  # truncated
    b"<html><body>502 Bad Gateway (but sent as 200)</body></html>",  # not JSON at all
    b'{"id": "x", "object": "chat.completion", "created": 0, "model": "m"}',  # no choices
    b'{"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": '
    b'[{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": null}}]}',
]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real API servers
    # headers and body go out in two writes; without TCP_NODELAY, Nagle + delayed ACK add ~40 ms each
    disable_nagle_algorithm = True
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # quiet: the tests read /stats instead

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout); nothing to do

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode("utf-8"), headers)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        state = self.server.state
        if self.path == "/stats":
            with state.lock:
                self._json(
                    200,
                    {
                        "counts": dict(state.counts),
                        "log": list(state.log),
                        "auth_sha256": sorted(state.auth_sha256),
                        "config": dict(state.config),
                    },
                )
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        state = self.server.state
        raw = self._read_body()
        if self.path == "/control":
            req = json.loads(raw or b"{}")
            unknown = set(req.get("config") or {}) - set(DEFAULT_CONFIG)
            if unknown:
                self._json(400, {"error": {"message": f"unknown config keys: {sorted(unknown)}"}})
                return
            with state.lock:
                if req.get("config"):
                    state.config.update(req["config"])
                    if "seed" in req["config"]:
                        state.rng = random.Random(state.config["seed"])
                if req.get("reset"):
                    state.reset_counters()
            self._json(200, {"ok": True})
            return
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        self._completions(raw)

    def _completions(self, raw: bytes) -> None:
        state = self.server.state
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        try:
            req = json.loads(raw)
            messages = req["messages"]
            passage = passage_of(messages)
        except (ValueError, KeyError, TypeError) as exc:
            state.record("bad_request", None, token)
            self._json(400, {"error": {"message": f"bad request: {exc}", "type": "invalid_request_error"}})
            return
        cfg = state.config
        if cfg["model"] and req.get("model") != cfg["model"]:
            state.record("not_found", passage, token)
            self._json(404, {"error": {"message": f"model {req.get('model')!r} not found"}})
            return
        latency = state.seconds("latency_s")
        if latency:
            time.sleep(latency)
        fault = state.draw_fault()
        if cfg["fail_marker"] and cfg["fail_marker"] in passage:
            fault = "500"
        if cfg["auth_fail_marker"] and cfg["auth_fail_marker"] in passage:
            state.record("401", passage, token)
            self._json(
                401,
                {
                    "error": {
                        "message": f"Incorrect API key provided: {token}",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
            )
            return
        state.record(fault, passage, token)
        if fault == "429":
            retry_after = state.seconds("retry_after_s")
            self._json(
                429,
                {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}},
                {"Retry-After": f"{retry_after:.3f}"},
            )
        elif fault == "500":
            self._json(500, {"error": {"message": "The server had an error", "type": "server_error"}})
        elif fault == "malformed":
            with state.lock:
                body = state.rng.choice(_MALFORMED_BODIES)
            self._send(200, body)
        else:
            if fault == "hang":
                time.sleep(state.seconds("hang_s"))
            answer = annotate(passage)
            prompt_words = sum(len(str(m.get("content", "")).split()) for m in messages)
            self._json(
                200,
                {
                    "id": "chatcmpl-" + passage_hash(passage),
                    "object": "chat.completion",
                    "created": 0,
                    "model": req.get("model", ""),
                    "choices": [
                        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}
                    ],
                    "usage": {
                        "prompt_tokens": prompt_words,
                        "completion_tokens": len(answer.split()),
                        "total_tokens": prompt_words + len(answer.split()),
                    },
                },
            )


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # hung handlers must not keep the process alive
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], config: dict[str, Any]) -> None:
        super().__init__(address, _Handler)
        self.state = _State(config)


class FakeOpenAIServer:
    """Starts the server above as a subprocess on a free port; use as a context manager."""

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.proc: subprocess.Popen[str] | None = None
        self.port: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 20.0) -> "FakeOpenAIServer":
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--port", "0", "--config", json.dumps(self.config)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()  # blocks until the server prints its port (or dies)
        if not line.startswith("LISTENING ") or time.monotonic() > deadline:
            self.stop()
            raise RuntimeError(f"fake OpenAI server did not start (got {line!r})")
        self.port = int(line.split()[1])
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = json.dumps(payload).encode("utf-8") if payload is not None else None
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/stats")

    def control(self, reset: bool = False, **config: Any) -> None:
        self._call("POST", "/control", {"config": config, "reset": reset})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--config", default="{}", help="JSON object overriding DEFAULT_CONFIG")
    args = parser.parse_args()
    config = json.loads(args.config)
    unknown = set(config) - set(DEFAULT_CONFIG)
    if unknown:
        parser.error(f"unknown config keys: {sorted(unknown)}")
    server = _Server((args.host, args.port), config)
    print(f"LISTENING {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
