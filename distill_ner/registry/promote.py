"""Registry-gated promotion: register every candidate in MLflow, move `production` only past the gate.

State lives in the MLflow model registry (MLflow 3 aliases, not the deprecated stages):

- alias `production` names the version that serves; alias `previous` the one it replaced;
- each version carries its evaluation as tags (`gate.metrics` as JSON for the gate, plus readable
  `avg_f1`, `f1.<benchmark>`, `coverage.<benchmark>`), the content hash of its model folder, the run
  that logged it, the training record, and the ZenML model version it came from (`zenml.model_version_id`);
- the ZenML Model Control Plane mirrors `production` as a stage on the linked ZenML model version.

Every move of `production` (gated promotion, manual promotion, rollback) runs under one file lock
per registered model and re-reads the registry inside it, so two processes racing to promote leave
exactly one production version, decided against the production that was current at that moment.
The MLflow aliases are written first and the ZenML stage last; if the ZenML write fails the aliases
are put back as they were and the error is re-raised.

Rollback semantics (a choice): `production` <- `previous`, and `previous` <- the version that the
restored one had itself replaced when it was promoted (its `gate.replaced` tag), so repeated rollbacks
walk back through the promotion history. The version rolled back from gets no alias (and a
`gate.rolled_back` tag): a second rollback never re-promotes the model that was just taken down.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from distill_ner.config import GateConfig
from distill_ner.records import EvalReport, PromotionDecision

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

logger = logging.getLogger(__name__)

PRODUCTION = "production"
PREVIOUS = "previous"

# version tags
TAG_CONTENT_HASH = "content_hash"
TAG_METRICS = "gate.metrics"  # JSON {"f1": {benchmark: f1}, "coverage": {benchmark: sentences}}
TAG_PASSED = "gate.passed"
TAG_REASONS = "gate.reasons"
TAG_REPLACED = "gate.replaced"  # the production version this one replaced when it was promoted
TAG_ROLLED_BACK = "gate.rolled_back"
TAG_ZENML_VERSION_ID = "zenml.model_version_id"

# Floats compared for >=: a candidate equal to production plus a margin of 0.01 must not fail on
# the last bit of 0.1 + 0.01.
EPS = 1e-9
LOCK_TIMEOUT_S = 900.0

_SECRET_KEY = re.compile(r"(^|[_.\-/])(api_?key|secret|password|passwd|token|credentials?|auth)($|[_.\-/])", re.I)
_SECRET_VALUE = re.compile(r"^(sk-[A-Za-z0-9_\-]{8,}|hf_[A-Za-z0-9]{8,}|ghp_[A-Za-z0-9]{8,})$")


# ------------------------------------------------------------------------------------------- the gate


def metrics_from_report(report: EvalReport) -> tuple[dict[str, float], dict[str, int]]:
    """(benchmark -> F1, benchmark -> sentences evaluated) of an evaluation report."""
    f1 = {name: float(scores.f1) for name, scores in report.per_dataset.items()}
    coverage = {name: int(report.coverage.get(name, scores.n_sentences)) for name, scores in report.per_dataset.items()}
    return f1, coverage


def average(f1: Mapping[str, float]) -> float:
    return sum(f1.values()) / len(f1) if f1 else 0.0


def decide(
    candidate: Mapping[str, float],
    production: Mapping[str, float] | None,
    gate: GateConfig,
    candidate_benchmarks: Mapping[str, int],
    production_benchmarks: Mapping[str, int] | None = None,
) -> tuple[bool, list[str]]:
    """The promotion gate, as a pure function of the numbers.

    `candidate` / `production`: benchmark -> F1; `*_benchmarks`: benchmark -> sentences evaluated
    (coverage). `production` None means there is no production version yet: only the floor applies.
    Returns (passed, reasons); every check that ran is stated with its numbers, prefixed pass/fail.
    """
    reasons: list[str] = []
    if not candidate:
        return False, ["fail: the evaluation is empty (0 benchmarks scored); an empty evaluation never passes"]

    failed = [
        f"fail: benchmark {name}: evaluation failed (F1 {f1!r}, {candidate_benchmarks.get(name, 0)} sentences evaluated)"
        for name, f1 in sorted(candidate.items())
        if not math.isfinite(f1) or not 0.0 <= f1 <= 1.0 or candidate_benchmarks.get(name, 0) <= 0
    ]
    if failed:
        return False, failed

    avg = average(candidate)
    ok = avg + EPS >= gate.min_f1
    reasons.append(f"{'pass' if ok else 'fail'}: floor: avg F1 {avg:.4f} {'>=' if ok else '<'} min_f1 {gate.min_f1:.4f}")
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
        f"{name}: {candidate_benchmarks.get(name, 0)} vs production's {prod_cov.get(name, 0)} sentences"
        for name in sorted(candidate)
        if candidate_benchmarks.get(name, 0) != prod_cov.get(name, 0)
    ]
    if differing:
        reasons.append(f"fail: coverage differs from production's ({'; '.join(differing)}); not comparable")
        return False, reasons
    reasons.append(f"pass: same coverage as production ({sum(candidate_benchmarks.values())} sentences in all)")

    prod_avg = average(production)
    needed = prod_avg + gate.margin
    ok = avg + EPS >= needed
    reasons.append(
        f"{'pass' if ok else 'fail'}: avg F1 {avg:.4f} {'>=' if ok else '<'} production's {prod_avg:.4f}"
        f" + margin {gate.margin:.4f} = {needed:.4f}"
    )
    passed = passed and ok

    drops = {name: production[name] - candidate[name] for name in candidate}
    too_far = {name: d for name, d in drops.items() if d > gate.max_drop + EPS}
    for name, d in sorted(too_far.items()):
        reasons.append(
            f"fail: benchmark {name}: F1 {candidate[name]:.4f} dropped {d:.4f} from production's"
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


# ------------------------------------------------------------------------------------- small helpers


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


def lock_path(model_name: str, registry_uri: str | None = None) -> Path:
    """The promotion lock of a registered model: next to a sqlite/file store, else in the user cache.

    A lock beside the store serialises every process that shares the store's file system; for a
    remote tracking server the lock only serialises processes on this machine.
    """
    import mlflow

    uri = registry_uri or mlflow.get_registry_uri()
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", model_name)
    store: Path | None = None
    if uri.startswith("sqlite:///"):
        store = Path(uri[len("sqlite:///") :].split("?", 1)[0])
    elif uri.startswith("file:"):
        store = Path(urlparse(uri).path)
    elif "://" not in uri and not uri.startswith("databricks"):
        store = Path(uri)
    if store is not None:
        store = store.expanduser().resolve()
        return store.parent / f"{store.name}.{safe}.promotion.lock"
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return Path("~/.cache/distill-ner/locks").expanduser() / f"{digest}.{safe}.promotion.lock"


@contextmanager
def promotion_lock(model_name: str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    from filelock import FileLock, Timeout

    path = lock_path(model_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(path), timeout=timeout):
            yield
    except Timeout as exc:
        raise TimeoutError(f"another promotion of {model_name!r} holds {path} for more than {timeout:.0f} s") from exc


def _client() -> "MlflowClient":
    from mlflow import MlflowClient

    return MlflowClient()


def _aliases(client: "MlflowClient", name: str) -> dict[str, str]:
    """alias -> version of a registered model ({} while it does not exist).

    Read from the registered model rather than by `get_model_version_by_alias`, which reports a missing
    alias as INVALID_PARAMETER_VALUE, the same code as a real error."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise
    return {alias: str(version) for alias, version in (model.aliases or {}).items()}


