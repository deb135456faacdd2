"""The promotion gate: a pure decision over the numbers of a candidate and of production.

The numbers are an evaluation report's primary metric per dataset (benchmark or document kind) and its
coverage (items scored per dataset); the reasons name the metric and the unit the report gives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from distill_ner.config import GateConfig
from distill_ner.records import EvalReport

# Floats compared for >=: a candidate equal to production plus a margin of 0.01 must not fail on
# the last bit of 0.1 + 0.01.
EPS = 1e-9


def metrics_from_report(report: EvalReport) -> tuple[dict[str, float], dict[str, int]]:
    """(dataset -> primary metric, dataset -> items scored) of an evaluation report."""
    primary = {name: float(value) for name, value in report.primary.items()}
    coverage = {name: int(report.coverage.get(name, 0)) for name in primary}
    return primary, coverage


def average(f1: Mapping[str, float]) -> float:
    return sum(f1.values()) / len(f1) if f1 else 0.0


def decide(
    candidate: Mapping[str, float],
    production: Mapping[str, float] | None,
    gate: GateConfig,
    candidate_benchmarks: Mapping[str, int],
    production_benchmarks: Mapping[str, int] | None = None,
    *,
    metric: str = "F1",
    unit: str = "sentences",
) -> tuple[bool, list[str]]:
    """The promotion gate, as a pure function of the numbers.

    `candidate` / `production`: benchmark -> primary metric (named `metric` in the reasons, e.g. F1);
    `*_benchmarks`: benchmark -> items scored (coverage, counted in `unit`s). `production` None means
    there is no production version yet: only the floor applies. Returns (passed, reasons); every check
    that ran is stated with its numbers, prefixed pass/fail. The thresholds are GateConfig's (`min_f1`
    is the floor on the primary metric, whatever it is named).
    """
    reasons: list[str] = []
    if not candidate:
        return False, ["fail: the evaluation is empty (0 benchmarks scored); an empty evaluation never passes"]

    failed = [
        f"fail: benchmark {name}: evaluation failed ({metric} {f1!r}, {candidate_benchmarks.get(name, 0)} {unit} evaluated)"
        for name, f1 in sorted(candidate.items())
        if not math.isfinite(f1) or not 0.0 <= f1 <= 1.0 or candidate_benchmarks.get(name, 0) <= 0
    ]
    if failed:
        return False, failed

    avg = average(candidate)
    ok = avg + EPS >= gate.min_f1
    reasons.append(
        f"{'pass' if ok else 'fail'}: floor: avg {metric} {avg:.4f} {'>=' if ok else '<'} min_f1 {gate.min_f1:.4f}"
    )
    passed = ok

    if production is None:
        reasons.append("pass: no production version yet: first model, only the floor applies")
        return passed, reasons
    if not production:
        reasons.append("fail: the production version has no recorded evaluation to compare with; promote by hand")
        return False, reasons

    missing, extra = sorted(set(production) - set(candidate)), sorted(set(candidate) - set(production))
    if missing or extra:
        reasons.append(
            f"fail: benchmark set differs from production's ({len(candidate)} vs {len(production)}):"
            f" missing {missing}, not in production {extra}; not comparable"
        )
        return False, reasons
    reasons.append(f"pass: same {len(candidate)} benchmarks as production: {sorted(candidate)}")

    prod_cov = production_benchmarks or {}
    differing = [
        f"{name}: {candidate_benchmarks.get(name, 0)} vs production's {prod_cov.get(name, 0)} {unit}"
        for name in sorted(candidate)
        if candidate_benchmarks.get(name, 0) != prod_cov.get(name, 0)
    ]
    if differing:
        reasons.append(f"fail: coverage differs from production's ({'; '.join(differing)}); not comparable")
        return False, reasons
    reasons.append(f"pass: same coverage as production ({sum(candidate_benchmarks.values())} {unit} in all)")

    prod_avg = average(production)
    needed = prod_avg + gate.margin
    ok = avg + EPS >= needed
    reasons.append(
        f"{'pass' if ok else 'fail'}: avg {metric} {avg:.4f} {'>=' if ok else '<'} production's {prod_avg:.4f}"
        f" + margin {gate.margin:.4f} = {needed:.4f}"
    )
    passed = passed and ok

    drops = {name: production[name] - candidate[name] for name in candidate}
    too_far = {name: d for name, d in drops.items() if d > gate.max_drop + EPS}
    for name, d in sorted(too_far.items()):
        reasons.append(
            f"fail: benchmark {name}: {metric} {candidate[name]:.4f} dropped {d:.4f} from production's"
            f" {production[name]:.4f} (max_drop {gate.max_drop:.4f})"
        )
    if not too_far:
        worst = max(drops, key=lambda n: drops[n])
        reasons.append(
            f"pass: largest single-benchmark drop {max(drops[worst], 0.0):.4f} ({worst}) <= max_drop {gate.max_drop:.4f}"
        )
    return passed and not too_far, reasons


def flat_metrics(f1: Mapping[str, float]) -> dict[str, float]:
    """The metrics of a PromotionDecision: avg_f1 and f1/<benchmark>."""
    return {"avg_f1": average(f1), **{f"f1/{name}": value for name, value in sorted(f1.items())}}
