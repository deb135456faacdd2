"""Registering a candidate: log it as the recipe's pyfunc, register it (once per model content) with its
evaluation as tags, decide the gate against production inside the promotion lock, and record the decision.

Each version carries its evaluation as tags (`gate.metrics` as JSON for the gate, plus readable `avg_f1`,
`f1.<dataset>`, `coverage.<dataset>`: the primary metric under the names the dashboards know), the content
hash of its model folder, the run that logged it, the training record, and its ZenML model version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill_ner.config import GateConfig
from distill_ner.records import EvalReport, PromotionDecision
from distill_ner.registry.gate import average, decide, flat_metrics, metrics_from_report
from distill_ner.registry.promote import (
    PRODUCTION,
    TAG_CONTENT_HASH,
    TAG_METRICS,
    TAG_PASSED,
    TAG_REASONS,
    PromotionLease,
    _alias_version,
    _client,
    _ensure_registered_model,
    _promote_locked,
    call_before_move,
    promotion_lock,
)
from distill_ner.registry.zenml_sync import log_zenml_metadata, zenml_link_tags

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from distill_ner.serving import Flavour

logger = logging.getLogger(__name__)

_SECRET_KEY = re.compile(r"(^|[_.\-/])(api_?key|secret|password|passwd|token|credentials?|auth)($|[_.\-/])", re.I)
_SECRET_VALUE = re.compile(r"^(sk-[A-Za-z0-9_\-]{8,}|hf_[A-Za-z0-9]{8,}|ghp_[A-Za-z0-9]{8,})$")


def register_and_gate(
    model_dir: Path,
    report: EvalReport,
    gate: GateConfig,
    tags: Mapping[str, Any] | None = None,
    zenml_model_version: Any = None,
    *,
    flavour: Flavour,
) -> PromotionDecision:
    """Register the candidate as a version of `gate.model_name`, gate it against production, promote if it passes.

    Logs the model as a pyfunc of the recipe's `flavour` (see distill_ner.serving) in the active MLflow run,
    or in a new run when none is active. A folder already registered (same content hash) is reused, not
    registered again: a cached pipeline re-run re-executes this step with the same model.
    """
    import mlflow

    from distill_ner import serving

    model_dir = Path(model_dir)
    client = _client()
    name = gate.model_name
    primary, coverage = metrics_from_report(report)
    content_hash = model_content_hash(model_dir)

    def log_model() -> Any:
        return serving.log_model(model_dir, flavour, "model")

    active = mlflow.active_run()
    run = active or mlflow.start_run(run_name=f"register-{name}")
    try:
        run_id = run.info.run_id
        # outside the lock: copying a model folder takes seconds and needs no serialisation
        logged = log_model() if _find_by_hash(client, name, content_hash) is None else None
        version_tags = {
            **_version_tags(model_dir, report, tags, zenml_model_version, primary, coverage),
            "mlflow.run_id": run_id,
            TAG_CONTENT_HASH: content_hash,
        }
        with promotion_lock(name) as lease:
            version = _register_locked(client, name, content_hash, version_tags, run_id, log_model, logged)
            gated = _gate_locked(client, name, version, report, gate, primary, coverage, zenml_model_version, lease)
            _record_decision(client, name, version, gated)
    finally:
        if active is None:
            mlflow.end_run()

    if zenml_model_version is not None:
        log_zenml_metadata(zenml_model_version, name, str(version.version), gated.passed)
    production = gated.production
    return PromotionDecision(
        model_name=name,
        version=str(version.version),
        promoted=gated.passed,
        reasons=gated.reasons,
        candidate=flat_metrics(primary),
        production_before=flat_metrics(gated.production_metrics) if gated.production_metrics else None,
        production_version_before=str(production.version) if production is not None else None,
    )


def _version_tags(
    model_dir: Path,
    report: EvalReport,
    tags: Mapping[str, Any] | None,
    zenml_model_version: Any,
    primary: Mapping[str, float],
    coverage: Mapping[str, int],
) -> dict[str, str]:
    """What a registered version carries: the caller's tags (redacted), training record, gate metrics, ZenML link."""
    return {
        **{_tag_key(k): str(v) for k, v in redact(dict(tags or {})).items()},
        **_training_tags(model_dir),
        **_metric_tags(primary, coverage),
        **zenml_link_tags(zenml_model_version),
        "evaluated_model": report.model,
    }


