"""Turn a teacher answer into entities, counting every item the filters remove, by reason.

Parsing is literal only: `json.loads`, then `ast.literal_eval` (Python tuples, single quotes);
never `eval`. When the answer has prose around the list, the first bracketed span that parses
to a list of tuples is taken (brackets inside quoted strings are skipped while matching).

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

import ast
import json
import re
import string
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from distill_ner.records import Entity
from distill_ner.ner.prompt import TEMPLATE_ECHOES

FILTER_REASONS: tuple[str, ...] = (
    "unparseable", "malformed_item", "empty_entity", "empty_type", "template_echo",
    "else_type", "non_english", "not_in_text", "duplicates",
)

ELSE_TYPES = frozenset({
    "none", "na", "n/a", "n.a", "n. a", "nan", "null", "nil", "misc", "miscellaneous", "else", "other",
    "others", "unknown", "unk", "not applicable", "no type", "no entity", "no entities", "entity", "entities",
    "type", "undefined", "unspecified", "not specified", "various",
})

_SURROUNDING = string.punctuation + "“”‘’«»„‚‹›…·–— \t\n"
_QUOTES = "\"'“”‘’«»„‚‹›`"
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n?(.*?)\n?```\s*$", re.S)
MAX_ANSWER_CHARS = 200_000  # literal_eval on huge/deep input is slow; no real answer is this long


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
    for cand in candidates:
        if _bounded_pattern(cand).search(passage):
            return cand
    for cand in candidates:
        m = _bounded_pattern(cand, re.IGNORECASE).search(passage)
        if m:
            return m.group(0)
    return None


def _bracket_spans(text: str) -> list[str]:
    """Every balanced [...] span, in order of its opening bracket; quotes are respected."""
    spans: list[str] = []
    for start in (i for i, c in enumerate(text) if c == "["):
        depth = 0
        quote: str | None = None
        i = start
        while i < len(text):
            c = text[i]
            if quote:
                if c == "\\":
                    i += 1
                elif c == quote:
                    quote = None
            elif c in "\"'":
                # an apostrophe inside a word (O'Brien outside quotes) is not a string opener
                if not (c == "'" and i > 0 and text[i - 1].isalnum()):
                    quote = c
            elif c == "[":
                depth += 1
            elif c == "]":
                depth -= 1
                if depth == 0:
                    spans.append(text[start:i + 1])
                    break
            i += 1
        if len(spans) >= 50:
            break
    return spans


def _literal(candidate: str) -> Any:
    try:
        return json.loads(candidate)
    except ValueError:
        pass
    try:
        return ast.literal_eval(candidate)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def _looks_like_items(value: list[Any]) -> bool:
    return all(isinstance(x, (list, tuple, dict)) for x in value)


def extract_list(answer: str) -> list[Any] | None:
    """The teacher's list of items, or None when there is none."""
    text = answer.strip()[:MAX_ANSWER_CHARS]
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    first_list: list[Any] | None = None
    for cand in [text, *_bracket_spans(text)]:
        value = _literal(cand)
        if isinstance(value, tuple) and cand is text:
            value = list(value)  # `("A", "t"), ("B", "t")` without brackets
            if value and not isinstance(value[0], (list, tuple)):
                value = [tuple(value)]
        if not isinstance(value, list):
            continue
        if _looks_like_items(value):
            return value
        if first_list is None:
            first_list = value  # e.g. "[1]" in prose: keep looking for a list of tuples
    return first_list


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
    items = extract_list(answer)
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
