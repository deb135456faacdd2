"""Persistent teacher-response cache: one SQLite file, safe across threads and processes.

A response is committed the moment it arrives (autocommit, WAL journal), so a run killed at any
point keeps everything it was answered and a rerun asks only for the rest. Each thread gets its own
connection (sqlite3 connections must not be shared across threads); WAL lets several processes read
while one writes, and `busy_timeout` makes concurrent writers wait instead of failing.

The key is the sha256 of the canonical JSON of (backend, model, messages, sampling params): the same
request always maps to the same row, whichever run, machine or passage id asked it.

Cache export format (also the format of recorded teacher files), one JSON object per line:
    {"key", "backend", "model", "messages", "params", "response", "usage"}
"""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from distill_ner.jsonl import iter_jsonl

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key        TEXT PRIMARY KEY,
    backend    TEXT NOT NULL,
    model      TEXT NOT NULL,
    messages   TEXT NOT NULL,
    params     TEXT NOT NULL,
    response   TEXT NOT NULL,
    usage      TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""


def canonical_json(obj: Any) -> str:
    """One spelling per value: sorted keys, no spaces, UTF-8 kept as is."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_key(backend: str, model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
    payload = {"backend": backend, "model": model, "messages": messages, "params": params}
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


class CacheRecord(BaseModel):
    """One line of the export format; unknown keys are an error so typos in recorded files surface."""

    model_config = ConfigDict(extra="forbid")

    key: str
    backend: str
    model: str
    messages: list[dict[str, str]]
    params: dict[str, Any]
    response: str
    usage: dict[str, int] = {}

    def expected_key(self) -> str:
        return request_key(self.backend, self.model, self.messages, self.params)


@dataclass(frozen=True)
class CachedResponse:
    response: str
    usage: dict[str, int] = field(default_factory=dict)


class CacheDamagedError(RuntimeError):
    """The cache file is not a readable SQLite database (truncated, overwritten, a disk error)."""


def _names_the_file(method: Any) -> Any:
    """SQLite says only "database disk image is malformed"; the error should say which file."""

    @functools.wraps(method)
    def wrapper(self: "ResponseCache", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):  # locked, busy, read-only: not damage
                raise
            raise CacheDamagedError(
                f"teacher response cache {self.path}: {exc}. The file is damaged or not a SQLite database: "
                "move it (and its -wal file) aside and rerun; its answers are asked again, or come back from "
                "an export of it listed in teacher.recorded_responses."
            ) from exc

    return wrapper


class ResponseCache:
    @_names_the_file
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._conn().execute(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: autocommit, every INSERT is durable on return
            conn = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a process crash (SIGKILL); only power loss can drop the last commits
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=60000")
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    @_names_the_file
    def get(self, key: str) -> CachedResponse | None:
        row = self._conn().execute("SELECT response, usage FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else CachedResponse(row[0], json.loads(row[1]))

    @_names_the_file
    def get_many(self, keys: Iterable[str]) -> dict[str, CachedResponse]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, CachedResponse] = {}
        conn = self._conn()
        for i in range(0, len(keys), 500):  # stay under SQLite's bound-parameter limit
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for key, response, usage in conn.execute(
                f"SELECT key, response, usage FROM responses WHERE key IN ({marks})", chunk
            ):
                found[key] = CachedResponse(response, json.loads(usage))
        return found

    @_names_the_file
    def put(
        self,
        key: str,
        *,
        backend: str,
        model: str,
        messages: list[dict[str, str]],
        params: dict[str, Any],
        response: str,
        usage: dict[str, int] | None = None,
    ) -> bool:
        """Store one response; the first answer for a key wins (later ones are ignored). True if stored."""
        cur = self._conn().execute(
            "INSERT OR IGNORE INTO responses (key, backend, model, messages, params, response, usage, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                backend,
                model,
                canonical_json(messages),
                canonical_json(params),
                response,
                canonical_json(usage or {}),
                time.time(),
            ),
        )
        return cur.rowcount == 1

    @_names_the_file
    def __contains__(self, key: object) -> bool:
        return self._conn().execute("SELECT 1 FROM responses WHERE key = ?", (key,)).fetchone() is not None

    @_names_the_file
    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def records(self) -> Iterator[CacheRecord]:
        """All entries, sorted by key so an export is byte-identical for identical contents."""
        for key, backend, model, messages, params, response, usage in self._rows():
            yield CacheRecord(
                key=key,
                backend=backend,
                model=model,
                messages=json.loads(messages),
                params=json.loads(params),
                response=response,
                usage=json.loads(usage),
            )

    def import_jsonl(self, path: str | Path) -> int:
        """Load a file in the export format; returns how many new entries it added.

        Every line is checked (schema, and that its key really is the key of its request) before
        anything is written, so a bad file changes nothing and the error names its line.
        """
        path = Path(path).expanduser()
        records = list(read_jsonl_records(path))
        conn = self._conn()
        added = 0
        conn.execute("BEGIN IMMEDIATE")  # one transaction: fast, and all-or-nothing
        try:
            for rec in records:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO responses (key, backend, model, messages, params, response, usage,"
                    " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        rec.key,
                        rec.backend,
                        rec.model,
                        canonical_json(rec.messages),
                        canonical_json(rec.params),
                        rec.response,
                        canonical_json(rec.usage),
                        time.time(),
                    ),
                )
                added += cur.rowcount
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return added

    @_names_the_file
    def _rows(self) -> list[tuple[str, ...]]:
        return (
            self._conn()
            .execute("SELECT key, backend, model, messages, params, response, usage FROM responses ORDER BY key")
            .fetchall()
        )

    def checkpoint(self) -> None:
        """Copy the write-ahead log into the .sqlite file, so that file alone holds every answer (a copy
        of it without its -wal file, after a crash, loses none). Skipped while another process writes."""
        try:
            self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError:
            pass  # busy: the next checkpoint (or the last connection to close) does it

    @_names_the_file
    def export_jsonl(self, path: str | Path) -> int:
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        n = 0
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for rec in self.records():
                f.write(canonical_json(rec.model_dump()) + "\n")
                n += 1
        tmp.replace(path)  # a reader never sees a half-written export
        self.checkpoint()
        return n

    def close(self) -> None:
        if self._all:
            self.checkpoint()
        with self._all_lock:
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.ProgrammingError:
                    pass  # closed from its own thread already
            self._all.clear()
        self._local = threading.local()

    def __enter__(self) -> "ResponseCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_jsonl_records(path: Path) -> Iterator[CacheRecord]:
    """Parse and verify a file in the export format; errors name the file and line."""
    if not path.is_file():
        raise FileNotFoundError(f"recorded teacher responses: no such file: {path}")
    for where, obj in iter_jsonl(path):
        try:
            rec = CacheRecord.model_validate(obj)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "<line>"
            raise ValueError(f"{where}: bad cache record at key {loc!r}: {err['msg']}") from None
        if rec.key != rec.expected_key():
            raise ValueError(
                f"{where}: key {rec.key[:12]}… is not the sha256 of this record's "
                "(backend, model, messages, params); the file was edited or written with another key scheme"
            )
        yield rec
