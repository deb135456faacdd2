"""The one JSONL reader: blank lines skipped, every error names file and line."""

import pytest

from distill_ner.jsonl import iter_jsonl


def test_values_with_their_place(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"x": 1}\n\n  \n{"x": 2}\n', encoding="utf-8")
    assert list(iter_jsonl(path)) == [(f"{path}:1", {"x": 1}), (f"{path}:4", {"x": 2})]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"x": ', r"a\.jsonl:2: invalid JSON \(Expecting value at column \d+\)"),
        ("[1, 2]", r"a\.jsonl:2: expected a JSON object per line, got list"),
    ],
)
def test_bad_line_named(tmp_path, line, message):
    path = tmp_path / "a.jsonl"
    path.write_text('{"x": 1}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        list(iter_jsonl(path))


def test_non_objects_allowed_when_asked(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text("[1, 2]\n3\n", encoding="utf-8")
    assert [v for _, v in iter_jsonl(path, objects=False)] == [[1, 2], 3]


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        list(iter_jsonl(tmp_path / "nope.jsonl"))


def test_bytes_that_are_not_utf8_name_file_and_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes('{"text": "ok"}\n{"text": "caf'.encode() + b"\xe9" + b'"}\n')  # latin-1 é
    with pytest.raises(ValueError, match=r"a\.jsonl:2: not UTF-8 \(byte b'\\xe9' at column 14\)"):
        list(iter_jsonl(path))
