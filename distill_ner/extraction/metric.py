"""Tree-aligned scoring of a predicted filling against the gold one (NuExtract's metric, made precise).

The gold filling's shape drives the alignment; every node scores in [0, 1]:
- string leaf: similarity of the two strings. `exact`: 1 if equal else 0 (NuExtract 1.0). `edit`
  (default, later NuExtract versions): 1 - Levenshtein(a, b) / max(len a, len b); two empty strings are
  equal (1). So gold "" scores 1 only for a predicted "", and 0 for any non-empty string.
- object: the mean of its keys' scores, where a key missing from the prediction scores 0 and every EXTRA
  predicted key adds one more 0 to the mean ({"a": right, "b": invented} scores 1/2). An empty gold
  object scores 1 against an empty prediction.
- list (of strings, or of objects): predicted and gold elements are paired one-to-one to maximise the
  summed element scores (Hungarian algorithm: scipy's linear_sum_assignment when scipy is installed, else
  an exact subset DP, greedy only past 16 elements on the smaller side); the list scores
  sum(paired scores) / max(len gold, len pred): a missing element and an extra element both cost one
  element. Two empty lists score 1; an empty list against a non-empty one scores 0.
- empty vs absent: an ABSENT key (or JSON null, or a value of the wrong type) scores 0 even when the gold
  value is empty: the output must follow the template, so "" and [] are answers and absence is not.
- an unparseable prediction (None) scores 0.
Every key of an object weighs the same whatever the size of its subtree (a 10-field address counts as
much as a name): that is what aligning "by key" means, and it keeps small templates from being drowned.

Leaf precision / recall (reported next to the tree score; the tree score is the primary metric the gate reads):
over the alignment above, `matched` sums the similarity of every paired (gold, predicted) string leaf
where both are non-empty; precision = matched / non-empty predicted strings (extra keys and unpaired list
elements included), recall = matched / non-empty gold strings. With nothing predicted precision is 1, with
nothing to find recall is 1. Pooled (micro) over the documents of a kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from distill_ner.extraction.templates import parse_json_object, string_leaves

LeafMetric = Literal["edit", "exact"]
MAX_EXACT_ASSIGNMENT = 16  # 2**16 subsets × the larger side: still instant


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute; unit costs), two-row DP over code points."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def similarity(predicted: str, gold: str, leaf: LeafMetric = "edit") -> float:
    if predicted == gold:
        return 1.0
    if leaf == "exact":
        return 0.0
    return 1.0 - levenshtein(predicted, gold) / max(len(predicted), len(gold))


@dataclass(frozen=True)
class TreeScore:
    score: float  # 0..1, the tree-aligned score
    matched: float = 0.0  # summed similarity of paired non-empty string leaves
    n_pred: int = 0  # non-empty predicted strings
    n_gold: int = 0  # non-empty gold strings


def _n_strings(value: Any) -> int:
    return sum(1 for _ in string_leaves(value))


def _miss(predicted: Any, gold: Any) -> TreeScore:
    """Nothing aligns: score 0; what was predicted and what was expected still count for P/R."""
    return TreeScore(0.0, 0.0, _n_strings(predicted), _n_strings(gold))


def assign(matrix: list[list[float]]) -> list[tuple[int, int]]:
    """Row/column pairs maximising the summed scores (rectangular; each row and column used once at most)."""
    if not matrix or not matrix[0]:
        return []
    try:
        import numpy as np
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        return _assign_dp(matrix)
    rows, cols = linear_sum_assignment(np.asarray(matrix, dtype=float), maximize=True)
    return list(zip(rows.tolist(), cols.tolist()))


def _assign_dp(matrix: list[list[float]]) -> list[tuple[int, int]]:
    """Exact DP over subsets of the smaller side (the fallback when scipy is missing)."""
    transposed = len(matrix) < len(matrix[0])
    m = [list(col) for col in zip(*matrix)] if transposed else matrix  # rows >= cols now
    n_rows, n_cols = len(m), len(m[0])
    if n_cols > MAX_EXACT_ASSIGNMENT:
        pairs = _assign_greedy(m)
    else:
        # best[mask]: best sum using the first r rows with columns `mask` taken; rows may stay unpaired
        best = {0: (0.0, ())}
        for r in range(n_rows):
            nxt = dict(best)
            for mask, (total, chosen) in best.items():
                for c in range(n_cols):
                    if not mask >> c & 1:
                        key = mask | 1 << c
                        cand = total + m[r][c]
                        if key not in nxt or cand > nxt[key][0]:
                            nxt[key] = (cand, chosen + ((r, c),))
            best = nxt
        pairs = list(max(best.values(), key=lambda v: v[0])[1])
    return [(c, r) for r, c in pairs] if transposed else pairs


def _assign_greedy(m: list[list[float]]) -> list[tuple[int, int]]:
    cells = sorted(((v, r, c) for r, row in enumerate(m) for c, v in enumerate(row)), reverse=True)
    used_r: set[int] = set()
    used_c: set[int] = set()
    pairs = []
    for _, r, c in cells:
        if r not in used_r and c not in used_c:
            pairs.append((r, c))
            used_r.add(r)
            used_c.add(c)
    return pairs


def tree_score(predicted: Any, gold: Any, leaf: LeafMetric = "edit") -> TreeScore:
    """Score `predicted` against `gold` (module doc). `predicted` may be anything a model wrote."""
    if isinstance(gold, str):
        if not isinstance(predicted, str):
            return _miss(predicted, gold)
        both = bool(predicted) and bool(gold)
        sim = similarity(predicted, gold, leaf)
        return TreeScore(sim, sim if both else 0.0, int(bool(predicted)), int(bool(gold)))
    if isinstance(gold, dict):
        if not isinstance(predicted, dict):
            return _miss(predicted, gold)
        total = matched = 0.0
        n_pred = n_gold = 0
        for key, g in gold.items():
            child = tree_score(predicted[key], g, leaf) if key in predicted else _miss(None, g)
            total += child.score
            matched += child.matched
            n_pred += child.n_pred
            n_gold += child.n_gold
        extra = [k for k in predicted if k not in gold]
        n_pred += sum(_n_strings(predicted[k]) for k in extra)
        denominator = len(gold) + len(extra)
        return TreeScore(total / denominator if denominator else 1.0, matched, n_pred, n_gold)
    if isinstance(gold, list):
        if not isinstance(predicted, list):
            return _miss(predicted, gold)
        if not gold and not predicted:
            return TreeScore(1.0)
        cells = [[tree_score(p, g, leaf) for g in gold] for p in predicted]
        pairs = assign([[c.score for c in row] for row in cells])
        paired_p = {i for i, _ in pairs}
        paired_g = {j for _, j in pairs}
        total = sum(cells[i][j].score for i, j in pairs)
        matched = sum(cells[i][j].matched for i, j in pairs)
        n_pred = sum(cells[i][j].n_pred for i, j in pairs) + sum(
            _n_strings(p) for i, p in enumerate(predicted) if i not in paired_p
        )
        n_gold = sum(cells[i][j].n_gold for i, j in pairs) + sum(
            _n_strings(g) for j, g in enumerate(gold) if j not in paired_g
        )
        return TreeScore(total / max(len(gold), len(predicted)), matched, n_pred, n_gold)
    raise TypeError(f"gold must be a filling (str, list, dict), got {type(gold).__name__}")


@dataclass(frozen=True)
class ScoredDocument:
    kind: str
    edit: TreeScore
    exact: TreeScore


def score_document(kind: str, predicted: Any, gold: dict[str, Any]) -> ScoredDocument:
    return ScoredDocument(kind, tree_score(predicted, gold, "edit"), tree_score(predicted, gold, "exact"))


@dataclass(frozen=True)
class KindScore:
    """One document kind's evaluation: the mean tree score (the gate's primary metric) and the leaf
    precision/recall pooled over its documents."""

    tree_score: float
    leaf_precision: float
    leaf_recall: float
    documents: int


def kind_scores(docs: Iterable[ScoredDocument], leaf: LeafMetric = "edit") -> dict[str, KindScore]:
    """Per document kind: mean tree score, precision/recall pooled over leaves (module doc)."""
    by_kind: dict[str, list[TreeScore]] = {}
    for doc in docs:
        by_kind.setdefault(doc.kind, []).append(doc.edit if leaf == "edit" else doc.exact)
    out: dict[str, KindScore] = {}
    for kind, scores in sorted(by_kind.items()):
        matched = sum(s.matched for s in scores)
        n_pred = sum(s.n_pred for s in scores)
        n_gold = sum(s.n_gold for s in scores)
        out[kind] = KindScore(
            tree_score=sum(s.score for s in scores) / len(scores),
            leaf_precision=matched / n_pred if n_pred else 1.0,
            leaf_recall=matched / n_gold if n_gold else 1.0,
            documents=len(scores),
        )
    return out


def dev_tree_score(predictions: Sequence[str], references: Sequence[str]) -> float:
    """The trainer's dev metric (training.dev.DEV_METRICS["tree_score"]): mean tree score (edit leaves) of
    the student's fillings against the reference fillings; an answer without a JSON object scores as a miss."""
    if not references:
        return 0.0
    total = 0.0
    for predicted, reference in zip(predictions, references, strict=True):
        try:
            value = parse_json_object(predicted, strict=False)
        except ValueError:
            value = None
        total += tree_score(value, parse_json_object(reference, strict=False)).score
    return total / len(references)
