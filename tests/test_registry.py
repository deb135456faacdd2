"""Registry-gated promotion against real stores: one sqlite MLflow registry per test, one isolated ZenML
store per module (its set-up costs ~10 s), the tiny random Llama as the model being registered."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from distill_ner import registry
from distill_ner.config import GateConfig
from distill_ner.ner.config import NERServing
from distill_ner.records import EvalReport, Scores

# the module itself (the package's `promote` is the function): tests patch its internals
promote_module = importlib.import_module("distill_ner.registry.promote")

ROOT = Path(__file__).resolve().parents[1]
GATE = dict(min_f1=0.2, margin=0.0, max_drop=0.05)


# ------------------------------------------------------------------------------------ the pure gate


def gate(**overrides: float) -> GateConfig:
    return GateConfig(model_name="g", **{**GATE, **overrides})


def test_first_model_only_needs_the_floor() -> None:
    passed, reasons = registry.decide({"a": 0.3, "b": 0.5}, None, gate(), {"a": 10, "b": 10})
    assert passed
    assert reasons[0] == "pass: floor: avg F1 0.4000 >= min_f1 0.2000"
    assert "first model" in reasons[1]
    passed, reasons = registry.decide({"a": 0.1, "b": 0.2}, None, gate(), {"a": 10, "b": 10})
    assert not passed and reasons[0] == "fail: floor: avg F1 0.1500 < min_f1 0.2000"


def test_better_passes_with_margin_and_every_check_stated() -> None:
    passed, reasons = registry.decide(
        {"a": 0.6, "b": 0.5}, {"a": 0.5, "b": 0.5}, gate(margin=0.05), {"a": 4, "b": 4}, {"a": 4, "b": 4}
    )
    assert passed, reasons
    assert "pass: avg F1 0.5500 >= production's 0.5000 + margin 0.0500 = 0.5500" in reasons  # equal counts as >=
    assert any(r.startswith("pass: largest single-benchmark drop 0.0000") for r in reasons)


@pytest.mark.parametrize(
    ("candidate", "coverage", "expected"),
    [
        ({"a": 0.5, "b": 0.5}, {"a": 4, "b": 4}, "fail: avg F1 0.5000 < production's 0.5500 + margin 0.0000 = 0.5500"),
        (
            {"a": 0.9, "b": 0.4},
            {"a": 4, "b": 4},
            "fail: benchmark b: F1 0.4000 dropped 0.1000 from production's 0.5000 (max_drop 0.0500)",
        ),
        ({}, {}, "fail: the evaluation is empty (0 benchmarks scored); an empty evaluation never passes"),
        (
            {"a": 0.9, "b": float("nan")},
            {"a": 4, "b": 4},
            "fail: benchmark b: evaluation failed (F1 nan, 4 sentences evaluated)",
        ),
        (
            {"a": 0.9, "b": 0.9},
            {"a": 4, "b": 0},
            "fail: benchmark b: evaluation failed (F1 0.9, 0 sentences evaluated)",
        ),
        (
            {"a": 0.9, "c": 0.9},
            {"a": 4, "c": 4},
            "fail: benchmark set differs from production's (2 vs 2): missing ['b'], not in production ['c']; not comparable",
        ),
        (
            {"a": 0.9},
            {"a": 4},
            "fail: benchmark set differs from production's (1 vs 2): missing ['b'], not in production []; not comparable",
        ),
        (
            {"a": 0.9, "b": 0.9},
            {"a": 4, "b": 2},
            "fail: coverage differs from production's (b: 2 vs production's 4 sentences); not comparable",
        ),
    ],
    ids=["worse", "one-benchmark-drop", "empty", "nan", "zero-coverage", "other-benchmarks", "subset", "coverage"],
)
def test_gate_failures_name_their_numbers(candidate: dict, coverage: dict, expected: str) -> None:
    passed, reasons = registry.decide(candidate, {"a": 0.6, "b": 0.5}, gate(), coverage, {"a": 4, "b": 4})
    assert not passed
    assert expected in reasons, reasons


def test_production_without_recorded_metrics_is_not_compared() -> None:
    passed, reasons = registry.decide({"a": 0.9}, {}, gate(), {"a": 4}, {})
    assert not passed and reasons[-1].startswith("fail: the production version has no recorded evaluation")


def test_secrets_are_redacted() -> None:
    os.environ["TEST_DISTILL_API_KEY"] = "verysecretvalue123"
    try:
        cleaned = registry.redact(
            {
                "teacher": {"api_key": "abc", "api_key_env": "OPENAI_API_KEY", "max_tokens": 1024, "hf_token": "x"},
                "note": "key verysecretvalue123 leaked",
                "url": "sk-abcdefghijklmnop",
                "tokenizer": "gpt2",
            }
        )
    finally:
        del os.environ["TEST_DISTILL_API_KEY"]
    assert cleaned == {
        "teacher": {"api_key": "<redacted>", "api_key_env": "<redacted>", "max_tokens": 1024, "hf_token": "<redacted>"},
        "note": "<redacted>",
        "url": "<redacted>",
        "tokenizer": "gpt2",
    }


# ------------------------------------------------------------------------------------------- stores


@pytest.fixture(scope="module")
def zenml_store(tmp_path_factory: pytest.TempPathFactory):
    """An isolated ZenML store for this module: config path in a temp dir, and a working directory
    outside the repository (so the project's .zen is neither read nor written)."""
    from zenml.client import Client
    from zenml.config.global_config import GlobalConfiguration

    root = tmp_path_factory.mktemp("zenml")
    saved_env = {k: os.environ.get(k) for k in ("ZENML_CONFIG_PATH", "ZENML_REPOSITORY_PATH")}
    cwd = os.getcwd()
    os.environ["ZENML_CONFIG_PATH"] = str(root / "config")
    os.environ.pop("ZENML_REPOSITORY_PATH", None)
    os.chdir(root)
    GlobalConfiguration._reset_instance()
    Client._reset_instance()
    client = Client()
    client.zen_store  # noqa: B018  creates the store and its default stack once, before any subprocess uses it
    try:
        yield {"client": client, "env": {"ZENML_CONFIG_PATH": str(root / "config")}, "cwd": root}
    finally:
        os.chdir(cwd)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        GlobalConfiguration._reset_instance()
        Client._reset_instance()


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow sqlite store, built once (~5 s) and copied per test (~0 s). Its Default
    experiment keeps artifacts in the template's temp folder: built by MlflowClient, it would point at
    `<working directory>/mlruns`, the repository."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = tmp_path_factory.mktemp("mlflow_template")
    SqlAlchemyStore(f"sqlite:///{folder / 'mlflow.db'}", str(folder / "artifacts"))
    return folder / "mlflow.db"


@pytest.fixture()
def mlflow_store(tmp_path: Path, mlflow_template: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    import mlflow

    db = tmp_path / "mlflow.db"
    shutil.copy(mlflow_template, db)
    uri = f"sqlite:///{db}"
    experiment = f"exp-{uuid.uuid4().hex[:8]}"
    mlflow.MlflowClient(tracking_uri=uri).create_experiment(experiment, artifact_location=str(tmp_path / "artifacts"))
    env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": experiment}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    yield env
    mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from distill_ner.models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


def candidate(tiny_model: Path, dest: Path, tag: str) -> Path:
    """A model folder with its own content (its training record differs), as each training run gives."""
    shutil.copytree(tiny_model, dest)
    record = {
        "data_hash": f"data-{tag}",
        "base_model": str(tiny_model),
        "method": "full",
        "train": {"learning_rate": 1e-3},
        "teacher": {"api_key": "sk-shouldneverleak0123"},
    }
    (dest / "training_config.json").write_text(json.dumps(record))
    return dest


def report(f1: dict[str, float], coverage: dict[str, int] | None = None) -> EvalReport:
    coverage = coverage or {name: 4 for name in f1}
    return EvalReport(
        model="candidate",
        per_dataset={
            k: Scores(precision=v, recall=v, f1=v, n_queries=8, n_sentences=coverage[k]) for k, v in f1.items()
        },
        coverage=coverage,
    )


def zenml_version(name: str, label: str):
    from zenml.client import Client

    client = Client()
    try:
        client.get_model(name)
    except KeyError:
        client.create_model(name)
    return client.create_model_version(model_name_or_id=name, name=label)


def state(name: str) -> dict[str, str | None]:
    """MLflow aliases, the ZenML version each production/previous links to, and ZenML's production version."""
    from mlflow import MlflowClient
    from zenml.client import Client

    client = MlflowClient()
    out: dict[str, str | None] = {}
    for alias in (registry.PRODUCTION, registry.PREVIOUS):
        try:
            mv = client.get_model_version_by_alias(name, alias)
            out[alias] = str(mv.version)  # MLflow 3 gives an int
            out[f"{alias}.zenml"] = mv.tags.get(registry.TAG_ZENML_VERSION_ID)
        except Exception:
            out[alias] = out[f"{alias}.zenml"] = None
    in_production = Client().list_model_versions(model=name, stage="production").items
    assert len(in_production) <= 1, "ZenML shows more than one production version"
    out["zenml.production"] = str(in_production[0].id) if in_production else None
    return out


def register(
    path: Path, f1: dict[str, float], name: str, zmv=None, coverage: dict[str, int] | None = None, **gate_kw: float
):
    return registry.register_and_gate(
        path,
        report(f1, coverage),
        GateConfig(model_name=name, **{**GATE, **gate_kw}),
        tags={"zenml_run": f"run-{path.name}", "teacher": "demo-teacher"},
        zenml_model_version=zmv,
        flavour=NERServing(max_new_tokens=4),
    )


# ------------------------------------------------------------------------------------ the lease


def test_promotion_lease_is_exclusive_and_broken_only_once_expired(mlflow_store) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    first = registry.PromotionLease(client, "leased")
    first.acquire(timeout=5)
    second = registry.PromotionLease(client, "leased")
    with pytest.raises(TimeoutError, match="holds the lease 'leased.promotion-lease'"):
        second.acquire(timeout=0.5)
    # the holder died: its lease expires (written as its holder would have, long ago) and is broken
    client.set_registered_model_tag(
        first.name, promote_module.TAG_LEASE_EXPIRES, f"{time.time() - promote_module.CLOCK_SKEW_S - 1:.3f}"
    )
    second.acquire(timeout=5)
    assert client.get_registered_model(second.name).tags[promote_module.TAG_LEASE_HOLDER] == second.holder
    first.release()  # a late release by the old holder leaves the new lease alone
    assert client.get_registered_model(second.name).tags[promote_module.TAG_LEASE_HOLDER] == second.holder
    second.expires = time.time() + promote_module.CLOCK_SKEW_S / 2  # too little left to start a move
    with pytest.raises(registry.LeaseExpired):
        second.check()
    second.expires = time.time() + promote_module.LEASE_TTL_S
    second.release()
    assert [m.name for m in client.search_registered_models()] == []  # no lease, no breaker marker left


# ------------------------------------------------------------------------------------------ lifecycle


def test_gate_promotes_refuses_and_rolls_back(
    zenml_store, mlflow_store, tiny_model: Path, tmp_path: Path, capsys
) -> None:
    from mlflow import MlflowClient

    from distill_ner import cli

    name = f"ner-{uuid.uuid4().hex[:6]}"
    client = MlflowClient()
    z = {i: zenml_version(name, f"run-{i}") for i in range(1, 7)}

    # 1. first model: the floor only
    d1 = register(candidate(tiny_model, tmp_path / "m1", "1"), {"a": 0.5, "b": 0.5}, name, z[1])
    assert (d1.version, d1.promoted, d1.production_version_before) == ("1", True, None)
    assert state(name) == {
        "production": "1",
        "production.zenml": str(z[1].id),
        "previous": None,
        "previous.zenml": None,
        "zenml.production": str(z[1].id),
    }

    # 2. better: replaces it, the old one is kept as `previous`
    d2 = register(candidate(tiny_model, tmp_path / "m2", "2"), {"a": 0.6, "b": 0.55}, name, z[2])
    assert (d2.version, d2.promoted, d2.production_version_before) == ("2", True, "1")
    assert d2.production_before == {"avg_f1": 0.5, "f1/a": 0.5, "f1/b": 0.5}
    assert state(name) == {
        "production": "2",
        "production.zenml": str(z[2].id),
        "previous": "1",
        "previous.zenml": str(z[1].id),
        "zenml.production": str(z[2].id),
    }

    # 3-6. registered, not promoted, the reason recorded on the version and on its run
    refused = {
        "3": ({"a": 0.55, "b": 0.5}, None, "fail: avg F1 0.5250 < production's 0.5750 + margin 0.0000 = 0.5750"),
        "4": (
            {"a": 0.8, "b": 0.48},
            None,
            "fail: benchmark b: F1 0.4800 dropped 0.0700 from production's 0.5500 (max_drop 0.0500)",
        ),
        "5": (
            {"a": 0.9, "b": 0.9},
            {"a": 4, "b": 0},
            "fail: benchmark b: evaluation failed (F1 0.9, 0 sentences evaluated)",
        ),
        "6": (
            {"a": 0.9, "c": 0.9},
            None,
            "fail: benchmark set differs from production's (2 vs 2): missing ['b'], not in production ['c']; not comparable",
        ),
    }
    for version, (f1, coverage, reason) in refused.items():
        d = register(candidate(tiny_model, tmp_path / f"m{version}", version), f1, name, z[int(version)], coverage)
        assert (d.version, d.promoted) == (version, False)
        assert reason in d.reasons and d.reasons[-1] == f"not promoted: v{version} registered; production stays v2"
        mv = client.get_model_version(name, version)
        assert mv.tags[registry.TAG_PASSED] == "false" and reason in mv.tags[registry.TAG_REASONS].splitlines()
        run = client.get_run(mv.run_id)
        assert run.data.tags[registry.TAG_PASSED] == "false" and reason in run.data.tags[registry.TAG_REASONS]
    assert state(name)["production"] == "2" and state(name)["zenml.production"] == str(z[2].id)
    assert len(client.search_model_versions(f"name = '{name}'")) == 6

    # the version's tags: lineage, evaluation, no secret
    tags = client.get_model_version(name, "2").tags
    assert tags["data_hash"] == "data-2" and tags["teacher"] == "demo-teacher" and tags["zenml_run"] == "run-m2"
    assert tags["f1.a"] == "0.600000" and tags["avg_f1"] == "0.575000" and tags["coverage.b"] == "4"
    assert tags["mlflow.run_id"] == client.get_model_version(name, "2").run_id
    assert "sk-shouldneverleak0123" not in json.dumps(tags) and '"api_key": "<redacted>"' in tags["training_config"]

    # rollback: production <- previous; ZenML follows; nothing further back, so a second one is refused
    cli.main(["rollback", "--model-name", name])
    assert capsys.readouterr().out.strip() == f"{name}: production v2 -> v1"
    assert state(name) == {
        "production": "1",
        "production.zenml": str(z[1].id),
        "previous": None,
        "previous.zenml": None,
        "zenml.production": str(z[1].id),
    }
    assert client.get_model_version(name, "2").tags.get(registry.TAG_ROLLED_BACK)
    with pytest.raises(SystemExit, match="no `previous` version to roll back to"):
        cli.main(["rollback", "--model-name", name])

    # a deliberate promotion (no gate), then two rollbacks walk back through the history
    cli.main(["promote", "--model-name", name, "--version", "3"])
    assert capsys.readouterr().out.strip() == f"{name}: production -> v3 (previous: v1)"
    registry.promote(name, 2)
    assert state(name) == {
        "production": "2",
        "production.zenml": str(z[2].id),
        "previous": "3",
        "previous.zenml": str(z[3].id),
        "zenml.production": str(z[2].id),
    }
    assert registry.rollback(name) == "3" and registry.rollback(name) == "1"
    assert state(name) == {
        "production": "1",
        "production.zenml": str(z[1].id),
        "previous": None,
        "previous.zenml": None,
        "zenml.production": str(z[1].id),
    }
    # 2 replaced 1, then 1 replaced 2: rolling back from 1 to 2 must not leave 1 as `previous`
    registry.promote(name, 2)
    registry.promote(name, 1)
    assert registry.rollback(name) == "2"
    assert state(name) == {
        "production": "2",
        "production.zenml": str(z[2].id),
        "previous": None,
        "previous.zenml": None,
        "zenml.production": str(z[2].id),
    }


def test_same_model_content_reuses_its_version(zenml_store, mlflow_store, tiny_model: Path, tmp_path: Path) -> None:
    """A cached pipeline re-run hands the step the same artifact under another temporary path."""
    import mlflow
    import mlflow.pyfunc
    from mlflow import MlflowClient

    name = f"ner-{uuid.uuid4().hex[:6]}"
    first = candidate(tiny_model, tmp_path / "run1" / "model", "x")
    again = tmp_path / "run2" / "model"
    shutil.copytree(first, again)
    d1 = register(first, {"a": 0.5}, name, zenml_version(name, "r1"))
    z2 = zenml_version(name, "r2")
    d2 = register(again, {"a": 0.5}, name, z2)
    assert (d1.version, d2.version, d2.promoted) == ("1", "1", True)
    assert d2.reasons[0] == "pass: v1 (same model content) is already production"
    # the version keeps the reasons it was promoted for
    assert MlflowClient().get_model_version(name, "1").tags["gate.reasons"] == "\n".join(d1.reasons)
    assert len(MlflowClient().search_model_versions(f"name = '{name}'")) == 1
    # logged once: the second call found the version before copying the model again
    [logged] = mlflow.search_logged_models(output_format="list")
    # its page lists the version registered from it; the version's description lists the gate's checks
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [{"name": name, "version": "1"}]
    assert MlflowClient().get_model_version(name, "1").description == "\n".join(
        ["Gate: promoted to production.", "", *[f"- {r}" for r in d1.reasons]]
    )
    # ZenML now shows the re-run's model version as production
    assert state(name)["zenml.production"] == str(z2.id)
    # a full model folder (no adapter) serves too
    (row,) = mlflow.pyfunc.load_model(f"models:/{name}@production").predict(
        [{"text": "Marie Curie", "types": "person"}], params={"output": "grouped"}
    )
    assert row["text"] == "Marie Curie" and list(row["entities"]) == ["person"]


def test_failed_zenml_write_restores_the_aliases_and_unlinked_versions_archive(
    zenml_store, mlflow_store, tiny_model: Path, tmp_path: Path
) -> None:
    from zenml.client import Client

    name = f"ner-{uuid.uuid4().hex[:6]}"
    z1, z2 = zenml_version(name, "r1"), zenml_version(name, "r2")
    register(candidate(tiny_model, tmp_path / "m1", "1"), {"a": 0.5}, name, z1)
    register(candidate(tiny_model, tmp_path / "m2", "2"), {"a": 0.4}, name, z2)  # worse: registered only
    before = state(name)
    Client().delete_model_version(z2.id)  # the ZenML side of v2 is gone: setting its stage fails for real
    with pytest.raises(KeyError):
        registry.promote(name, 2)
    assert (
        state(name)
        == before
        == {
            "production": "1",
            "production.zenml": str(z1.id),
            "previous": None,
            "previous.zenml": None,
            "zenml.production": str(z1.id),
        }
    )

    # a version registered outside ZenML: once it serves, ZenML shows no production version (z1 archived)
    assert register(candidate(tiny_model, tmp_path / "m3", "3"), {"a": 0.6}, name).promoted
    assert state(name) == {
        "production": "3",
        "production.zenml": None,
        "previous": "1",
        "previous.zenml": str(z1.id),
        "zenml.production": None,
    }
    assert str(Client().get_model_version(name, z1.name).stage) == "archived"


def test_a_move_that_does_not_read_back_is_raised_and_left_alone(
    zenml_store, mlflow_store, tiny_model: Path, tmp_path: Path, monkeypatch
) -> None:
    """A writer without the lease (a person in the MLflow UI) moves `production` between our write and
    the read-back: the promotion fails loudly and does not undo their move."""
    name = f"ner-{uuid.uuid4().hex[:6]}"
    register(candidate(tiny_model, tmp_path / "m1", "1"), {"a": 0.5}, name, zenml_version(name, "r1"))
    register(
        candidate(tiny_model, tmp_path / "m2", "2"), {"a": 0.4}, name, zenml_version(name, "r2")
    )  # registered only
    real = promote_module._set_alias

    def then_someone_else(client, model, alias, version):
        real(client, model, alias, version)
        if alias == registry.PRODUCTION:
            real(client, model, registry.PRODUCTION, "1")  # the unguarded writer puts v1 back

    monkeypatch.setattr(promote_module, "_set_alias", then_someone_else)
    with pytest.raises(registry.AliasesMovedMeanwhile, match="read back"):
        registry.promote(name, 2)
    monkeypatch.undo()
    assert state(name)["production"] == "1"


RACER = """
import importlib, json, sys, time, uuid
from pathlib import Path
from zenml.client import Client
from distill_ner import registry
from distill_ner.config import GateConfig
from distill_ner.ner.config import NERServing
from distill_ner.records import EvalReport

promote_module = importlib.import_module("distill_ner.registry.promote")  # `registry.promote` is the function
args = json.loads(sys.argv[1])
zmv = Client().get_model_version(None, uuid.UUID(args["zenml_version_id"]))


def hold(model_name, production):
    # between reading production and moving it, wait (up to 20 s) until the other racer has read it too:
    # without the promotion guard both then decide against the same production; with it, the other
    # racer cannot read until this one is done, so this one waits out the 20 s and goes on alone
    Path(args["read"]).touch()
    deadline = time.monotonic() + 20
    while not Path(args["other_read"]).exists() and time.monotonic() < deadline:
        time.sleep(0.01)


promote_module.before_move = hold
Path(args["ready"]).touch()
go = Path(args["go"])
while not go.exists():  # both start the registration together
    time.sleep(0.01)
decision = registry.register_and_gate(
    Path(args["model_dir"]), EvalReport.model_validate(args["report"]), GateConfig(**args["gate"]),
    tags={"zenml_run": args["label"]}, zenml_model_version=zmv, flavour=NERServing(max_new_tokens=4),
)
print("DECISION " + decision.model_dump_json())
"""


@pytest.mark.slow
def test_racing_promotions_leave_one_consistent_production(
    zenml_store, mlflow_store, tiny_model: Path, tmp_path: Path
) -> None:
    """Two processes register and gate at once (P=0.5 in production; A=0.6 and B=0.7 both beat P).
    Under the promotion lease each gate is decided against the production of its moment, so B ends in production
    whatever the order, and the loser's decision names the winner as the production it was compared with.
    Each racer holds between reading production and moving it until the other has read it too (or 20 s):
    the interleaving that breaks an unguarded promotion always happens."""
    name = f"ner-{uuid.uuid4().hex[:6]}"
    register(candidate(tiny_model, tmp_path / "p", "p"), {"a": 0.5}, name, zenml_version(name, "p"))
    go = tmp_path / "go"
    env = {**os.environ, **zenml_store["env"], **mlflow_store, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    racers = {}
    for label, f1 in (("A", 0.6), ("B", 0.7)):
        zmv = zenml_version(name, label)
        args = {
            "zenml_version_id": str(zmv.id),
            "go": str(go),
            "ready": str(tmp_path / f"ready-{label}"),
            "label": label,
            "read": str(tmp_path / f"read-{label}"),
            "other_read": str(tmp_path / f"read-{'B' if label == 'A' else 'A'}"),
            "model_dir": str(candidate(tiny_model, tmp_path / label, label)),
            "report": report({"a": f1}).model_dump(mode="json"),
            "gate": {"model_name": name, **GATE},
        }
        proc = subprocess.Popen(
            [sys.executable, "-c", RACER, json.dumps(args)],
            cwd=zenml_store["cwd"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        racers[label] = (proc, zmv)
    deadline = time.monotonic() + 600  # importing takes minutes on a loaded 2-core machine
    while not all((tmp_path / f"ready-{label}").exists() for label in racers):  # both imported and waiting
        assert all(p.poll() is None for p, _ in racers.values()), "a racer died early"
        assert time.monotonic() < deadline, "the racers were not ready in 600 s"
        time.sleep(0.05)
    go.touch()
    decisions = {}
    for label, (proc, _) in racers.items():
        out, err = proc.communicate(timeout=900)  # minutes on a loaded 2-core machine
        assert proc.returncode == 0, err[-3000:]
        decisions[label] = json.loads(next(line for line in out.splitlines() if line.startswith("DECISION "))[9:])
    a, b = decisions["A"], decisions["B"]
    assert b["promoted"]
    if a["promoted"]:  # A went first (against P), then B against A
        assert a["production_version_before"] == "1" and b["production_version_before"] == a["version"]
    else:  # B went first, then A was compared with B, not with P
        assert b["production_version_before"] == "1" and a["production_version_before"] == b["version"]
        assert f"not promoted: v{a['version']} registered; production stays v{b['version']}" in a["reasons"]
    s = state(name)
    assert s["production"] == b["version"] and s["zenml.production"] == s["production.zenml"] == str(racers["B"][1].id)
    assert s["previous"] == (a["version"] if a["promoted"] else "1")
