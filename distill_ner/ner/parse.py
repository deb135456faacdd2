"""Turn a teacher answer into entities, counting every item the filters remove, by reason.

Parsing is literal only, never `eval`: the JSON and Python literals an answer holds (lists, tuples,
dicts, strings in either quote, numbers, True/False/None, null/true/false), read by a tokenizer
with an explicit stack, so any answer up to MAX_ANSWER_CHARS takes linear time and nothing
recurses. When the answer has prose around the list, the first bracketed span that parses to a list
of tuples is taken (brackets inside a span's quoted strings are not spans of their own).

Filters, in the order applied to each item (the first that matches names the reason):
- malformed_item: not an (entity, type) or (entity, type, description) sequence of strings/numbers
- empty_entity / empty_type: nothing left after normalisation
- template_echo: the placeholder strings of the prompt ("entity 1", "type of entity 1")
- else_type: a non-type such as None, NA, N/A, MISC, ELSE, other, unknown (case-insensitive)
- non_english: the entity or type has letters but none in ASCII, or fewer than half of its letters
  are Latin script; a string without letters passes only if it has digits (years, amounts)
- not_in_text: the entity does not occur in the passage. Matching: exact, case-sensitive, on word
  boundaries first; then the same with surrounding quotes/punctuation stripped; then
  case-insensitive, in which case the passage's own spelling replaces the teacher's (the student
  learns to copy spans). Word boundaries mean "US" is not found inside "focus".
- duplicates: the same (entity, type) again in one answer
An answer with no parseable list at all counts once as `unparseable` (and the caller fails the passage).
"""

from __future__ import annotations

import bisect
import json
import re
import string
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from distill_ner.ner.prompt import TEMPLATE_ECHOES
from distill_ner.records import Entity

FILTER_REASONS: tuple[str, ...] = (
    "unparseable",
    "malformed_item",
    "empty_entity",
    "empty_type",
    "template_echo",
    "else_type",
    "non_english",
    "not_in_text",
    "duplicates",
)

ELSE_TYPES = frozenset(
    {
        "none",
        "na",
        "n/a",
        "n.a",
        "n. a",
        "nan",
        "null",
        "nil",
        "misc",
        "miscellaneous",
        "else",
        "other",
        "others",
        "unknown",
        "unk",
        "not applicable",
        "no type",
        "no entity",
        "no entities",
        "entity",
        "entities",
        "type",
        "undefined",
        "unspecified",
        "not specified",
        "various",
    }
)

