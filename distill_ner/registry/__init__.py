"""The MLflow model registry: the promotion gate (gate), registration of a candidate (register), moving
`production` under a lease kept in the registry (promote) and its ZenML mirror (zenml_sync)."""

from distill_ner.registry.gate import decide, metrics_from_report
from distill_ner.registry.promote import (
    PREVIOUS,
    PRODUCTION,
    TAG_CONTENT_HASH,
    TAG_METRICS,
    TAG_PASSED,
    TAG_REASONS,
    TAG_REPLACED,
    TAG_ROLLED_BACK,
    AliasesMovedMeanwhile,
    LeaseExpired,
    PromotionLease,
    lease_name,
    production_version,
    promote,
    promotion_lock,
    rollback,
)
from distill_ner.registry.register import model_content_hash, redact, register_and_gate, version_metrics
from distill_ner.registry.zenml_sync import TAG_ZENML_VERSION_ID

__all__ = [
    "PREVIOUS",
    "PRODUCTION",
    "TAG_CONTENT_HASH",
    "TAG_METRICS",
    "TAG_PASSED",
    "TAG_REASONS",
    "TAG_REPLACED",
    "TAG_ROLLED_BACK",
    "TAG_ZENML_VERSION_ID",
    "decide",
    "AliasesMovedMeanwhile",
    "LeaseExpired",
    "PromotionLease",
    "lease_name",
    "metrics_from_report",
    "model_content_hash",
    "production_version",
    "promote",
    "promotion_lock",
    "redact",
    "register_and_gate",
    "rollback",
    "version_metrics",
]
