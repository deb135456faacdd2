"""The lines a pipeline run ends with: version, gate decision with its deciding reason, F1, next commands."""

from __future__ import annotations

from distill_ner.config import GateConfig
from distill_ner.records import PromotionDecision
from distill_ner.registry import decide
from distill_ner.registry.summary import closing_lines, deciding_reason

USAGE = "distill-ner predict --model {uri} --types person"


def decision(candidate: dict[str, float], production: dict[str, float] | None, version: str = "2") -> PromotionDecision:
    coverage = {name: 10 for name in candidate}
    passed, reasons = decide(candidate, production, GateConfig(min_f1=0.3, margin=0.01), coverage, coverage)
    flat = {"avg_f1": sum(candidate.values()) / len(candidate), **{f"f1/{k}": v for k, v in candidate.items()}}
    return PromotionDecision(
        model_name="ner",
        version=version,
        promoted=passed,
        reasons=reasons,
        candidate=flat,
        production_version_before="1" if production else None,
    )


def test_first_model_promoted_names_the_floor_and_the_production_command() -> None:
    lines = closing_lines(decision({"a": 0.5, "b": 0.4}, None, version="1"), USAGE)
    assert lines[0] == (
        "Registered ner v1 (models:/ner/1); gate: promoted to production; pass: floor: avg F1 0.4500 >= min_f1 0.3000"
    )
    assert lines[1] == "F1 per benchmark: a 0.5000, b 0.4000 (avg 0.4500)"
    assert lines[2].startswith("Next: make ui")
    assert lines[3].strip() == "distill-ner predict --model models:/ner@production --types person"


def test_rejected_candidate_names_the_first_failed_check_and_its_own_version() -> None:
    rejected = decision({"a": 0.40}, {"a": 0.45})
    assert not rejected.promoted
    assert deciding_reason(rejected).startswith("fail: avg F1 0.4000 < production's 0.4500")
    lines = closing_lines(rejected, USAGE)
    assert "gate: not promoted (production stays v1)" in lines[0]
    assert lines[-1].strip() == "distill-ner predict --model models:/ner/2 --types person"


def test_promoted_over_production_names_the_margin_check() -> None:
    assert deciding_reason(decision({"a": 0.50}, {"a": 0.45})).startswith("pass: avg F1 0.5000 >= production's 0.4500")
