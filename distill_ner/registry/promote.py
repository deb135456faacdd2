"""Moving `production` in the MLflow registry: aliases, the promotion lease, promote and rollback.

State lives in the MLflow model registry (MLflow 3 aliases, not the deprecated stages):

- alias `production` names the version that serves; alias `previous` the one it replaced;
- each version carries its evaluation as tags (`gate.metrics` as JSON for the gate, plus readable
  `avg_f1`, `f1.<benchmark>`, `coverage.<benchmark>`), the content hash of its model folder, the run
  that logged it, the training record, and the ZenML model version it came from (`zenml.model_version_id`);
- the ZenML Model Control Plane mirrors `production` as a stage on the linked ZenML model version.

Every move of `production` (gated promotion, manual promotion, rollback) runs under a promotion lease
kept in the registry itself, so it holds across machines that share nothing but the tracking server:
the lease is a registered model `<name>.promotion-lease`, and creating a registered model is atomic
in every MLflow backend (a unique name), so exactly one process holds it. Inside the lease the
registry is re-read, the gate decided against the production of that moment, and the aliases written
then read back (a move that does not read back as written is undone and raised). A lease whose holder
died is broken once it has expired (LEASE_TTL_S, plus CLOCK_SKEW_S for clocks that disagree); a holder
never starts a move with less than CLOCK_SKEW_S left, so a broken lease never has a writer.
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
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

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
# A promotion holds the lease for seconds (registry reads and writes, no model copy); a lease older than
# this belongs to a holder that died and may be broken.
LEASE_TTL_S = 120.0
CLOCK_SKEW_S = 15.0
LEASE_SUFFIX = ".promotion-lease"
TAG_LEASE_HOLDER = "lease.holder"
TAG_LEASE_EXPIRES = "lease.expires"  # unix time, seconds

# Called inside the lease between reading production and moving it, with (model name, the production
# version read): tests use it to widen the window in which an unguarded promotion would race.
before_move: Callable[[str, str | None], None] | None = None


def lease_name(model_name: str) -> str:
    return f"{model_name}{LEASE_SUFFIX}"


class LeaseExpired(RuntimeError):
    """The promotion lease ran out before the move: another process may hold it now; nothing was moved."""


class PromotionLease:
    """Mutual exclusion for moves of `production`, kept in the MLflow registry (see the module docstring)."""

    def __init__(self, client: "MlflowClient", model_name: str, ttl: float = LEASE_TTL_S) -> None:
        self.client = client
        self.model_name = model_name
        self.name = lease_name(model_name)
        self.ttl = ttl
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self.expires = 0.0

    def acquire(self, timeout: float = LOCK_TIMEOUT_S) -> None:
        from mlflow.exceptions import MlflowException

        deadline = time.monotonic() + timeout
        while True:
            expires = time.time() + self.ttl
            try:
                self.client.create_registered_model(
                    self.name,
                    tags={TAG_LEASE_HOLDER: self.holder, TAG_LEASE_EXPIRES: f"{expires:.3f}"},
                    description=f"promotion lease of {self.model_name}: exists only while a promotion runs",
                )
                self.expires = expires
                return
            except MlflowException as exc:
                if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                    raise
            current = self._read()
            if current is not None and time.time() > current[1] + CLOCK_SKEW_S:
                self._break(current[0])
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"another promotion of {self.model_name!r} holds the lease {self.name!r}"
                    f" ({current[0] if current else '?'}) for more than {timeout:.0f} s"
                )
            time.sleep(random.uniform(0.05, 0.25))

    def _read(self) -> tuple[str, float] | None:
        """(holder, expiry) of the lease as it is now, None when nobody holds it."""
        from mlflow.exceptions import MlflowException

        try:
            model = self.client.get_registered_model(self.name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        tags = model.tags or {}
        expires = float(tags.get(TAG_LEASE_EXPIRES) or model.creation_timestamp / 1000 + self.ttl)
        return tags.get(TAG_LEASE_HOLDER, ""), expires

    def _break(self, stale_holder: str) -> None:
        """Remove an expired lease. Only the process that creates the marker for this stale holder may:
        two breakers must not both delete, the second one a fresh lease taken meanwhile."""
        from mlflow.exceptions import MlflowException

        marker = f"{self.name}.broken.{hashlib.sha256(stale_holder.encode()).hexdigest()[:16]}"
        try:
            self.client.create_registered_model(marker, description=f"breaking the expired lease of {stale_holder}")
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_ALREADY_EXISTS":
                return  # another process is breaking it
            raise
        try:
            current = self._read()
            if current is not None and current[0] == stale_holder:
                logger.warning("%s: breaking the promotion lease of %s, expired", self.model_name, stale_holder)
                self.client.delete_registered_model(self.name)
        finally:
            self.client.delete_registered_model(marker)

    def check(self) -> None:
        """Raise LeaseExpired unless this process may still write (checked before every move)."""
        if time.time() > self.expires - CLOCK_SKEW_S:
            raise LeaseExpired(f"the promotion lease of {self.model_name!r} ran out before the move; nothing was moved")

    def release(self) -> None:
        """Delete the lease while it is surely still ours; an expired one is left for a breaker."""
        if time.time() > self.expires - CLOCK_SKEW_S:
            logger.warning(
                "%s: promotion lease expired before release; left for the next promotion to break", self.model_name
            )
            return
        current = self._read()
        if current is not None and current[0] == self.holder:
            self.client.delete_registered_model(self.name)


@contextmanager
def promotion_lock(model_name: str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[PromotionLease]:
    """Hold the promotion lease of `model_name` (in the active registry) for the block."""
    lease = PromotionLease(_client(), model_name)
    lease.acquire(timeout)
    try:
        yield lease
    finally:
        lease.release()


def call_before_move(model_name: str, production: "ModelVersion | None") -> None:
    """Run the `before_move` hook, if set, with the production version just read (under the lease)."""
    if before_move is not None:
        before_move(model_name, str(production.version) if production is not None else None)


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
    lease: PromotionLease | None = None,
) -> None:
    """Aliases first, read back, ZenML stage last; any failure puts the aliases back as they were.

    Call under the lease. A read-back that differs from what was written means someone moved the
    aliases without the lease: that is raised and left as found (restoring could undo their move)."""
    if lease is not None:
        lease.check()
    aliases = _aliases(client, model_name)
    before = {alias: aliases.get(alias) for alias in (PRODUCTION, PREVIOUS)}
    try:
        _set_alias(client, model_name, PRODUCTION, target.version)
        _set_alias(client, model_name, PREVIOUS, new_previous)
        written = {PRODUCTION: str(target.version), PREVIOUS: str(new_previous) if new_previous is not None else None}
        now = _aliases(client, model_name)
        if {alias: now.get(alias) for alias in written} != written:
            raise AliasesMovedMeanwhile(
                f"{model_name}: aliases read back as {now} after writing {written}: moved by a writer without the lease"
            )
        sync_zenml_stage(model_name, target, zenml_model_version)
    except AliasesMovedMeanwhile:
        raise
    except BaseException:
        logger.error("moving %s production to v%s failed; restoring aliases %s", model_name, target.version, before)
        for alias, version in before.items():
            _set_alias(client, model_name, alias, version)
        raise


class AliasesMovedMeanwhile(RuntimeError):
    """The aliases did not read back as written: something moved them without the promotion lease."""


def _promote_locked(
    client: "MlflowClient",
    model_name: str,
    version: "ModelVersion",
    zenml_model_version: Any = None,
    lease: PromotionLease | None = None,
) -> str | None:
    current = _alias_version(client, model_name, PRODUCTION)
    if current is not None and str(current.version) == str(version.version):
        # already production: the aliases stay as they are; only make sure ZenML agrees
        sync_zenml_stage(model_name, version, zenml_model_version)
        return str(current.version)
    before = str(current.version) if current is not None else None
    # with no production at all (alias removed by hand), `previous` stays where it was
    new_previous = before if before is not None else _alias_or_none(client, model_name, PREVIOUS)
    _move_production(client, model_name, version, new_previous, zenml_model_version, lease)
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
    with promotion_lock(model_name) as lease:
        target = client.get_model_version(model_name, str(version))
        replaced = _promote_locked(client, model_name, target, zenml_model_version, lease)
        # an explicit ZenML version becomes the version's link, so a later rollback finds the same one
        for key, value in zenml_link_tags(zenml_model_version).items():
            client.set_model_version_tag(model_name, target.version, key, value)
        return replaced


def rollback(model_name: str) -> str:
    """production <- previous; previous <- what the restored version had replaced. Returns the new production."""
    from mlflow.exceptions import MlflowException

    client = _client()
    with promotion_lock(model_name) as lease:
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
        _move_production(client, model_name, previous, older, lease=lease)
        if current is not None:
            client.set_model_version_tag(model_name, current, TAG_ROLLED_BACK, time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        return str(previous.version)


def production_version(model_name: str) -> str | None:
    return _alias_or_none(_client(), model_name, PRODUCTION)
