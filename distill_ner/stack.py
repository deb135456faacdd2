"""The ZenML stack distill-ner runs on: local orchestrator and artifact store, MLflow tracker and registry.

`ensure_stack` is idempotent: rerunning it finds what exists and registers only what is missing.
"""

from __future__ import annotations

STACK_NAME = "distill-ner"
TRACKER_NAME = "mlflow_tracker"
REGISTRY_NAME = "mlflow_registry"


def ensure_stack(stack_name: str = STACK_NAME, tracking_uri: str | None = None) -> str:
    """Register (if missing) and activate the stack; returns the MLflow tracking URI it uses."""
    from zenml.client import Client
    from zenml.enums import StackComponentType

    client = Client()
    tracker_config = {"tracking_uri": tracking_uri} if tracking_uri else {}
    wanted = {
        StackComponentType.EXPERIMENT_TRACKER: (TRACKER_NAME, tracker_config),
        StackComponentType.MODEL_REGISTRY: (REGISTRY_NAME, {}),
    }
    for kind, (name, configuration) in wanted.items():
        try:
            client.get_stack_component(kind, name)
        except KeyError:
            client.create_stack_component(name=name, flavor="mlflow", component_type=kind, configuration=configuration)
    try:
        client.get_stack(stack_name)
    except KeyError:
        client.create_stack(
            name=stack_name,
            components={
                StackComponentType.ORCHESTRATOR: "default",
                StackComponentType.ARTIFACT_STORE: "default",
                StackComponentType.EXPERIMENT_TRACKER: TRACKER_NAME,
                StackComponentType.MODEL_REGISTRY: REGISTRY_NAME,
            },
        )
    client.activate_stack(stack_name)
    return tracking_uri_of_active_stack()


def require_tracking_stack() -> None:
    """Refuse to start a pipeline on a stack without an MLflow tracker and registry, before any step runs:
    on such a stack (ZenML's `default`, or a selection reset to it) the steps would track into a fresh
    `mlflow.db`/`mlruns` in the working directory and register models where no command looks for them."""
    from zenml.client import Client
    from zenml.enums import StackComponentType

    from distill_ner.errors import InputError

    stack = Client().active_stack_model
    missing = [
        what
        for what, kind in (
            ("MLflow experiment tracker", StackComponentType.EXPERIMENT_TRACKER),
            ("MLflow model registry", StackComponentType.MODEL_REGISTRY),
        )
        if not any(c.flavor_name == "mlflow" for c in stack.components.get(kind, []))
    ]
    if missing:
        raise InputError(
            f"the active ZenML stack '{stack.name}' has no {' and no '.join(missing)}, so nothing was run: select "
            "the project's stack with `distill-ner setup` (local), or use the team stack with "
            '`eval "$(distill-ner team-stack env)"` (docs/remote_stack.md)'
        )


def tracking_uri_of_active_stack() -> str:
    from zenml.client import Client

    tracker = Client().active_stack.experiment_tracker
    if tracker is None:
        raise RuntimeError("the active ZenML stack has no experiment tracker; run `distill-ner setup` first")
    return tracker.get_tracking_uri()


def configure_mlflow_from_active_stack() -> str:
    """Point MLflow at the active stack's tracker, with its credentials (resolved from ZenML secrets into
    this process's environment, where MLflow and its subprocesses read them); returns the tracking URI."""
    from zenml.client import Client

    tracker = Client().active_stack.experiment_tracker
    if tracker is None:
        raise RuntimeError("the active ZenML stack has no experiment tracker; run `distill-ner setup` first")
    configure = getattr(tracker, "configure_mlflow", None)
    if configure is not None:
        configure()
    return tracker.get_tracking_uri()