def _alias_or_none(client: "MlflowClient", name: str, alias: str) -> str | None:
    return _aliases(client, name).get(alias)


def _alias_version(client: "MlflowClient", name: str, alias: str) -> "ModelVersion | None":
    version = _alias_or_none(client, name, alias)
    return client.get_model_version(name, version) if version is not None else None


def _set_alias(client: "MlflowClient", name: str, alias: str, version: str | None) -> None:
    """Point `alias` at `version`, or remove it when version is None."""
    if version is not None:
        client.set_registered_model_alias(name, alias, str(version))
    elif alias in _aliases(client, name):
        client.delete_registered_model_alias(name, alias)


def _ensure_registered_model(client: "MlflowClient", name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(name, description="distill-ner student; `production` alias serves")
        except MlflowException as exc:  # created meanwhile by another process
            if "already exists" not in str(exc).lower():
                raise


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
    tags = {TAG_METRICS: json.dumps({"f1": dict(f1), "coverage": dict(coverage)}, sort_keys=True), "avg_f1": f"{average(f1):.6f}"}
    tags.update({_tag_key(f"f1.{name}"): f"{value:.6f}" for name, value in f1.items()})
    tags.update({_tag_key(f"coverage.{name}"): str(n) for name, n in coverage.items()})
    return tags


# ------------------------------------------------------------------------------------------- ZenML side


def _zenml_link_tags(zenml_model_version: Any) -> dict[str, str]:
    if zenml_model_version is None:
        return {}
    model_name = getattr(zenml_model_version, "name", None)
    if hasattr(zenml_model_version, "model"):  # a ModelVersionResponse: .name is the version's name
        model_name = zenml_model_version.model.name
    return {
        TAG_ZENML_VERSION_ID: str(zenml_model_version.id),
        "zenml.model_name": str(model_name),
        "zenml.model_version_number": str(getattr(zenml_model_version, "number", "")),
    }


def _sync_zenml_stage(model_name: str, version: "ModelVersion", zenml_model_version: Any = None) -> None:
    """Make the ZenML production stage agree with the MLflow `production` alias.

    The ZenML model version is the one the MLflow version is linked to (the explicit argument, or the
    `zenml.model_version_id` tag written at registration). MLflow and ZenML version numbers are not
    the same sequence (a cached re-run adds a ZenML version but reuses the MLflow one), so versions
    are never matched by number. When the MLflow version has no ZenML link but a ZenML model of the
    same name exists, its production version (if any) is archived, so that ZenML does not show a
    production model that MLflow no longer serves.
    """
    link = zenml_model_version
    linked_id = version.tags.get(TAG_ZENML_VERSION_ID)
    if link is None and not linked_id:
        from zenml.client import Client

        client = Client()
        try:
            current = client.get_model_version(model_name, "production")
        except KeyError:  # no ZenML model of that name, or none in production: nothing disagrees
            return
        logger.warning(
            "MLflow %s v%s has no ZenML model version: archiving ZenML %s v%s (was production)",
            model_name, version.version, model_name, current.number,
        )
        current.set_stage("archived", force=True)
        return
    if link is None:
        from zenml.client import Client

        link = Client().get_model_version(None, linked_id)
    link.set_stage("production", force=True)


# ---------------------------------------------------------------------------------- moving production


def _move_production(
    client: "MlflowClient",
    model_name: str,
    target: "ModelVersion",
    new_previous: str | None,
    zenml_model_version: Any = None,
) -> None:
    """Aliases first, ZenML stage last; any failure puts the aliases back as they were. Call under the lock."""
    aliases = _aliases(client, model_name)
    before = {alias: aliases.get(alias) for alias in (PRODUCTION, PREVIOUS)}
    try:
        _set_alias(client, model_name, PRODUCTION, target.version)
        _set_alias(client, model_name, PREVIOUS, new_previous)
        _sync_zenml_stage(model_name, target, zenml_model_version)
    except BaseException:
        logger.error("moving %s production to v%s failed; restoring aliases %s", model_name, target.version, before)
        for alias, version in before.items():
            _set_alias(client, model_name, alias, version)
        raise


def _promote_locked(client: "MlflowClient", model_name: str, version: "ModelVersion", zenml_model_version: Any = None) -> str | None:
    current = _alias_version(client, model_name, PRODUCTION)
    if current is not None and str(current.version) == str(version.version):
        # already production: the aliases stay as they are; only make sure ZenML agrees
        _sync_zenml_stage(model_name, version, zenml_model_version)
        return str(current.version)
    before = str(current.version) if current is not None else None
    # with no production at all (alias removed by hand), `previous` stays where it was
    new_previous = before if before is not None else _alias_or_none(client, model_name, PREVIOUS)
    _move_production(client, model_name, version, new_previous, zenml_model_version)
    # history for rollback, written only once the move has happened
    if before is not None:
        client.set_model_version_tag(model_name, version.version, TAG_REPLACED, before)
    elif version.tags.get(TAG_REPLACED):
        client.delete_model_version_tag(model_name, version.version, TAG_REPLACED)
    if version.tags.get(TAG_ROLLED_BACK):  # promoted again on purpose: the old mark no longer holds
        client.delete_model_version_tag(model_name, version.version, TAG_ROLLED_BACK)
    return before


def promote(model_name: str, version: str | int, zenml_model_version: Any = None) -> str | None:
    """Move `production` to `version` (no gate: a deliberate, manual promotion); returns the version it replaced.

    The replaced version gets the alias `previous`; the ZenML model version linked to `version`
    (or `zenml_model_version`) gets the stage production. All or nothing, serialised by the lock.
    """
    client = _client()
    with promotion_lock(model_name):
        target = client.get_model_version(model_name, str(version))
        replaced = _promote_locked(client, model_name, target, zenml_model_version)
        # an explicit ZenML version becomes the version's link, so a later rollback finds the same one
        for key, value in _zenml_link_tags(zenml_model_version).items():
            client.set_model_version_tag(model_name, target.version, key, value)
        return replaced


def rollback(model_name: str) -> str:
    """production <- previous; previous <- what the restored version had replaced. Returns the new production."""
    from mlflow.exceptions import MlflowException

    client = _client()
    with promotion_lock(model_name):
        current = _alias_or_none(client, model_name, PRODUCTION)
        previous = _alias_version(client, model_name, PREVIOUS)
        if previous is None:
            raise LookupError(
                f"{model_name}: no `previous` version to roll back to (production is "
                f"{'v' + current if current else 'unset'}); promote a version explicitly instead"
            )
        older = previous.tags.get(TAG_REPLACED)
        if older in (str(previous.version), current):
            older = None  # never make the version rolled back from (or the target itself) `previous`
        if older is not None:
            try:
                client.get_model_version(model_name, older)
            except MlflowException:  # deleted since
                older = None
        _move_production(client, model_name, previous, older)
        if current is not None:
            client.set_model_version_tag(model_name, current, TAG_ROLLED_BACK, time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        return str(previous.version)


def production_version(model_name: str) -> str | None:
    return _alias_or_none(_client(), model_name, PRODUCTION)


# ------------------------------------------------------------------------------- register and gate


def _register_locked(
    client: "MlflowClient", name: str, content_hash: str, version_tags: Mapping[str, str], run_id: str, log_model: Any, logged: Any
) -> "ModelVersion":
    """A new version for this content, or the version already holding it (its tags refreshed). Call under the lock."""
    existing = _find_by_hash(client, name, content_hash)  # re-read: a racing process may have registered it
    if existing is None:
        logged = logged or log_model()  # None when found before the lock and deleted since
        _ensure_registered_model(client, name)
        version = client.create_model_version(name, source=logged.model_uri, run_id=run_id, tags=dict(version_tags), model_id=logged.model_id)
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


def register_and_gate(
    model_dir: Path,
    report: EvalReport,
    gate: GateConfig,
    tags: Mapping[str, Any] | None = None,
    zenml_model_version: Any = None,
    *,
    log_kwargs: Mapping[str, Any] | None = None,
) -> PromotionDecision:
    """Register the candidate as a version of `gate.model_name`, gate it against production, promote if it passes.

    Logs the model as a pyfunc (see distill_ner.serving) in the active MLflow run, or in a new run when
    none is active. A folder already registered (same content hash) is reused, not registered again:
    a cached pipeline re-run re-executes this step with the same model. `log_kwargs` go to
    serving.log_ner_model (engine settings, `base_dtype`, or another pyfunc flavour).
    """
    import mlflow

    from distill_ner import serving

    model_dir = Path(model_dir)
    client = _client()
    name = gate.model_name
    f1, coverage = metrics_from_report(report)
    content_hash = model_content_hash(model_dir)

    def log_model() -> Any:
        return serving.log_ner_model(model_dir, "model", **dict(log_kwargs or {}))

    active = mlflow.active_run()
    run = active or mlflow.start_run(run_name=f"register-{name}")
    try:
        run_id = run.info.run_id
        # outside the lock: copying a model folder takes seconds and needs no serialisation
        logged = log_model() if _find_by_hash(client, name, content_hash) is None else None
        version_tags = {
            **{_tag_key(k): str(v) for k, v in redact(dict(tags or {})).items()},
            **_training_tags(model_dir),
            **_metric_tags(f1, coverage),
            **_zenml_link_tags(zenml_model_version),
            "mlflow.run_id": run_id,
            "evaluated_model": report.model,
            TAG_CONTENT_HASH: content_hash,
        }
        with promotion_lock(name):
            version = _register_locked(client, name, content_hash, version_tags, run_id, log_model, logged)
            # the gate is decided against the production of this moment, inside the lock
            production = _alias_version(client, name, PRODUCTION)
            recorded = version_metrics(production) if production is not None else None
            prod_f1, prod_cov = recorded if recorded else (({}, {}) if production is not None else (None, None))
            already_production = production is not None and production.version == version.version
            if already_production:
                passed, reasons = True, [f"pass: v{version.version} (same model content) is already production"]
                _promote_locked(client, name, version, zenml_model_version)  # only syncs the ZenML stage
            else:
                passed, reasons = decide(f1, prod_f1, gate, coverage, prod_cov)
                if passed:
                    _promote_locked(client, name, version, zenml_model_version)
                    reasons.append(
                        f"promoted v{version.version} to production"
                        + (f"; v{production.version} is now `previous`" if production is not None else "")
                    )
                else:
                    stays = f"v{production.version}" if production is not None else "unset"
                    reasons.append(f"not promoted: v{version.version} registered; production stays {stays}")
            decision_tags = {TAG_PASSED: str(passed).lower(), TAG_REASONS: "\n".join(reasons)}
            if production is not None:
                decision_tags["gate.production_before"] = str(production.version)
            # the version keeps the decision that made it production; a re-run only records its own on the run
            if not already_production:
                for key, value in decision_tags.items():
                    client.set_model_version_tag(name, version.version, key, value)
                # the registry page shows the description: the gate's checks as a list
                verdict = "promoted to production" if passed else "not promoted"
                client.update_model_version(name, version.version, description="\n".join(
                    [f"Gate: {verdict}.", "", *[f"- {r}" for r in reasons]]))
            mlflow.set_tags({**decision_tags, "registered_model": name, "registered_version": str(version.version)})
    finally:
        if active is None:
            mlflow.end_run()

    if zenml_model_version is not None:
        _log_zenml_metadata(zenml_model_version, name, str(version.version), passed)
    return PromotionDecision(
        model_name=name,
        version=str(version.version),
        promoted=passed,
        reasons=reasons,
        candidate=flat_metrics(f1),
        production_before=flat_metrics(prod_f1) if prod_f1 else None,
        production_version_before=str(production.version) if production is not None else None,
    )


def _log_zenml_metadata(zenml_model_version: Any, name: str, version: str, passed: bool) -> None:
    """Link back from ZenML to MLflow; a failure here loses a link, never the registration."""
    try:
        from zenml import log_metadata

        log_metadata(
            metadata={"mlflow_model_name": name, "mlflow_model_version": version, "gate_passed": passed},
            model_version_id=zenml_model_version.id,
        )
    except Exception as exc:  # noqa: BLE001
        logger.warning("ZenML metadata not logged on model version %s: %s", getattr(zenml_model_version, "id", "?"), exc)
