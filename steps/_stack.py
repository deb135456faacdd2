"""What steps ask of the active stack: its components' names (so that steps name no component themselves), and
its step cache."""

from __future__ import annotations


def experiment_tracker_name() -> str | None:
    from zenml.client import Client

    tracker = Client().active_stack.experiment_tracker
    return tracker.name if tracker else None


def retry_failures_next_run() -> None:
    """Never serve the running step's result from ZenML's cache: a teacher step whose result has failed requests
    runs again next time (the response cache answers the rest), instead of freezing those failures forever."""
    from zenml import get_step_context
    from zenml.client import Client
    from zenml.utils.time_utils import utc_now

    Client().update_step_run(get_step_context().step_run.id, cache_expires_at=utc_now())
