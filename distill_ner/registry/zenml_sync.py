"""The ZenML Model Control Plane's mirror of the MLflow registry: links between versions, the production
stage, and metadata pointing back to MLflow. MLflow is the source of truth; ZenML follows it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

logger = logging.getLogger(__name__)

TAG_ZENML_VERSION_ID = "zenml.model_version_id"


def zenml_link_tags(zenml_model_version: Any) -> dict[str, str]:
    """The tags that link an MLflow model version to the ZenML model version it came from."""
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


def sync_zenml_stage(model_name: str, version: "ModelVersion", zenml_model_version: Any = None) -> None:
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
            model_name,
            version.version,
            model_name,
            current.number,
        )
        current.set_stage("archived", force=True)
        return
    if link is None:
        from zenml.client import Client

        link = Client().get_model_version(None, linked_id)
    link.set_stage("production", force=True)


def log_zenml_metadata(zenml_model_version: Any, name: str, version: str, passed: bool) -> None:
    """Link back from ZenML to MLflow; a failure here loses a link, never the registration."""
    try:
        from zenml import log_metadata

        log_metadata(
            metadata={"mlflow_model_name": name, "mlflow_model_version": version, "gate_passed": passed},
            model_version_id=zenml_model_version.id,
        )
    except Exception as exc:  # noqa: BLE001
        logger.warning(
            "ZenML metadata not logged on model version %s: %s", getattr(zenml_model_version, "id", "?"), exc
        )
