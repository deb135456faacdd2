"""Check a `models:/` reference against the registry before anything loads it, with an error that lists
what exists (registered names, a model's aliases and versions) instead of MLflow's traceback."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient


class ModelNotFoundError(LookupError):
    pass


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None] | None:
    """(name, alias, version) of `models:/name@alias` or `models:/name/version`; None for other URIs."""
    if not uri.startswith("models:/"):
        return None
    ref = uri[len("models:/") :].strip("/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, alias, None
    name, _, version = ref.partition("/")
    return name, None, version or None


def _registered_names(client: "MlflowClient") -> list[str]:
    return sorted(m.name for m in client.search_registered_models(max_results=1000))


def check_registered(client: "MlflowClient", name: str, alias: str | None = None, version: str | None = None) -> None:
    """Raise ModelNotFoundError (one line, with what exists and how to fix it) unless the registered model,
    and its alias or version when given, exist."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        names = _registered_names(client)
        raise ModelNotFoundError(
            f"no registered model {name!r}; registered: {', '.join(names) or 'none (run the pipeline first: make demo)'}"
        ) from None
    versions = sorted((str(v.version) for v in client.search_model_versions(f"name = '{name}'")), key=int)
    if alias is not None and alias not in model.aliases:
        aliases = ", ".join(f"{a} -> v{v}" for a, v in sorted(model.aliases.items())) or "none"
        raise ModelNotFoundError(
            f"registered model {name!r} has no alias {alias!r}; its aliases: {aliases}; versions: "
            f"{', '.join(versions) or 'none'} (set one with `distill-ner promote --model-name {name} --version N`)"
        )
    if version is not None and version != "latest" and version not in versions:
        raise ModelNotFoundError(
            f"registered model {name!r} has no version {version!r}; its versions: {', '.join(versions) or 'none'}"
        )


def check_model_uri(client: "MlflowClient", uri: str) -> None:
    """check_registered for a `models:/` URI; other URIs (runs:/, folders) pass unchecked."""
    parsed = parse_model_uri(uri)
    if parsed is not None:
        check_registered(client, *parsed)
