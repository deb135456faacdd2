"""Moving `production` in the MLflow registry: aliases, the promotion lock, promote and rollback.

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
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from distill_ner.registry.zenml_sync import TAG_ZENML_VERSION_ID, sync_zenml_stage, zenml_link_tags  # noqa: F401

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

logger = logging.getLogger(__name__)

PRODUCTION = "production"
PREVIOUS = "previous"

# version tags
TAG_CONTENT_HASH = "content_hash"
# JSON {"f1": {dataset: primary metric}, "coverage": {dataset: items scored}}; the key stays "f1" so that
# versions registered before the primary metric had a name remain comparable
TAG_METRICS = "gate.metrics"
TAG_PASSED = "gate.passed"
TAG_REASONS = "gate.reasons"
TAG_REPLACED = "gate.replaced"  # the production version this one replaced when it was promoted
TAG_ROLLED_BACK = "gate.rolled_back"

LOCK_TIMEOUT_S = 900.0


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
        sync_zenml_stage(model_name, target, zenml_model_version)
    except BaseException:
        logger.error("moving %s production to v%s failed; restoring aliases %s", model_name, target.version, before)
        for alias, version in before.items():
            _set_alias(client, model_name, alias, version)
        raise


def _promote_locked(client: "MlflowClient", model_name: str, version: "ModelVersion", zenml_model_version: Any = None) -> str | None:
    current = _alias_version(client, model_name, PRODUCTION)
    if current is not None and str(current.version) == str(version.version):
        # already production: the aliases stay as they are; only make sure ZenML agrees
        sync_zenml_stage(model_name, version, zenml_model_version)
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
        for key, value in zenml_link_tags(zenml_model_version).items():
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
