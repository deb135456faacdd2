"""What a pipeline run ends with on the console: the version it registered, the gate's decision and the
reason that decided it, F1 per benchmark, and the commands to look at or use the model next."""

from __future__ import annotations

from distill_ner.records import PromotionDecision


def deciding_reason(decision: PromotionDecision) -> str:
    """The first failed check of a rejected candidate; for a promoted one, the F1 check that let it pass."""
    checks = [r for r in decision.reasons if r.startswith(("pass:", "fail:"))]
    if not decision.promoted:
        return next((r for r in checks if r.startswith("fail:")), checks[-1] if checks else "no check ran")
    passing = [r for r in checks if r.startswith("pass:")]
    return next((r for r in reversed(passing) if "avg F1" in r), passing[-1] if passing else "passed")


def closing_lines(decision: PromotionDecision, usage: str | None = None) -> list[str]:
    """The run's last words. `usage` is the recipe's command line for the model, with {uri} for its URI."""
    name, version = decision.model_name, decision.version
    outcome = (
        "promoted to production"
        if decision.promoted
        else (
            f"not promoted (production stays v{decision.production_version_before})"
            if decision.production_version_before
            else "not promoted (no production version)"
        )
    )
    lines = [
        f"Registered {name} v{version} (models:/{name}/{version}); gate: {outcome}; {deciding_reason(decision)}",
    ]
    f1 = {k.removeprefix("f1/"): v for k, v in decision.candidate.items() if k.startswith("f1/")}
    if f1:
        lines.append(
            "F1 per benchmark: "
            + ", ".join(f"{b} {v:.4f}" for b, v in f1.items())
            + (f" (avg {decision.candidate['avg_f1']:.4f})" if len(f1) > 1 else "")
        )
    lines.append("Next: make ui  (MLflow UI: this run, its charts and the registry)")
    if usage:
        uri = f"models:/{name}@production" if decision.promoted else f"models:/{name}/{version}"
        lines.append("      " + usage.format(uri=uri))
    return lines
