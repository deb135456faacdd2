"""NuExtract negatives: shorten the text, keep the template, blank what is no longer there.

RECIPE.md: "for half the examples part of the text is removed while the template is kept, so some fields
must come back empty". No teacher call is needed: the teacher's filling of the full text is correct, and
every value in it is a verbatim span, so the filling of the shortened text is the same filling with every
value that no longer occurs verbatim in it blanked (`""`, removed from a list of strings, and a list
element object removed once all of its strings are empty). "Occurs" is the comparison of filters.py.

What is removed: one contiguous block of whole sentences (the shared corpus sentence splitter), k of the
n sentences with k drawn as round(u * n), u uniform in [min_drop, max_drop], clamped to 1..n-1 so that
something is removed and something stays; the block's position is uniform. Texts of one sentence are left
whole. Which examples are shortened and how depends only on (seed, example id): an example keeps its
negative when others change.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from distill_ner.corpus import SentenceSplitter
from distill_ner.extraction.data import ExtractionExample, ExtractionSet
from distill_ner.extraction.filters import Verbatim
from distill_ner.rng import stable_rng

SUFFIX = "~cut"


def remove_sentences(text: str, spans: list[tuple[int, int]], first: int, count: int) -> str:
    """`text` without sentences first..first+count-1 (spans from SentenceSplitter), joined by what was there."""
    start = spans[first][0]
    end = spans[first + count][0] if first + count < len(spans) else len(text)
    return (text[:start] + text[end:]).strip()


def blank_missing(filled: Any, where: Verbatim, counts: Counter[str]) -> Any:
    """The filling of the shortened text: every value absent from it blanked (module doc)."""
    if isinstance(filled, str):
        if filled and not where.occurs(filled):
            counts["values_blanked"] += 1
            return ""
        return filled
    if isinstance(filled, dict):
        return {k: blank_missing(v, where, counts) for k, v in filled.items()}
    kept = []
    for item in filled:
        new = blank_missing(item, where, counts)
        if new == "" or (isinstance(new, dict) and _all_empty(new)):
            counts["list_items_removed"] += 1
            continue
        kept.append(new)
    return kept


def _all_empty(value: Any) -> bool:
    if isinstance(value, str):
        return value == ""
    if isinstance(value, dict):
        return all(_all_empty(v) for v in value.values())
    return len(value) == 0


def shorten(
    example: ExtractionExample,
    seed: int,
    min_drop: float,
    max_drop: float,
    splitter: SentenceSplitter,
    counts: Counter[str],
) -> ExtractionExample | None:
    """The negative of one example, or None when its text has a single sentence."""
    if example.filled is None:
        raise ValueError(f"example {example.id}: negatives need a filled example")
    spans = splitter.spans(example.text)
    n = len(spans)
    if n < 2:
        counts["single_sentence"] += 1
        return None
    rng = stable_rng(seed, "cut", example.id)
    k = min(n - 1, max(1, round(rng.uniform(min_drop, max_drop) * n)))
    first = int(rng.integers(0, n - k + 1))
    text = remove_sentences(example.text, spans, first, k)
    before = counts["values_blanked"]
    filled = blank_missing(example.filled, Verbatim(text), counts)
    counts["sentences_removed"] += k
    counts["unchanged_fillings"] += counts["values_blanked"] == before
    return example.model_copy(update={"id": example.id + SUFFIX, "text": text, "filled": filled, "shortened": True})


def add_negatives(data: ExtractionSet, fraction: float, min_drop: float, max_drop: float, seed: int) -> ExtractionSet:
    """Replace about `fraction` of the examples by their shortened version (the rest unchanged, same order)."""
    if not 0 < min_drop <= max_drop < 1:
        raise ValueError("negatives: need 0 < min_drop <= max_drop < 1")
    splitter = SentenceSplitter()
    counts: Counter[str] = Counter()
    out: list[ExtractionExample] = []
    for example in data.examples:
        picked = stable_rng(seed, "pick", example.id).random() < fraction
        negative = shorten(example, seed, min_drop, max_drop, splitter, counts) if picked else None
        counts["negatives"] += negative is not None
        out.append(negative or example)
    stats = dict(data.stats)
    stats.update({f"negatives.{k}": float(v) for k, v in sorted(counts.items())})
    stats["negatives.share"] = counts["negatives"] / len(out) if out else 0.0
    return data.model_copy(update={"examples": out, "stats": stats})
