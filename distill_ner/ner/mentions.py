"""Entities as NER users get them: texts of any length in, one mention per occurrence out, with character
offsets into the original text and a score.

A text is cut into the units the student was trained on and evaluated with: sentences from the evaluation's
splitter (`ner.data.sentence_offsets`, pysbd), any sentence longer than `max_segment_chars` cut again at a
space. pysbd's time grows with the square of its input (100,000 characters: 19 s on one core; 10,000: 0.3 s),
so long texts go to it in blocks cut at a line break or sentence end (`_blocks`).

Every answered string is located in its segment: every occurrence (word-bounded where the string begins/ends
with a word character, as the teacher filter reads them; exact anywhere as a fallback), shifted into the
text's coordinates, so `text[start:end] == mention.text` always holds. A free-decoded string that does not
occur in its segment has no offsets: it is left out of the mentions (the grouped shape keeps it).

The score of an answered string is the probability the student gave the answer tokens that spell it (the
product of their probabilities, `Generation.token_logprobs`); it lies in [0, 1] and is the same for every
occurrence of the string in its segment.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from distill_ner.engine.common import Generation
from distill_ner.ner.metrics import extract_items
from distill_ner.ner.parse import _bounded_pattern, find_in_text

# a SmolLM2 UniNER prompt of a 256-token passage is ~1,100 characters of passage text
DEFAULT_MAX_SEGMENT_CHARS = 1000
# pysbd is quadratic in its input: longer texts reach it in blocks of about this size
_BLOCK_CHARS = 5000
_BLOCK_BREAK = re.compile(r"\n|[.!?][\"')\]]?\s")


@dataclass(frozen=True)
class Mention:
    """One occurrence of an entity: `text == document[start:end]`."""

    text: str
    type: str
    start: int
    end: int
    score: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------ segments


def _blocks(text: str, size: int = _BLOCK_CHARS) -> list[tuple[int, int]]:
    """Cuts of `text` of about `size` characters, each ending at a line break or a sentence end where one
    lies in its second half (else at a space, else anywhere): what pysbd is given."""
    bounds, start = [], 0
    while len(text) - start > size:
        window = text[start : start + size]
        ends = [m.end() for m in _BLOCK_BREAK.finditer(window, size // 2)]
        cut = ends[-1] if ends else (window.rfind(" ", size // 2) + 1 or size)
        bounds.append((start, start + cut))
        start += cut
    bounds.append((start, len(text)))
    return bounds


def _split_long(text: str, start: int, end: int, max_chars: int) -> list[tuple[int, int]]:
    """[start, end) cut at spaces into pieces of at most max_chars (a space-free run is cut anywhere)."""
    pieces = []
    while end - start > max_chars:
        cut = text.rfind(" ", start + 1, start + max_chars + 1)
        cut = cut if cut > start else start + max_chars
        pieces.append((start, cut))
        start = cut
        while start < end and text[start].isspace():
            start += 1
    if start < end:
        pieces.append((start, end))
    return pieces


def segments(text: str, max_chars: int = DEFAULT_MAX_SEGMENT_CHARS) -> list[tuple[int, int]]:
    """Character ranges of the text's sentences, in order, none longer than max_chars, whitespace-trimmed."""
    from distill_ner.ner.data import sentence_offsets

    if max_chars <= 0:
        raise ValueError("max_chars must be positive")
    out: list[tuple[int, int]] = []
    for block_start, block_end in _blocks(text):
        for start, end in sentence_offsets(text[block_start:block_end]):
            out.extend(_split_long(text, block_start + start, block_start + end, max_chars))
    return out


# ------------------------------------------------------------------------------------------- scoring


def _token_ends(tokenizer: Any, token_ids: Sequence[int]) -> list[int]:
    """Character position in the decoded answer where each token's text ends."""
    ends = []
    for k in range(1, len(token_ids) + 1):
        ends.append(len(tokenizer.decode(token_ids[:k], skip_special_tokens=True)))
    return ends


def scored_items(generation: Generation, tokenizer: Any) -> list[tuple[str, float]]:
    """The answer's strings (as written, de-duplicated) with the probability of the tokens that spell each.

    A string is found in the decoded answer as its JSON literal (quotes included: the tokens that open and
    close it are part of answering it); where it is not found verbatim (an answer the parser repaired), its
    score is the whole answer's probability."""
    items = extract_items(generation.text.strip())  # the answer as evaluation reads it
    if not items:
        return []
    logprobs = generation.token_logprobs
    if len(logprobs) != len(generation.token_ids):  # a backend that gave no log-probabilities
        return [(item, 1.0) for item in items]
    answer = generation.text
    ends = _token_ends(tokenizer, generation.token_ids)  # positions in `answer`, decoded the same way
    starts = [0, *ends[:-1]]
    whole = math.exp(sum(logprobs))
    out, cursor = [], 0
    for item in items:
        literal = json.dumps(item, ensure_ascii=False)
        at = answer.find(literal, cursor)
        if at < 0:
            at, literal = answer.find(item, cursor), item
        if at < 0:
            out.append((item, whole))
            continue
        cursor = at + len(literal)
        lo, hi = at, at + len(literal)
        span = [lp for s, e, lp in zip(starts, ends, logprobs) if s < hi and e > lo]
        out.append((item, math.exp(sum(span)) if span else whole))
    return out


# ------------------------------------------------------------------------------------------ locating


def occurrences(item: str, segment: str) -> list[tuple[int, int]]:
    """Every (start, end) of `item` in the segment: word-bounded occurrences of the segment's own spelling
    (`parse.find_in_text`: case and surrounding quotes forgiven), else every exact occurrence."""
    if not item:
        return []
    spelling = find_in_text(item, segment)
    if spelling is not None:
        found = [(m.start(), m.end()) for m in _bounded_pattern(spelling).finditer(segment)]
        if found:
            return found
    out, at = [], segment.find(item)
    while at >= 0:
        out.append((at, at + len(item)))
        at = segment.find(item, at + 1)
    return out


def locate(
    text: str, start: int, end: int, entity_type: str, items: Sequence[tuple[str, float]], threshold: float = 0.0
) -> list[Mention]:
    """Mentions in text[start:end] of each scored item whose score reaches the threshold, in text offsets."""
    segment = text[start:end]
    out = []
    for item, score in items:
        if score < threshold:
            continue
        for lo, hi in occurrences(item, segment):
            # a grounded answer may hold the spaces around a word: the mention is what lies between them
            lo += len(segment[lo:hi]) - len(segment[lo:hi].lstrip())
            hi -= len(segment[lo:hi]) - len(segment[lo:hi].rstrip())
            if hi > lo:
                out.append(Mention(text[start + lo : start + hi], entity_type, start + lo, start + hi, score))
    return out


def merge(mentions: Sequence[Mention]) -> list[Mention]:
    """One mention per (start, end, type), the highest score kept, in text order."""
    best: dict[tuple[int, int, str], Mention] = {}
    for m in mentions:
        key = (m.start, m.end, m.type)
        if key not in best or m.score > best[key].score:
            best[key] = m
    return sorted(best.values(), key=lambda m: (m.start, m.end, m.type))
