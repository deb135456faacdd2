"""Templates (NuExtract's JSON skeletons) and fillings: parse, validate, blank, check conformance.

A template is a non-empty JSON object whose values are, recursively:
- `""`           one string,
- `[]`           a list of strings,
- `[ {object} ]` a list of objects, each shaped like the one object given (itself a template),
- `{object}`     a nested object (non-empty).
Keys are non-empty strings, unique within their object. Nothing else is allowed (no numbers, booleans,
null, enums: "ONLY STRING TYPE ARE ALLOWED AS VALUES"). Depth counts objects along a path, the root being
1; NuExtract's data has templates up to 9 levels deep, which is the default limit.

A filling conforms to a template when every object has exactly the template's keys (order free), every
`""` leaf holds a string, every `[]` a list of strings and every `[ {object} ]` a list of conforming
objects. The empty filling has `""` and `[]` everywhere.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

MAX_DEPTH = 9

_FENCE = re.compile(r"```[A-Za-z0-9_-]*\s*\n?(.*?)```", re.S)


class TemplateError(ValueError):
    """A template (or a teacher's answer meant to be one) that breaks the rules; the message names the path."""


class DuplicateKeyError(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # JSON allows duplicate keys and json.loads keeps the last; for a template that silently loses a
    # field, so it is an error instead
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(f"duplicate key {key!r}")
        out[key] = value
    return out


_STRICT = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys)
_LENIENT = json.JSONDecoder()  # duplicate keys: the last one wins, as in json.loads


def _top_level_starts(text: str) -> list[int]:
    """Positions of every `{` that is not inside an earlier, still open object (quotes respected inside
    objects only: prose apostrophes are not string delimiters)."""
    starts: list[int] = []
    depth, in_string, escaped = 0, False, False
    for i, c in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"' and depth:
            in_string = True
        elif c == "{":
            if not depth:
                starts.append(i)
            depth += 1
        elif c == "}" and depth:
            depth -= 1
    return starts


def parse_json_object(text: str, *, strict: bool = True) -> dict[str, Any]:
    """The JSON object of a model's answer (inside a ``` fence, or after prose); ValueError if none.

    Only a `{` outside any earlier open object can start it, so a truncated answer is never "rescued" as
    one of its inner objects. `strict` (teacher answers, templates): a duplicate key is an error, and
    every such `{` is tried in turn, since a teacher may write prose (even braces) before its JSON. Not
    strict (student answers, scored as written): duplicate keys follow JSON's usual last-one-wins, and
    only the first `{` is read: the student is trained to answer with the object itself. `raw_decode`
    stops at the end of the object, so trailing text (an `<|end-output|>` marker) is ignored either way.
    """
    decoder = _STRICT if strict else _LENIENT
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    first_error = "no JSON object found"
    for candidate in candidates:
        starts = _top_level_starts(candidate)
        for start in starts if strict else starts[:1]:
            try:
                value, _ = decoder.raw_decode(candidate, start)
            except DuplicateKeyError as exc:
                first_error = str(exc) if first_error == "no JSON object found" else first_error
                continue
            except (ValueError, RecursionError):
                continue
            if isinstance(value, dict):
                return value
    raise ValueError(first_error)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def validate_template(template: Any, max_depth: int = MAX_DEPTH, _path: str = "", _depth: int = 1) -> dict[str, Any]:
    """Return the template unchanged if it follows the rules (module doc); else TemplateError naming the path."""
    where = _path or "<root>"
    if not isinstance(template, dict):
        raise TemplateError(f"{where}: expected an object, got {type(template).__name__}")
    if not template:
        raise TemplateError(f"{where}: empty object")
    if _depth > max_depth:
        raise TemplateError(f"{where}: deeper than {max_depth} levels")
    for key, value in template.items():
        path = _join(_path, key)
        if not isinstance(key, str) or not key.strip():
            raise TemplateError(f"{where}: empty key")
        if value == "" or value == []:
            continue
        if isinstance(value, dict):
            validate_template(value, max_depth, path, _depth + 1)
        elif isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
            validate_template(value[0], max_depth, path + "[]", _depth + 1)
        elif isinstance(value, str):
            raise TemplateError(f'{path}: a template leaf is "", got {value!r}')
        else:
            raise TemplateError(f'{path}: expected "", [], [{{...}}] or {{...}}, got {json.dumps(value)[:60]}')
    return template


def skeleton(value: Any, max_depth: int = MAX_DEPTH) -> tuple[dict[str, Any], bool]:
    """A template from a teacher's answer that may hold example values, and whether anything was blanked.

    Teachers often write a schema with sample values ({"name": "John"}) or several list items; those are
    reduced to the skeleton (`""`, `[]`, one merged object). Non-string scalars stay errors: the prompt
    forbids them and the template would no longer say "strings only".
    """
    changed = False

    def walk(v: Any, path: str) -> Any:
        nonlocal changed
        if isinstance(v, str):
            changed |= v != ""
            return ""
        if isinstance(v, dict):
            return {k: walk(x, _join(path, k)) for k, x in v.items()}
        if isinstance(v, list):
            if all(isinstance(x, str) for x in v):
                changed |= bool(v)
                return []
            if all(isinstance(x, dict) for x in v):
                merged: dict[str, Any] = {}
                for item in v:  # the union of the items' keys, first spelling of each wins
                    for k, x in item.items():
                        merged.setdefault(k, x)
                changed |= len(v) > 1
                return [walk(merged, path + "[]")]
            raise TemplateError(f"{path}: a list must hold only strings or only objects")
        raise TemplateError(f"{path or '<root>'}: only strings are allowed as values, got {json.dumps(v)[:60]}")

    result = walk(value, "")
    return validate_template(result, max_depth), changed


def empty_fill(template: dict[str, Any]) -> dict[str, Any]:
    """The filling with nothing found: "" for strings, [] for every list."""
    return {k: (empty_fill(v) if isinstance(v, dict) else "" if v == "" else []) for k, v in template.items()}


def conformance_errors(filled: Any, template: dict[str, Any], _path: str = "") -> list[str]:
    """Every place where `filled` does not follow `template` (empty list: it conforms)."""
    where = _path or "<root>"
    if not isinstance(filled, dict):
        return [f"{where}: expected an object, got {type(filled).__name__}"]
    errors = [f"{_join(_path, k)}: missing key" for k in template if k not in filled]
    errors += [f"{_join(_path, k)}: key not in the template" for k in filled if k not in template]
    for key, shape in template.items():
        if key not in filled:
            continue
        value, path = filled[key], _join(_path, key)
        if shape == "":
            if not isinstance(value, str):
                errors.append(f"{path}: expected a string, got {type(value).__name__}")
        elif shape == []:
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                errors.append(f"{path}: expected a list of strings")
        elif isinstance(shape, dict):
            errors += conformance_errors(value, shape, path)
        elif not isinstance(value, list):
            errors.append(f"{path}: expected a list of objects, got {type(value).__name__}")
        else:
            for i, item in enumerate(value):
                errors += conformance_errors(item, shape[0], f"{path}[{i}]")
    return errors


def conforms(filled: Any, template: dict[str, Any]) -> bool:
    return not conformance_errors(filled, template)


def string_leaves(value: Any, _path: str = "") -> Iterator[tuple[str, str]]:
    """(path, string) for every non-empty string in a filling, in document order."""
    if isinstance(value, str):
        if value:
            yield _path, value
    elif isinstance(value, dict):
        for key, x in value.items():
            yield from string_leaves(x, _join(_path, key))
    elif isinstance(value, list):
        for i, x in enumerate(value):
            yield from string_leaves(x, f"{_path}[{i}]")


def depth(template: dict[str, Any]) -> int:
    """Objects along the deepest path (the root object is 1)."""
    inner = [
        depth(v if isinstance(v, dict) else v[0])
        for v in template.values()
        if isinstance(v, dict) or (isinstance(v, list) and v)
    ]
    return 1 + max(inner, default=0)
