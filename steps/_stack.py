"""Names of the active stack's components, so that steps name no component themselves."""

from __future__ import annotations


def experiment_tracker_name() -> str | None:
    from zenml.client import Client

    tracker = Client().active_stack.experiment_tracker
    return tracker.name if tracker else None