@dataclass
class _Gated:
    passed: bool
    reasons: list[str]
    production: "ModelVersion | None"  # production when the gate ran
    production_metrics: dict[str, float] | None
    already_production: bool


def _gate_locked(
    client: "MlflowClient",
    name: str,
    version: "ModelVersion",
    report: EvalReport,
    gate: GateConfig,
    primary: Mapping[str, float],
    coverage: Mapping[str, int],
    zenml_model_version: Any,
    lease: PromotionLease,
) -> _Gated:
    """The gate decided against the production of this moment, and production moved if it passed. Call under the lease."""
    production = _alias_version(client, name, PRODUCTION)
    call_before_move(name, production)
    recorded = version_metrics(production) if production is not None else None
    prod_primary, prod_cov = recorded if recorded else (({}, {}) if production is not None else (None, None))
    if production is not None and production.version == version.version:
        reasons = [f"pass: v{version.version} (same model content) is already production"]
        _promote_locked(client, name, version, zenml_model_version, lease)  # only syncs the ZenML stage
        return _Gated(True, reasons, production, prod_primary, already_production=True)
    passed, reasons = decide(primary, prod_primary, gate, coverage, prod_cov, metric=report.metric, unit=report.unit)
    if passed:
        _promote_locked(client, name, version, zenml_model_version, lease)
        reasons.append(
            f"promoted v{version.version} to production"
            + (f"; v{production.version} is now `previous`" if production is not None else "")
        )
    else:
        stays = f"v{production.version}" if production is not None else "unset"
        reasons.append(f"not promoted: v{version.version} registered; production stays {stays}")
    return _Gated(passed, reasons, production, prod_primary, already_production=False)


def _record_decision(client: "MlflowClient", name: str, version: "ModelVersion", gated: _Gated) -> None:
    """The decision as tags on the run, and on the version unless it was already production. Call under the lock."""
    import mlflow

    decision_tags = {TAG_PASSED: str(gated.passed).lower(), TAG_REASONS: "\n".join(gated.reasons)}
    if gated.production is not None:
        decision_tags["gate.production_before"] = str(gated.production.version)
    # the version keeps the decision that made it production; a re-run only records its own on the run
    if not gated.already_production:
        for key, value in decision_tags.items():
            client.set_model_version_tag(name, version.version, key, value)
        # the registry page shows the description: the gate's checks as a list
        verdict = "promoted to production" if gated.passed else "not promoted"
        client.update_model_version(
            name, version.version, description="\n".join([f"Gate: {verdict}.", "", *[f"- {r}" for r in gated.reasons]])
        )
    mlflow.set_tags({**decision_tags, "registered_model": name, "registered_version": str(version.version)})


def _register_locked(
    client: "MlflowClient",
    name: str,
    content_hash: str,
    version_tags: Mapping[str, str],
    run_id: str,
    log_model: Any,
    logged: Any,
) -> "ModelVersion":
    """A new version for this content, or the version already holding it (its tags refreshed). Call under the lock."""
    existing = _find_by_hash(client, name, content_hash)  # re-read: a racing process may have registered it
    if existing is None:
        logged = logged or log_model()  # None when found before the lock and deleted since
        _ensure_registered_model(client, name)
        version = client.create_model_version(
            name, source=logged.model_uri, run_id=run_id, tags=dict(version_tags), model_id=logged.model_id
        )
        _link_logged_model(client, version, logged.model_id)
        return version
    logger.info("%s: content %s already registered as v%s; reusing it", name, content_hash[:12], existing.version)
    # the latest evaluation, run and ZenML version describe it from now on; `mlflow.run_id` stays the logging run
    for key, value in {**version_tags, "last_run_id": run_id}.items():
        if key != "mlflow.run_id":
            client.set_model_version_tag(name, existing.version, key, value)
    return client.get_model_version(name, existing.version)


