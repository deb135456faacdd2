"""Negative sampling: distribution, exclusion, determinism, stability per passage."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from distill_ner.ner.config import NegativesConfig
from distill_ner.ner.negatives import add_negatives, normalize_type, type_frequencies
from distill_ner.records import AnnotatedPassage, AnnotationSet, Entity

# chi-square 0.999 quantile for 11 degrees of freedom (12 types), i.e. a test at p = 0.001; written out
# (scipy.stats.chi2.ppf(0.999, 11) = 31.264) so the tests do not lean on scipy, a transitive dependency
CHI2_CRITICAL_DF11 = 31.264


def _chi_square(observed, expected) -> float:
    observed, expected = np.asarray(observed, dtype=float), np.asarray(expected, dtype=float)
    return float(((observed - expected) ** 2 / expected).sum())


# a Zipf-like table, like the teacher's (a few types cover most mentions)
TABLE = {
    "person": 400,
    "organization": 250,
    "location": 160,
    "date": 90,
    "product": 40,
    "event": 25,
    "disease": 15,
    "programming language": 8,
    "sports team": 6,
    "chemical compound": 3,
    "ship": 2,
    "algorithm": 1,
}


def _passages(n: int, type_cycle: list[list[str]], prefix: str = "p") -> list[AnnotatedPassage]:
    """n passages; passage i contains the types type_cycle[i % len(type_cycle)] (spelled unnormalised)."""
    out = []
    for i in range(n):
        types = type_cycle[i % len(type_cycle)]
        entities = [Entity(text=f"x{j}", type=t) for j, t in enumerate(types)]
        out.append(AnnotatedPassage(id=f"{prefix}{i}", text=f"passage {i}", entities=entities))
    return out


def _expected_single_draw(table: dict[str, int], excluded: set[str]) -> dict[str, float]:
    allowed = {t: c for t, c in table.items() if t not in excluded}
    total = sum(allowed.values())
    return {t: c / total for t, c in allowed.items()}


def test_frequency_distribution_matches_table_over_10k_draws():
    # per_passage=1 isolates the frequency law from the without-replacement effect (tested separately);
    # the exclusion of each passage's own types is part of the expectation.
    cycle = [[], ["Person"], ["Sports  Team", "date"], ["LOCATION", "person"]]
    passages = _passages(12_000, cycle)
    annotations = AnnotationSet(passages=passages, type_counts=TABLE)
    result = add_negatives(annotations, NegativesConfig(strategy="frequency", per_passage=1, seed=7))

    observed: Counter[str] = Counter()
    expected: Counter[str] = Counter()
    for passage in result.passages:
        assert len(passage.negatives) == 1
        observed.update(passage.negatives)
        for t, q in _expected_single_draw(TABLE, {normalize_type(e.type) for e in passage.entities}).items():
            expected[t] += q
    n = sum(observed.values())
    assert n == 12_000
    types = list(TABLE)
    obs = np.array([observed[t] for t in types], dtype=float)
    exp = np.array([expected[t] for t in types], dtype=float)
    tv = 0.5 * np.abs(obs / n - exp / n).sum()
    # E[TV] for 12 types and 12k draws is about 0.01; 0.02 leaves room without hiding a wrong law
    # (uniform sampling would give TV ≈ 0.6 here).
    assert tv < 0.02, tv
    # types never drawn by chance would break the chi-square; the rarest expects ~10 draws
    assert len(TABLE) == 12 and _chi_square(obs, exp) < CHI2_CRITICAL_DF11


def test_without_replacement_matches_exact_successive_sampling():
    # With per_passage=3 the per-passage draws are dependent; the exact inclusion probabilities of
    # successive (weighted, without replacement) sampling are computed by enumerating ordered triples.
    table = {"a": 50, "b": 25, "c": 12, "d": 8, "e": 5}
    k = 3
    inclusion = Counter()
    for seq in itertools.permutations(table, k):
        prob, remaining = 1.0, sum(table.values())
        for t in seq:
            prob *= table[t] / remaining
            remaining -= table[t]
        for t in seq:
            inclusion[t] += prob
    passages = _passages(10_000, [[]])
    result = add_negatives(AnnotationSet(passages=passages, type_counts=table), NegativesConfig(per_passage=k, seed=3))
    counts = Counter(t for p in result.passages for t in p.negatives)
    assert all(len(set(p.negatives)) == k for p in result.passages)
    for t in table:
        assert abs(counts[t] / 10_000 - inclusion[t]) < 0.015, (t, counts[t] / 10_000, inclusion[t])
    # the distortion against the plain frequency share is real, and bounded: frequent types are
    # under-represented (a can be drawn at most once per passage), rare ones over-represented
    share_a = counts["a"] / (k * 10_000)
    assert share_a < table["a"] / sum(table.values())
    assert abs(share_a - inclusion["a"] / k) < 0.01


def test_no_negative_occurs_in_its_passage_and_counts_are_met():
    cycle = [["Person", "ORGANIZATION"], ["location", " Date "], ["programming   language"], []]
    passages = _passages(2_000, cycle)
    result = add_negatives(AnnotationSet(passages=passages, type_counts=TABLE), NegativesConfig(per_passage=4))
    for passage in result.passages:
        own = {normalize_type(e.type) for e in passage.entities}
        assert len(passage.negatives) == 4
        assert len(set(passage.negatives)) == 4
        assert not own & set(passage.negatives)
        assert set(passage.negatives) <= set(TABLE)


def test_passage_with_few_absent_types_gets_all_of_them():
    table = {"person": 1000, "location": 1, "date": 1}
    passage = AnnotatedPassage(id="p", text="t", entities=[Entity(text="x", type="person")])
    result = add_negatives(AnnotationSet(passages=[passage], type_counts=table), NegativesConfig(per_passage=5))
    # "person" holds ~99.8 % of the mass and is excluded: the exact fallback must still finish
    assert sorted(result.passages[0].negatives) == ["date", "location"]


def test_input_is_not_modified_and_existing_negatives_are_replaced():
    passages = _passages(10, [[]])
    passages[0].negatives = ["stale"]
    annotations = AnnotationSet(passages=passages, type_counts=TABLE)
    result = add_negatives(annotations, NegativesConfig(per_passage=2))
    assert annotations.passages[0].negatives == ["stale"]
    assert "stale" not in result.passages[0].negatives and len(result.passages[0].negatives) == 2
    again = add_negatives(result, NegativesConfig(per_passage=2))
    assert again == result


def test_seeded_and_stable_per_passage():
    passages = _passages(200, [[], ["person"]])
    config = NegativesConfig(per_passage=3, seed=11)
    first = add_negatives(AnnotationSet(passages=passages, type_counts=TABLE), config)
    same = add_negatives(AnnotationSet(passages=passages, type_counts=TABLE), config)
    assert first.model_dump_json() == same.model_dump_json()

    # more passages, in another order: the original passages keep their negatives (same table)
    extra = _passages(300, [["date"]], prefix="q")
    grown = add_negatives(AnnotationSet(passages=extra + passages[::-1], type_counts=TABLE), config)
    by_id = {p.id: p.negatives for p in grown.passages}
    assert all(by_id[p.id] == p.negatives for p in first.passages)

    other = add_negatives(AnnotationSet(passages=passages, type_counts=TABLE), NegativesConfig(per_passage=3, seed=12))
    assert [p.negatives for p in other.passages] != [p.negatives for p in first.passages]


def test_uniform_and_none_strategies():
    passages = _passages(6_000, [[]])
    uniform = add_negatives(
        AnnotationSet(passages=passages, type_counts=TABLE), NegativesConfig(strategy="uniform", per_passage=1)
    )
    counts = Counter(t for p in uniform.passages for t in p.negatives)
    assert set(counts) == set(TABLE)
    # every type ≈ 500 draws, whatever its frequency
    assert _chi_square([counts[t] for t in TABLE], [6_000 / len(TABLE)] * len(TABLE)) < CHI2_CRITICAL_DF11

    none = add_negatives(AnnotationSet(passages=passages[:5], type_counts=TABLE), NegativesConfig(strategy="none"))
    assert all(p.negatives == [] for p in none.passages)
    zero = add_negatives(AnnotationSet(passages=passages[:5], type_counts=TABLE), NegativesConfig(per_passage=0))
    assert all(p.negatives == [] for p in zero.passages)


def test_type_frequencies_uses_type_counts_else_recounts_normalised():
    passages = [
        AnnotatedPassage(id="a", text="", entities=[Entity(text="x", type="Person"), Entity(text="y", type="person ")]),
        AnnotatedPassage(
            id="b", text="", entities=[Entity(text="z", type="Sports  team"), Entity(text="w", type="person")]
        ),
    ]
    assert type_frequencies(AnnotationSet(passages=passages)) == {"person": 3, "sports team": 1}
    given = AnnotationSet(passages=passages, type_counts={"Location": 2, "location": 5, "date": 9, "x": 0})
    assert type_frequencies(given) == {"date": 9, "location": 7}
    assert list(type_frequencies(given)) == ["date", "location"]  # most frequent first


def test_empty_table_gives_no_negatives():
    passages = _passages(3, [[]])
    result = add_negatives(AnnotationSet(passages=passages), NegativesConfig(per_passage=4))
    assert all(p.negatives == [] for p in result.passages)


@pytest.mark.parametrize("seed", [-5, 0, 2**40])
def test_any_integer_seed_works(seed: int):
    result = add_negatives(AnnotationSet(passages=_passages(3, [[]]), type_counts=TABLE), NegativesConfig(seed=seed))
    assert all(len(p.negatives) == 4 for p in result.passages)


def test_ratio_gives_negatives_per_positive_type():
    cycle = [["person", "organization", "location"], ["date"], []]
    passages = _passages(30, cycle)
    annotations = AnnotationSet(passages=passages, type_counts=TABLE)
    result = add_negatives(annotations, NegativesConfig(ratio=1.5, per_passage=99))
    for passage in result.passages:
        own = {normalize_type(e.type) for e in passage.entities}
        assert len(passage.negatives) == max(1, round(1.5 * len(own)))
        assert not own & set(passage.negatives)
    assert all(p.negatives == [] for p in add_negatives(annotations, NegativesConfig(ratio=0)).passages)
    # without a ratio, per_passage as before
    assert all(len(p.negatives) == 4 for p in add_negatives(annotations, NegativesConfig()).passages)
