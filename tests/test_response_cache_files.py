"""The teacher's response cache as a file: a damaged one is named, and the .sqlite alone holds every answer
once a run ends (a copy without its -wal file loses nothing)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from distill_ner.teacher.cache import CacheDamagedError, ResponseCache

MESSAGES = [{"role": "user", "content": "Passage: x"}]


def fill(cache: ResponseCache, n: int, size: int = 10) -> None:
    for i in range(n):
        cache.put(
            f"k{i:05d}",
            backend="openai",
            model="m",
            messages=MESSAGES,
            params={"i": i},
            response=f"[('{i}', 'number')]" + "x" * size,
            usage={},
        )


def test_a_file_that_is_not_a_database_is_named(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    path.write_bytes(b"this is no SQLite file, it was overwritten by something else\n" * 100)
    with pytest.raises(CacheDamagedError, match=rf"teacher response cache {path}: file is not a database"):
        ResponseCache(path)


def test_damaged_pages_are_named(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    with ResponseCache(path) as cache:
        fill(cache, 300, size=1000)
    with path.open("r+b") as f:  # a disk error in the middle of the table
        f.seek(8192)
        f.write(b"\xff" * 65536)
    cache = ResponseCache(path)
    with pytest.raises(CacheDamagedError, match=rf"teacher response cache {path}: database disk image is malformed"):
        cache.get_many(f"k{i:05d}" for i in range(300))
    cache.close()


def test_the_sqlite_file_alone_holds_every_answer_after_close(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    reader = ResponseCache(path)  # another user of the file (a second run, a notebook) keeps it open
    assert len(reader) == 0
    writer = ResponseCache(path)
    fill(writer, 25)
    writer.close()  # the end of a run
    copy = tmp_path / "copy.sqlite"
    shutil.copy(path, copy)  # the .sqlite without its -wal file
    with ResponseCache(copy) as copied:
        assert len(copied) == 25
    reader.close()


def test_an_export_leaves_the_sqlite_file_complete(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    reader = ResponseCache(path)
    assert len(reader) == 0
    cache = ResponseCache(path)
    fill(cache, 7)
    assert cache.export_jsonl(tmp_path / "export.jsonl") == 7
    shutil.copy(path, tmp_path / "copy.sqlite")
    with ResponseCache(tmp_path / "copy.sqlite") as copied:
        assert len(copied) == 7
    cache.close()
    reader.close()
