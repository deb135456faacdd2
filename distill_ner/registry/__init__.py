"""The MLflow model registry: the promotion gate, aliases and their ZenML mirror."""

from distill_ner.registry.promote import (
    PREVIOUS,
    PRODUCTION,
    TAG_CONTENT_HASH,
    TAG_METRICS,
    TAG_PASSED,
    TAG_REASONS,
    TAG_REPLACED,
    TAG_ROLLED_BACK,
    TAG_ZENML_VERSION_ID,
    decide,
    lock_path,
    metrics_from_report,
    model_content_hash,
    production_version,
    promote,
    promotion_lock,
    redact,
    register_and_gate,
    rollback,
    version_metrics,
)

__all__ = [
    "PREVIOUS", "PRODUCTION", "TAG_CONTENT_HASH", "TAG_METRICS", "TAG_PASSED", "TAG_REASONS", "TAG_REPLACED",
    "TAG_ROLLED_BACK", "TAG_ZENML_VERSION_ID", "decide", "lock_path", "metrics_from_report", "model_content_hash",
    "production_version", "promote", "promotion_lock", "redact", "register_and_gate", "rollback", "version_metrics",
]
