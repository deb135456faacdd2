"""Negative sampling: types absent from a passage, asked about anyway so the student learns to answer `[]`.

UniversalNER samples them in proportion to each type's frequency over the whole dataset (ablation,
7-dataset zero-shot F1: none 31.5, uniform 47.7, frequency 53.4). Frequent types are the ones a user
is most likely to ask about, so those are the ones whose absence the student must learn to recognise.

Sampling is per passage, from a numpy Generator seeded with (config.seed, passage id) through a
stable hash: a passage's negatives depend only on the seed, its own id and contents, and the type table,
not on its position in the set. (Adding passages still changes the frequency table slightly, hence the
probabilities; that is inherent to frequency sampling.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np

from distill_ner.ner.config import NegativesConfig
from distill_ner.ner.parse import normalize_type  # one definition of a type's comparison key
from distill_ner.records import AnnotatedPassage, AnnotationSet
from distill_ner.rng import stable_rng

# Rejection sampling below redraws when it hits a type of the passage (or one already chosen); past this
# many redraws per wanted negative the allowed mass is tiny and an exact masked draw is cheaper.
_MAX_REDRAWS_PER_PICK = 64


def type_frequencies(annotations: AnnotationSet) -> dict[str, int]:
    """Mentions per normalised type over the whole set, most frequent first (ties by name).

    `annotations.type_counts` is used when the annotation step filled it (it is the set-wide count the
    recipe refers to); otherwise the table is recounted from the passages' entities. Keys are normalised
    again because two spellings of one type must pool their counts and be excluded together.
    """
    counts: Counter[str] = Counter()
    if annotations.type_counts:
        for entity_type, n in annotations.type_counts.items():
            key = normalize_type(entity_type)
            if key and n > 0:
                counts[key] += int(n)
    else:
        for passage in annotations.passages:
            counts.update(k for k in (normalize_type(e.type) for e in passage.entities) if k)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def passage_types(passage: AnnotatedPassage) -> set[str]:
    """Normalised types that occur in the passage: never valid negatives for it."""
    return {normalize_type(e.type) for e in passage.entities}


class _TypeSampler:
    """Weighted sampling without replacement over a fixed type table, excluding some types per draw.

    Drawing from the full table and rejecting excluded / already-chosen types yields exactly the
    distribution of successive sampling from the table restricted to the allowed types (each pick ∝ weight
    among what is still allowed), at O(k log n) per passage instead of O(n) for a masked copy of the
    weights; with ~13k types and ~50k passages that difference is the whole cost of the step.
    """

    def __init__(self, types: list[str], weights: Iterable[int]) -> None:
        self.types = types
        self.index = {t: i for i, t in enumerate(types)}
        self.weights = np.asarray(list(weights), dtype=np.int64)
        # integer cumulative sums: exact, so the last type is reachable and no float rounding skews the ends
        self.cumulative = np.cumsum(self.weights)
        self.total = int(self.cumulative[-1]) if len(types) else 0

    def sample(self, rng: np.random.Generator, k: int, excluded: set[str]) -> list[str]:
        blocked = {self.index[t] for t in excluded if t in self.index}
        k = min(k, len(self.types) - len(blocked))
        if k <= 0 or self.total == 0:
            return []
        chosen: list[int] = []
        redraws = 0
        while len(chosen) < k:
            draws = rng.integers(0, self.total, size=2 * (k - len(chosen)))
            for i in np.searchsorted(self.cumulative, draws, side="right").tolist():
                if i in blocked:
                    redraws += 1
                    continue
                chosen.append(i)
                blocked.add(i)
                if len(chosen) == k:
                    break
            if len(chosen) < k and redraws > _MAX_REDRAWS_PER_PICK * k:
                chosen += self._exact(rng, k - len(chosen), blocked)
                break
        return [self.types[i] for i in chosen]

    def _exact(self, rng: np.random.Generator, k: int, blocked: set[int]) -> list[int]:
        weights = self.weights.astype(np.float64)
        weights[list(blocked)] = 0.0
        allowed = int(np.count_nonzero(weights))
        if allowed == 0:
            return []
        picks = rng.choice(len(weights), size=min(k, allowed), replace=False, p=weights / weights.sum())
        return [int(i) for i in picks]


def add_negatives(annotations: AnnotationSet, config: NegativesConfig) -> AnnotationSet:
    """A copy of `annotations` whose passages' `negatives` hold `config.per_passage` absent types each.

    Existing negatives are replaced, not extended, so that running the step twice gives the same set.
    Negatives are written as normalised type strings (the keys of the frequency table). A passage gets
    fewer than `per_passage` only when fewer types than that are absent from it. The passages are new
    objects; their entities and the set's other fields are shared with the input, not deep-copied
    (a deep copy was two thirds of the step's time at 50k passages), so treat both as read-only.
    """
    if config.strategy == "none" or config.per_passage == 0:
        negatives = [[] for _ in annotations.passages]
    else:
        table = type_frequencies(annotations)
        types = list(table)
        weights = table.values() if config.strategy == "frequency" else [1] * len(types)
        sampler = _TypeSampler(types, weights)
        negatives = [
            sampler.sample(stable_rng(config.seed, "negatives", p.id), config.per_passage, passage_types(p))
            for p in annotations.passages
        ]
    passages = [p.model_copy(update={"negatives": n}) for p, n in zip(annotations.passages, negatives)]
    return annotations.model_copy(update={"passages": passages})