def _link_logged_model(client: "MlflowClient", version: "ModelVersion", model_id: str | None) -> None:
    """List the version on its logged model's page: MLflow reads the `mlflow.modelVersions` tag there, which
    mlflow.register_model sets and MlflowClient.create_model_version does not (nor does the version returned
    by a sqlite registry carry the model id, hence the argument)."""
    if not model_id:
        return
    try:
        tags = client.get_logged_model(model_id).tags
        linked = json.loads(tags.get("mlflow.modelVersions", "[]"))
        entry = {"name": version.name, "version": str(version.version)}
        if entry not in linked:
            client.set_logged_model_tags(model_id, {"mlflow.modelVersions": json.dumps([*linked, entry])})
    except Exception as exc:  # noqa: BLE001  (the registration stands; only the link is missing)
        logger.warning("logged model %s not linked to %s v%s: %s", model_id, version.name, version.version, exc)


def _find_by_hash(client: "MlflowClient", name: str, content_hash: str) -> "ModelVersion | None":
    found = client.search_model_versions(f"name = '{name}' and tags.{TAG_CONTENT_HASH} = '{content_hash}'")
    return min(found, key=lambda v: int(v.version)) if found else None


def version_metrics(version: "ModelVersion") -> tuple[dict[str, float], dict[str, int]] | None:
    """(F1, coverage) recorded on a version, or None when it carries no gate metrics."""
    raw = version.tags.get(TAG_METRICS)
    if not raw:
        return None
    data = json.loads(raw)
    return {k: float(v) for k, v in data["f1"].items()}, {k: int(v) for k, v in data["coverage"].items()}


def _metric_tags(f1: Mapping[str, float], coverage: Mapping[str, int]) -> dict[str, str]:
    tags = {
        TAG_METRICS: json.dumps({"f1": dict(f1), "coverage": dict(coverage)}, sort_keys=True),
        "avg_f1": f"{average(f1):.6f}",
    }
    tags.update({_tag_key(f"f1.{name}"): f"{value:.6f}" for name, value in f1.items()})
    tags.update({_tag_key(f"coverage.{name}"): str(n) for name, n in coverage.items()})
    return tags


def model_content_hash(model_dir: str | Path) -> str:
    """sha256 over relative paths and bytes of every file in the folder, independent of where it lies.

    (distill_ner.fingerprint hashes the path string too; a cached ZenML re-run hands this step the same
    artifact under a different temporary path, and must find the version it registered before.)
    """
    root = Path(model_dir)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def _is_secret(key: str, value: Any) -> bool:
    if _SECRET_KEY.search(key):
        return True
    text = str(value)
    if _SECRET_VALUE.match(text):
        return True
    # the value of any environment variable whose name says it holds a secret
    return any(_SECRET_KEY.search(k) and v and len(v) >= 8 and v in text for k, v in os.environ.items())


def redact(obj: Any, key: str = "") -> Any:
    """A copy of a JSON-like object with secret-looking keys or values replaced: secrets never reach MLflow."""
    if isinstance(obj, Mapping):
        return {k: redact(v, str(k)) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact(v, key) for v in obj]
    if isinstance(obj, str) and _is_secret(key, obj):
        return "<redacted>"
    return obj


def _tag_key(text: str) -> str:
    """MLflow tag keys allow letters, digits, `_-./: ` and at most 250 characters."""
    return re.sub(r"[^A-Za-z0-9_\-./: ]", "_", text)[:250]


def _training_tags(model_dir: Path) -> dict[str, str]:
    path = model_dir / "training_config.json"
    if not path.exists():
        return {}
    record = redact(json.loads(path.read_text()))
    tags = {"training_config": json.dumps(record, sort_keys=True)}
    for key in ("data_hash", "base_model", "student", "method", "precision"):
        if record.get(key) is not None:
            tags[key] = str(record[key])
    return tags