_SURROUNDING = string.punctuation + "“”‘’«»„‚‹›…·–— \t\n"
_QUOTES = "\"'“”‘’«»„‚‹›`"
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n?(.*?)\n?```\s*$", re.S)
MAX_ANSWER_CHARS = 200_000  # bounds the parse time; no real answer is this long


@dataclass
class ParseResult:
    entities: list[Entity]
    counts: Counter[str] = field(default_factory=Counter)
    parsed: bool = True
    error: str = ""


def normalize_type(t: str) -> str:
    """lowercase, collapse whitespace, strip surrounding punctuation and quotes."""
    return " ".join(t.lower().split()).strip(_SURROUNDING)


def _collapse(s: str) -> str:
    return " ".join(s.split())


def is_non_english(s: str) -> bool:
    letters = [c for c in s if c.isalpha()]
    if not letters:
        return not any(c.isdigit() for c in s)
    ascii_letters = sum(1 for c in letters if c.isascii())
    latin = sum(1 for c in letters if c.isascii() or unicodedata.name(c, "").startswith("LATIN"))
    return ascii_letters == 0 or latin / len(letters) < 0.5


def _bounded_pattern(needle: str, flags: int = 0) -> re.Pattern[str]:
    # a word boundary is required only where the entity itself starts/ends with a word character
    left = r"(?<!\w)" if re.match(r"\w", needle[0]) else ""
    right = r"(?!\w)" if re.match(r"\w", needle[-1]) else ""
    return re.compile(left + re.escape(needle) + right, flags)


def find_in_text(entity: str, passage: str) -> str | None:
    """The passage's spelling of `entity`, or None when it does not occur (see module doc)."""
    candidates = [entity]
    stripped = entity.strip(_QUOTES).rstrip(".,;:!?").strip(_QUOTES).strip()
    if stripped and stripped != entity:
        candidates.append(stripped)
    candidates = [c for c in candidates if len(c) <= len(passage)]  # a match is as long as its entity
    for cand in candidates:
        if cand in passage and _bounded_pattern(cand).search(passage):
            return cand
    for cand in candidates:
        m = _bounded_pattern(cand, re.IGNORECASE).search(passage)
        if m:
            return m.group(0)
    return None


# ------------------------------------------------------------- literal parsing (linear, no recursion)
#
# A small tokenizer and an explicit stack replace json.loads/ast.literal_eval, which recurse (a
# RecursionError on ~1,000 brackets) and would be re-run on every nested span (quadratic). Each
# character is read at most once per pass, whatever the brackets and quotes. The values are those
# the two accept in an answer: lists, tuples, dicts, sets, strings in either quote (adjacent ones
# concatenate), numbers, True/False/None and JSON's true/false/null/NaN/Infinity; anything else in
# a span (a name, an operator, a call) makes that span no literal.

MAX_NESTING = 32  # an answer nests 2 deep (a list of tuples); a deeper span is not an answer

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<num>[-+]?(?:0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+
        |(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][-+]?\d[\d_]*)?[jJ]?)(?![\w.]))
   |(?P<name>-Infinity|[A-Za-z_]\w*)
   |(?P<punct>[\[\](){},:"'])
   |(?P<other>\S)
)""",
    re.X,
)
# an opening bracket whose content could be a literal (a value, another container or `]`)
_SPAN_START = re.compile(r"""\[(?=\s*[\[\](){}"'\d.+\-TFNItfn])""")
_OPENER_RUN = re.compile(r"[\s\[({]*")
_UNESCAPED = {q: re.compile(rf"(?<!\\)(?:\\\\)*{q}") for q in "\"'"}
_NAMES: dict[str, Any] = {
    "True": True,
    "False": False,
    "None": None,
    "true": True,
    "false": False,
    "null": None,
    "NaN": float("nan"),
    "Infinity": float("inf"),
    "-Infinity": float("-inf"),
}
_CLOSERS = {"[": "]", "(": ")", "{": "}"}
_FAIL = object()
_START, _AFTER_VALUE, _AFTER_COMMA, _AFTER_COLON = range(4)


class _Strings:
    """Where each quoted string of one text ends. The unescaped quotes of each kind are listed once
    (on first use), so finding a closing quote is a binary search, not a scan."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.unescaped: dict[str, list[int]] = {}

    def opens(self, p: int) -> bool:
        # an apostrophe inside a word (O'Brien outside quotes) is not a string opener
        return not (self.text[p] == "'" and p > 0 and self.text[p - 1].isalnum())

    def close(self, p: int) -> int:
        """Index of the quote that closes the string opened at `p`, or -1 when none does."""
        q = self.text[p]
        found = self.unescaped.get(q)
        if found is None:
            # a quote after an even number of backslashes; the backslashes all lie inside the string
            found = self.unescaped[q] = [m.end() - 1 for m in _UNESCAPED[q].finditer(self.text)]
        i = bisect.bisect_right(found, p)
        return found[i] if i < len(found) else -1


_LONE_BACKSLASH = re.compile(r"""\\\\|\\(?![\\'"abfnrtv0-7xuUN])""")


def _string_value(token: str) -> Any:
    if "\n" in token:
        return _FAIL  # neither JSON nor a one-line Python string holds a raw line break
    body = token[1:-1]
    if "\\" not in body:
        return body
    if token[0] == '"' and ("\\u" in body or "\\/" in body):
        try:
            return json.loads(token)  # where JSON's escapes differ: \u surrogate pairs, \/
        except ValueError:
            pass
    # Python's escapes; a backslash before any other character stays, as in a Python literal
    try:
        return _LONE_BACKSLASH.sub(r"\\\\", body).encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError:  # e.g. a truncated \x escape
        return _FAIL


def _number_value(token: str) -> Any:
    try:
        if token[-1] in "jJ":
            return complex(token)
        if token.lstrip("+-")[:2].lower() not in ("0x", "0o", "0b") and any(c in token for c in ".eE"):
            return float(token)
        return int(token, 0)
    except ValueError:  # also: more digits than int() converts
        return _FAIL


class _Frame:
    """One open container: its items so far and where its grammar stands."""

    __slots__ = ("kind", "start", "items", "state", "comma", "mode", "last_str", "parts")

    def __init__(self, kind: str, start: int) -> None:
        self.kind = kind  # "[", "(", "{", or "" for a whole answer (a tuple without parentheses)
        self.start = start
        self.items: list[Any] | None = []  # None once the content cannot be a literal
        self.state = _START
        self.comma = False
        self.mode = ""  # braces: "dict" or "set" once known
        self.last_str = False
        self.parts: list[str] | None = None  # the adjacent strings that make the last item

    def add(self, value: Any, is_str: bool = False) -> None:
        items = self.items
        if items is None:
            return
        if value is _FAIL:
            self.items = None
        elif self.state == _AFTER_VALUE:
            if is_str and self.last_str:  # "New " "York": adjacent strings concatenate
                if self.parts is None:
                    self.parts = [items[-1]]
                self.parts.append(value)
            else:
                self.items = None
        else:
            items.append(value)
            self.state, self.last_str = _AFTER_VALUE, is_str

    def _join(self) -> None:
        if self.parts is not None:
            if self.items is not None:
                self.items[-1] = "".join(self.parts)  # joined once: adding one by one is quadratic
            self.parts = None

    def punct(self, c: str) -> None:
        items = self.items
        if items is None:
            return
        self.last_str = False
        if self.parts is not None:
            self._join()
        awaiting_value = self.mode == "dict" and len(items) % 2 == 1
        if c == "," and self.state == _AFTER_VALUE and not awaiting_value:
            self.state, self.comma = _AFTER_COMMA, True
            if self.kind == "{" and not self.mode:
                self.mode = "set"
        elif (
            c == ":"
            and self.kind == "{"
            and self.state == _AFTER_VALUE
            and (awaiting_value or (not self.mode and len(items) == 1))
        ):
            self.mode, self.state = "dict", _AFTER_COLON
        else:
            self.items = None

    def value(self) -> Any:
        """The finished container, or _FAIL."""
        if self.parts is not None:
            self._join()
        items = self.items
        if items is None or self.state == _AFTER_COLON or (self.mode == "dict" and len(items) % 2):
            return _FAIL
        if self.kind == "[":
            return items
        if self.kind in ("(", ""):
            if not items and not self.kind:
                return _FAIL
            return items[0] if len(items) == 1 and not self.comma else tuple(items)
        try:
            if self.mode == "dict":
                return dict(zip(items[::2], items[1::2]))
            return set(items) if items else {}
        except TypeError:  # an unhashable key or member
            return _FAIL


def _parse(
    text: str,
    start: int,
    strings: _Strings,
    spans: list[tuple[int, list[Any]]] | None = None,
    opened: set[int] | None = None,
) -> tuple[Any, int]:
    """(value, end) of the literal at `start`: the whole of `text` when `spans` is None, else the
    span from the `[` at `start` to its `]`, appending every list closed on the way to `spans` and
    the position of every `[` opened to `opened`. On failure the value is _FAIL and `end` is past
    what was read.
    """
    whole = spans is None
    stack = [_Frame("" if whole else "[", start)]
    pos = start if whole else start + 1
    while True:
        m = _TOKEN.match(text, pos)
        if m is None:  # only whitespace left
            return (stack[0].value() if whole and len(stack) == 1 else _FAIL), len(text)
        kind, pos = m.lastgroup, m.end()
        top = stack[-1]
        if kind == "num":
            top.add(_number_value(m.group(kind)))
        elif kind == "name":
            top.add(_NAMES.get(m.group(kind), _FAIL))
        elif kind == "other":
            return _FAIL, pos
        else:
            c, p = m.group(kind), pos - 1
            if c in "\"'":
                end = strings.close(p) if strings.opens(p) else -1
                if end < 0:
                    return _FAIL, pos
                top.add(_string_value(text[p : end + 1]), is_str=True)
                pos = end + 1
            elif c in _CLOSERS:
                if len(stack) > MAX_NESTING:  # skip the rest of a run of openers: nothing in it is an answer
                    return _FAIL, _OPENER_RUN.match(text, pos).end()
                stack.append(_Frame(c, p))
                if opened is not None and c == "[":
                    opened.add(p)
                continue
            elif c in ",:":
                top.punct(c)
            else:
                if _CLOSERS.get(top.kind) != c:
                    return _FAIL, pos
                stack.pop()
                value = top.value()
                if value is _FAIL:
                    return _FAIL, pos
                if spans is not None and c == "]":
                    spans.append((top.start, value))
                if not stack:
                    return value, pos
                stack[-1].add(value)
        if stack[-1].items is None:
            return _FAIL, pos


def _literal(text: str) -> Any:
    """The literal that the whole of `text` is (`a, b` is a tuple, as in Python), or _FAIL."""
    return _parse(text, 0, _Strings(text))[0]


def _first_span_lists(text: str) -> tuple[list[Any] | None, list[Any] | None]:
    """(first list of items, first list) among the balanced [...] spans that are literals, first by
    opening bracket. A span that is a literal is read as one: brackets inside its strings are not
    spans of their own.

    After a span fails, the next one may start inside it (a bracket the failed span read as part
    of a string); a bracket the failed span opened itself would fail the same way and is skipped.
    Those second looks stop after a few passes' worth of reading, so the time stays linear.
    """
    strings = _Strings(text)
    budget = 4 * len(text) + 4096
    opened: set[int] = set()
    first_list: tuple[int, list[Any]] | None = None
    pos = 0
    while (m := _SPAN_START.search(text, pos)) is not None:
        start = m.start()
        if start in opened:
            pos = start + 1
            continue
        spans: list[tuple[int, list[Any]]] = []
        opened.add(start)
        value, end = _parse(text, start, strings, spans, opened)
        items = [s for s in spans if _looks_like_items(s[1])]
        if items:
            return min(items, key=lambda s: s[0])[1], None
        if spans:
            earliest = min(spans, key=lambda s: s[0])
            if first_list is None or earliest[0] < first_list[0]:
                first_list = earliest
        budget -= end - start
        pos = end if value is not _FAIL or budget < 0 else start + 1
    return None, (first_list[1] if first_list else None)


def _looks_like_items(value: list[Any]) -> bool:
    return all(isinstance(x, (list, tuple, dict)) for x in value)


def extract_list(answer: str) -> list[Any] | None:
    """The teacher's list of items, or None when there is none."""
    text = answer.strip()[:MAX_ANSWER_CHARS]
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    whole = _literal(text)
    if isinstance(whole, tuple):
        whole = list(whole)  # `("A", "t"), ("B", "t")` without brackets
        if whole and not isinstance(whole[0], (list, tuple)):
            whole = [tuple(whole)]
    if isinstance(whole, list) and _looks_like_items(whole):
        return whole
    first_items, first_list = _first_span_lists(text)
    if first_items is not None:
        return first_items
    return whole if isinstance(whole, list) else first_list  # e.g. "[1]" in prose: a list, not of tuples


def _item_fields(item: Any) -> tuple[str, str] | None:
    if isinstance(item, dict):
        lowered = {str(k).lower(): v for k, v in item.items()}
        ent = next((lowered[k] for k in ("entity", "name", "text", "span") if k in lowered), None)
        typ = next((lowered[k] for k in ("type", "entity_type", "label", "category") if k in lowered), None)
        fields = [ent, typ]
    elif isinstance(item, (list, tuple)) and len(item) in (2, 3):
        fields = list(item[:2])
    else:
        return None
    out: list[str] = []
    for f in fields:
        if isinstance(f, bool) or not isinstance(f, (str, int, float)):
            return None
        out.append(f if isinstance(f, str) else str(f))
    return out[0], out[1]


def parse_answer(answer: str, passage: str) -> ParseResult:
    """Entities of one teacher answer for `passage`, plus per-reason counts of what was dropped.

    Works for both prompts: a third tuple element (the type description of the ablation prompt) is
    ignored; the type is kept.
    """
    items = extract_list(answer) if isinstance(answer, str) else None
    if items is None:
        return ParseResult([], Counter({"unparseable": 1}), parsed=False, error="no list of tuples found")
    counts: Counter[str] = Counter()
    entities: list[Entity] = []
    seen: set[tuple[str, str]] = set()
    for item in items:
        fields = _item_fields(item)
        if fields is None:
            counts["malformed_item"] += 1
            continue
        ent, typ = _collapse(fields[0]), normalize_type(fields[1])
        if not ent:
            counts["empty_entity"] += 1
        elif not typ:
            counts["empty_type"] += 1
        elif ent.lower() in TEMPLATE_ECHOES or typ in TEMPLATE_ECHOES:
            counts["template_echo"] += 1
        elif typ in ELSE_TYPES:
            counts["else_type"] += 1
        elif is_non_english(ent) or is_non_english(typ):
            counts["non_english"] += 1
        elif (surface := find_in_text(ent, passage)) is None:
            counts["not_in_text"] += 1
        elif (surface, typ) in seen:
            counts["duplicates"] += 1
        else:
            seen.add((surface, typ))
            entities.append(Entity(text=surface, type=typ))
    return ParseResult(entities, counts)
