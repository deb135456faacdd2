"""Using another ZenML store (the team stack's) from a checkout leaves the checkout's local stack selection as it
was. A second SQL store stands in for the team's ZenML server here: ZenML resets a repository's active stack
the same way whatever the store (tests/test_team_stack.py does it against the real server)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli, zenml_repository

pytestmark = pytest.mark.slow

STACK_ID = "from zenml.client import Client; print(Client().active_stack_model.id)"


@pytest.fixture()
def stores(tmp_path: Path, zenml_env: dict[str, str]) -> dict:
    """A checkout with its local stack selected, and a 'team' store (another database) with a stack of its own."""
    checkout = zenml_repository(tmp_path / "checkout")
    local = {**zenml_env, "ZENML_REPOSITORY_PATH": str(checkout), "ZENML_CONFIG_PATH": str(tmp_path / "local")}
    assert run_cli(["distill-ner", "stack"], local).returncode == 0
    team_admin = {
        **zenml_env,
        "ZENML_REPOSITORY_PATH": str(zenml_repository(tmp_path / "admin")),
        "ZENML_CONFIG_PATH": str(tmp_path / "team-admin"),
        "ZENML_STORE_URL": f"sqlite:///{tmp_path / 'team.db'}",
    }
    assert run_cli(["distill-ner", "stack"], team_admin).returncode == 0
    done = run_cli([sys.executable, "-c", STACK_ID], team_admin)
    assert done.returncode == 0, done.stderr[-2000:]
    state = {"zenml": {"url": team_admin["ZENML_STORE_URL"]}, "stack_id": done.stdout.split()[-1], "dir": str(tmp_path)}
    return {"checkout": checkout, "local": local, "state": state, "tmp": tmp_path}


def team_client(stores: dict, isolated: bool) -> dict[str, str]:
    from distill_ner import team_stack

    # the user's own settings: the local global config (stores["local"]'s ZENML_CONFIG_PATH, never the real
    # ~/.config/zenml, which the non-isolated client would rewrite) and the checkout
    env = dict(stores["local"])
    if isolated:  # what `eval "$(distill-ner team-stack env)"` exports
        env.update(team_stack.client_env(stores["state"], client_dir=stores["tmp"] / "client", source_root=ROOT))
    else:  # only the server and the stack, as the team stack's clients were told before
        env.update(ZENML_STORE_URL=stores["state"]["zenml"]["url"], ZENML_ACTIVE_STACK_ID=stores["state"]["stack_id"])
    return env


def test_team_client_leaves_the_checkouts_local_selection_as_it_was(stores):
    selection = stores["checkout"] / ".zen/config.yaml"
    before = selection.read_bytes()
    local_uri = run_cli(["distill-ner", "mlflow-uri"], stores["local"], cwd=stores["checkout"])
    assert local_uri.returncode == 0, local_uri.stderr[-2000:]

    env = team_client(stores, isolated=True)
    on_team = run_cli([sys.executable, "-c", STACK_ID], env, cwd=stores["checkout"])
    assert on_team.returncode == 0, on_team.stderr[-2000:]
    assert on_team.stdout.split()[-1] == stores["state"]["stack_id"]  # the team stack is the one in use
    assert "Resetting the active stack" not in on_team.stdout + on_team.stderr
    assert selection.read_bytes() == before
    # switched back (the variables unset): the local stack and its MLflow store, as before
    again = run_cli(["distill-ner", "mlflow-uri"], stores["local"], cwd=stores["checkout"])
    assert again.returncode == 0 and again.stdout == local_uri.stdout, again.stdout + again.stderr[-2000:]


def test_without_the_client_folders_zenml_resets_the_checkouts_selection(stores):
    """The defect `client_env`'s extra variables avoid: with only the server URL and the stack id exported,
    ZenML rewrites the checkout's `.zen/config.yaml` to the other store's `default` stack."""
    selection = stores["checkout"] / ".zen/config.yaml"
    before = selection.read_bytes()
    done = run_cli([sys.executable, "-c", STACK_ID], team_client(stores, isolated=False), cwd=stores["checkout"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert selection.read_bytes() != before


def test_team_stack_env_command_prints_the_switch_and_its_undo(tmp_path: Path, zenml_env: dict[str, str]):
    import json
    import shlex

    from distill_ner import team_stack

    missing = run_cli(["distill-ner", "team-stack", "env", "--state-dir", str(tmp_path)], zenml_env)
    assert missing.returncode != 0 and f"no running team stack recorded in {tmp_path}" in missing.stderr
    state = {"status": "up", "dir": str(tmp_path), "zenml": {"url": "http://127.0.0.1:8237"}, "stack_id": "abc"}
    (tmp_path / team_stack.STATE_FILE).write_text(json.dumps(state))
    done = run_cli(["distill-ner", "team-stack", "env", "--state-dir", str(tmp_path)], zenml_env)
    assert done.returncode == 0, done.stderr[-2000:]
    words = shlex.split(done.stdout.strip())
    assert words[0] == "export"
    exported = dict(word.split("=", 1) for word in words[1:])
    assert set(exported) == set(team_stack.CLIENT_ENV_KEYS)
    assert exported["ZENML_STORE_URL"] == "http://127.0.0.1:8237" and exported["ZENML_ACTIVE_STACK_ID"] == "abc"
    assert Path(exported["ZENML_REPOSITORY_PATH"], ".zen").is_dir()
    assert exported["ZENML_CUSTOM_SOURCE_ROOT"] == str(ROOT)
    undo = run_cli(["distill-ner", "team-stack", "env", "--unset"], zenml_env)
    assert undo.stdout.split() == ["unset", *team_stack.CLIENT_ENV_KEYS]
