"""The team stack for real: PostgreSQL, an S3-compatible server, an MLflow tracking server and a ZenML
server on 127.0.0.1 (started once for this module by `team_stack.up`), used by client "machines":
processes with their own HOME and ZenML config that share nothing but the servers.

Skipped (with the reason) where the servers cannot start: no PostgreSQL binaries or no `.[team]` extra.
`.ci/run` installs both.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.teamstack, pytest.mark.slow]

PIPELINE = ["zenml", "pipeline", "run", "pipelines.distill_ner.distill_ner", "-c"]
TEACHER_KEY = "sk-team-stack-teacher-5d1e9b7c3a"  # the teacher key variable of every client: never written


def _missing() -> list[str]:
    from distill_ner import team_stack

    return team_stack.missing_requirements()


STARTED: dict[str, BaseException] = {}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    missing = _missing()
    if missing:
        pytest.skip("team stack unavailable: needs " + "; ".join(missing))
    if "error" in STARTED:  # pytest would set a failed module fixture up again for every test
        pytest.fail(f"the team stack did not start: {STARTED['error']}")
    from distill_ner import team_stack

    state_dir = tmp_path_factory.mktemp("team-stack")
    started = time.monotonic()
    try:
        try:
            state = team_stack.up(state_dir)
        except Exception as exc:
            STARTED["error"] = exc
            raise
        print(f"team stack up in {time.monotonic() - started:.0f} s: {state['start_s']}")
        yield state
    finally:
        team_stack.down(state_dir)


def checkout(dest: Path) -> Path:
    """A client's own copy of the project (as a pod's image holds it): the source, the tiny student, a
    `.zen` of its own (where a local stack can be selected), nothing else of this checkout."""
    import shutil

    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if listed.returncode == 0:
        for name in filter(None, listed.stdout.split("\0")):
            if (ROOT / name).is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, dest / name)
    else:  # not a git checkout
        shutil.copytree(
            ROOT,
            dest,
            ignore=shutil.ignore_patterns(".git", ".venv", ".cache", ".zen", "__pycache__"),
            dirs_exist_ok=True,
        )
    (dest / ".zen").mkdir(exist_ok=True)
    from distill_ner.cli import TINY_STUDENT_DIR

    if (ROOT / TINY_STUDENT_DIR).is_dir():
        shutil.copytree(ROOT / TINY_STUDENT_DIR, dest / TINY_STUDENT_DIR)
    return dest


def client(stack: dict, root: Path, name: str) -> dict[str, str]:
    """The environment of one client machine: own HOME, ZenML config and checkout, the servers' addresses,
    no credential. Commands run in its checkout (run() takes it from PYTHONPATH)."""
    from distill_ner import team_stack

    home = root / name
    home.mkdir(parents=True, exist_ok=True)
    repo = checkout(home / "repo")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ZENML_", "AWS_"))}
    env.update(
        # what `eval "$(distill-ner team-stack env)"` exports there
        team_stack.client_env(stack, client_dir=home / "team-client", source_root=repo),
        HOME=str(home),
        ZENML_ANALYTICS_OPT_IN="false",
        ZENML_LOGGING_COLORS_DISABLED="true",
        MLFLOW_DISABLE_TELEMETRY="true",
        PYTHONPATH=str(repo),
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
        OPENAI_API_KEY=TEACHER_KEY,
    )
    return env


def run(args: list[str], env: dict[str, str], timeout: int = 900, **kw) -> subprocess.CompletedProcess:
    bindir = Path(sys.executable).parent
    exe = str(bindir / args[0]) if (bindir / args[0]).exists() else args[0]
    return subprocess.run(
        [exe, *args[1:]], cwd=env["PYTHONPATH"], env=env, capture_output=True, text=True, timeout=timeout, **kw
    )


@pytest.fixture(scope="module")
def admin(stack: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """What the test itself reads from the servers: credentials from the ZenML secrets, clients for each."""
    env = client(stack, tmp_path_factory.mktemp("admin"), "admin")
    code = textwrap.dedent(
        """
        import json
        from zenml.client import Client
        from distill_ner import team_stack as t
        print(json.dumps({name: Client().get_secret(name).secret_values for name in (t.S3_SECRET, t.DB_SECRET, t.MLFLOW_SECRET)}))
        """
    )
    done = run([sys.executable, "-c", code], env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    secrets = json.loads(done.stdout.strip().splitlines()[-1])
    return {"env": env, "secrets": secrets}


def bucket_keys(stack: dict, admin: dict) -> list[str]:
    from distill_ner import team_stack

    s3 = admin["secrets"][team_stack.S3_SECRET]
    client = team_stack.s3_client(stack["s3"]["url"], s3["aws_access_key_id"], s3["aws_secret_access_key"])
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=stack["s3"]["bucket"]):
        keys += [obj["Key"] for obj in page.get("Contents", [])]
    return keys


def bucket_bytes(stack: dict, admin: dict, key: str) -> bytes:
    from distill_ner import team_stack

    s3 = admin["secrets"][team_stack.S3_SECRET]
    client = team_stack.s3_client(stack["s3"]["url"], s3["aws_access_key_id"], s3["aws_secret_access_key"])
    return client.get_object(Bucket=stack["s3"]["bucket"], Key=key)["Body"].read()


def sql(stack: dict, admin: dict, query: str) -> list[tuple]:
    import psycopg2

    from distill_ner import team_stack

    db = admin["secrets"][team_stack.DB_SECRET]
    conn = psycopg2.connect(
        host="127.0.0.1",
        port=stack["postgres"]["port"],
        user=db["username"],
        password=db["password"],
        dbname=team_stack.DB_NAME,
    )
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            return cur.fetchall()
    finally:
        conn.close()


def mlflow_env(stack: dict, admin: dict) -> dict[str, str]:
    from distill_ner import team_stack

    m = admin["secrets"][team_stack.MLFLOW_SECRET]
    return {
        "MLFLOW_TRACKING_URI": stack["mlflow"]["url"],
        "MLFLOW_TRACKING_USERNAME": m["username"],
        "MLFLOW_TRACKING_PASSWORD": m["password"],
    }


# --------------------------------------------------------------------------------- the pipeline, twice

RUNS: dict[str, subprocess.CompletedProcess] = {}


def test_two_clients_run_the_smoke_pipeline_on_the_team_stack(stack, admin, tiny_student, tmp_path_factory):
    import yaml

    from distill_ner import team_stack

    root = tmp_path_factory.mktemp("clients")
    # B trains with another seed: the data steps come from A's run through the server's cache and the
    # bucket, then B trains, evaluates and registers a second model itself
    raw = yaml.safe_load((ROOT / "configs/smoke.yaml").read_text())
    raw["parameters"]["config"]["train"]["seed"] = 1
    reseeded = root / "smoke_seed1.yaml"
    reseeded.write_text(yaml.safe_dump(raw))
    for name, config in (("A", "configs/smoke.yaml"), ("B", str(reseeded))):
        env = client(stack, root, name)
        repo = Path(env["PYTHONPATH"])
        if name == "A":
            # A's checkout has its local stack selected (its own local ZenML store), as after `make setup`
            local = {k: v for k, v in env.items() if k not in team_stack.CLIENT_ENV_KEYS}
            local["ZENML_CONFIG_PATH"] = str(Path(env["HOME"]) / "zenml-local")
            selected = run(["distill-ner", "stack"], local, timeout=300)
            assert selected.returncode == 0, selected.stderr[-3000:]
            local_selection = (repo / ".zen/config.yaml").read_bytes()
        done = run(PIPELINE + [config], env, timeout=900)
        RUNS[name] = done
        assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
        if name == "A":
            # the team run left the checkout's local selection as it was: local commands still find the local
            # stack's MLflow store, not ZenML's `default` stack and a fresh mlflow.db in the checkout
            assert (repo / ".zen/config.yaml").read_bytes() == local_selection
            uri = run(["distill-ner", "mlflow-uri"], local, timeout=300)
            assert uri.returncode == 0 and "zenml-local" in uri.stdout, uri.stdout + uri.stderr[-3000:]
            assert not (repo / "mlflow.db").exists() and not (repo / "mlruns").exists()
        # nothing of the run stayed on the client machine: no model file, no artifact under its folders
        kept = [
            p
            for p in Path(env["HOME"]).rglob("*")
            if p.is_file() and p.suffix in (".safetensors", ".bin", ".gz", ".tar") and repo not in p.parents
        ]
        kept += [
            p
            for p in repo.rglob("*")
            if p.is_file() and p.suffix in (".safetensors", ".gz", ".tar") and ".cache/models" not in str(p)
        ]
        assert not kept, kept

    # both runs are in the ZenML server
    code = textwrap.dedent(
        """
        import json
        from zenml.client import Client
        runs = Client().list_pipeline_runs(pipeline="distill_ner", size=50, sort_by="asc:created").items
        print(json.dumps([[r.name, str(r.status), r.stack.name if r.stack else None] for r in runs]))
        """
    )
    done = run([sys.executable, "-c", code], admin["env"], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(runs) == 2 and all(
        status.lower().endswith("completed") and s == stack["stack"] for _, status, s in runs
    ), runs

    # ... in MLflow's PostgreSQL store: a training run with its loss per client, two registered versions
    trained = sql(stack, admin, "SELECT DISTINCT run_uuid FROM metrics WHERE key = 'train/loss'")
    assert len(trained) == 2
    versions = sql(
        stack, admin, "SELECT version, source FROM model_versions WHERE name = 'distill-ner-smoke' ORDER BY version"
    )
    assert [v for v, _ in versions] == [1, 2], versions

    # ... and their files in the object store: ZenML's artifacts, the registered models' weights
    keys = bucket_keys(stack, admin)
    assert any(k.startswith("zenml/") and "student_model" in k for k in keys), keys[:50]
    assert sum(k.startswith("mlflow/") and k.endswith(".safetensors") for k in keys) >= 2, [
        k for k in keys if k.startswith("mlflow/")
    ][:50]

    import mlflow

    for key, value in mlflow_env(stack, admin).items():
        os.environ[key] = value
    try:
        mc = mlflow.MlflowClient(stack["mlflow"]["url"])
        for version in ("1", "2"):
            uri = mc.get_model_version_download_uri("distill-ner-smoke", version)
            assert uri.startswith("mlflow-artifacts:/"), uri  # served by the tracking server from the bucket
            prefix = "mlflow/" + uri.split(":/", 1)[1].lstrip("/")
            assert any(k.startswith(prefix) for k in keys), (prefix, keys[:20])
        assert str(mc.get_model_version_by_alias("distill-ner-smoke", "production").version) in ("1", "2")
    finally:
        for key in mlflow_env(stack, admin):
            os.environ.pop(key, None)


def test_third_client_predicts_and_serves_the_production_model(stack, admin, tmp_path_factory):
    if not RUNS:
        pytest.skip("needs the pipeline runs of the test before")
    env = client(stack, tmp_path_factory.mktemp("third"), "C")
    done = run(
        [
            "distill-ner",
            "predict",
            "--model",
            "models:/distill-ner-smoke@production",
            "--types",
            "person,location",
            "--grouped",
            "Marie Curie was born in Warsaw.",
        ],
        env,
        timeout=600,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    row = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["text"] == "Marie Curie was born in Warsaw." and set(row["entities"]) == {"person", "location"}

    from distill_ner.team_stack import free_port

    port = free_port()
    log = open(Path(env["HOME"]) / "serve.log", "w")
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "distill-ner"),
            "serve",
            "--model",
            "models:/distill-ner-smoke@production",
            "--port",
            str(port),
        ],
        cwd=env["PYTHONPATH"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        body = json.dumps(
            {
                "inputs": [{"text": "Marie Curie was born in Warsaw.", "types": "person"}],
                "params": {"output": "grouped"},
            }
        ).encode()
        while True:
            assert server.poll() is None, (Path(env["HOME"]) / "serve.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "mlflow models serve never answered"
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(request, timeout=30) as response:
                    answer = json.loads(response.read())
                break
            except OSError:
                time.sleep(1)
        (row,) = answer["predictions"]
        assert list(row["entities"]) == ["person"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        log.close()


# ------------------------------------------------------------------------- kill on A, resume on B

TRAINER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import torch
    from transformers import TrainerCallback
    from zenml.client import Client
    from distill_ner.training.checkpoint_store import train_resumable
    from distill_ner.config import TrainConfig
    from distill_ner.records import SFTDataset

    torch.set_num_threads(1)
    sft_path, cfg_path, student, out, stall_at = sys.argv[1:6]

    class Stall(TrainerCallback):
        # the checkpoint before this step is mirrored and this step done: work the resumed run must redo
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == int(stall_at):
                print("STALLED", flush=True)
                time.sleep(600)

    store = Client().active_stack.artifact_store
    result = train_resumable(
        SFTDataset.model_validate_json(Path(sft_path).read_text()), student,
        TrainConfig.model_validate_json(Path(cfg_path).read_text()), Path(out), store, store.path,
        log_to_mlflow=False, callbacks=[Stall()] if int(stall_at) > 0 else [],
    )
    print("RESULT " + json.dumps({"metrics": result.metrics, "history": result.history}), flush=True)
    """
)


def test_train_killed_on_one_client_resumes_on_another(stack, admin, tiny_student, tmp_path_factory):
    import torch
    from safetensors.torch import load_file

    from distill_ner.training import train as training
    from distill_ner.training.checkpoints import FINGERPRINT_FILE, run_key
    from tests.test_training import lora_config, synthetic_sft

    root = tmp_path_factory.mktemp("resume")
    vocab = json.loads((tiny_student / "config.json").read_text())["vocab_size"]
    data = synthetic_sft(vocab, n=24)
    cfg = lora_config(
        max_steps=6,
        per_device_batch_size=2,
        gradient_accumulation_steps=2,
        checkpoint_every=2,
        lora_dropout=0.1,
        learning_rate=1e-2,
    )
    shared = root / "inputs"  # the step's inputs, as ZenML would hand them to either machine
    shared.mkdir()
    (shared / "sft.json").write_text(data.model_dump_json())
    (shared / "cfg.json").write_text(cfg.model_dump_json())
    args = [str(shared / "sft.json"), str(shared / "cfg.json"), str(tiny_student)]
    key = run_key(data, str(tiny_student), cfg)
    prefix = f"zenml/checkpoints/{key}/"

    env_a, env_b = client(stack, root, "A"), client(stack, root, "B")
    out_a = Path(env_a["HOME"]) / "out"
    proc = subprocess.Popen(
        [sys.executable, "-c", TRAINER, *args, str(out_a), "5"],
        cwd=env_a["PYTHONPATH"],
        env=env_a,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 600
        for line in proc.stdout:
            if line.startswith("STALLED"):
                break
            assert time.monotonic() < deadline
        else:
            raise AssertionError("client A never reached step 5")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # a real, unclean kill of the whole client
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    mirrored = sorted({k[len(prefix) :].split("/")[0] for k in bucket_keys(stack, admin) if k.startswith(prefix)})
    assert mirrored == ["checkpoint-2", "checkpoint-4", FINGERPRINT_FILE], mirrored
    assert not out_a.exists()

    out_b = Path(env_b["HOME"]) / "out"
    done = run([sys.executable, "-c", TRAINER, *args, str(out_b), "0"], env_b, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    resumed = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert resumed["metrics"]["resumed_from_step"] == 4 and resumed["metrics"]["steps_this_run"] == 2
    assert not [k for k in bucket_keys(stack, admin) if k.startswith(prefix)]  # removed once done

    torch.set_num_threads(1)
    reference = training.train_student(data, str(tiny_student), cfg, root / "uninterrupted", log_to_mlflow=False)
    got = load_file(out_b / "adapter_model.safetensors")
    want = load_file(root / "uninterrupted" / "adapter_model.safetensors")
    assert got.keys() == want.keys() and got
    for name in want:
        assert torch.allclose(got[name], want[name], atol=1e-5), name
    assert [h["step"] for h in resumed["history"]] == [h["step"] for h in reference.history]
    for a, b in zip(resumed["history"], reference.history):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)


# ------------------------------------------------------------------------- concurrent promotions

PROMOTER = textwrap.dedent(
    """
    import json, random, sys, time
    from pathlib import Path
    import importlib

    registry = importlib.import_module("distill_ner.registry.promote")
    from distill_ner.registry import register_and_gate
    from distill_ner.ner.config import NERServing
    from distill_ner.config import GateConfig
    from distill_ner.records import EvalReport, Scores
    from distill_ner.stack import configure_mlflow_from_active_stack

    configure_mlflow_from_active_stack()
    label, model_dir, f1 = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
    delay = {"value": 0.0}
    # widen the window between reading production and moving it: without a guard the two interleave
    registry.before_move = lambda name, production: time.sleep(delay["value"])
    report = EvalReport(model=label, per_dataset={"a": Scores(precision=f1, recall=f1, f1=f1, n_queries=8, n_sentences=4)}, coverage={"a": 4})
    print("READY", flush=True)
    for line in sys.stdin:
        name, pre, window = line.split()
        delay["value"] = float(window)
        time.sleep(float(pre))
        d = register_and_gate(model_dir, report, GateConfig(model_name=name, min_f1=0.2, margin=0.0, max_drop=0.05),
                                       tags={"racer": label}, flavour=NERServing(max_new_tokens=4))
        print("DECISION " + d.model_dump_json(), flush=True)
    """
)


def tagged_line(proc: subprocess.Popen, tag: str) -> str:
    """The next line the racer prints that starts with `tag` (ZenML logs to stdout too), "" at its end."""
    for line in proc.stdout:
        if line.startswith(tag):
            return line[len(tag) :]
    return ""


def test_concurrent_promotions_from_two_clients_leave_the_better_model(stack, admin, tiny_student, tmp_path_factory):
    """20 rounds of two clients registering at once (A=0.6, B=0.7, no production before the round):
    whatever the order, B ends in production, alone, and both versions' gate tags say what happened.
    The candidates are registered in the first round and found again by content after that (as a
    cached re-run does), so each later round is the gate and the move alone; between rounds the
    aliases and gate tags are cleared."""
    import importlib
    import shutil

    import mlflow

    registry = importlib.import_module("distill_ner.registry.promote")

    root = tmp_path_factory.mktemp("promote")
    name = f"race-{uuid.uuid4().hex[:8]}"
    racers = {}
    for label, f1 in (("A", 0.6), ("B", 0.7)):
        env = client(stack, root, label)
        model = Path(env["HOME"]) / "model"
        shutil.copytree(tiny_student, model)
        (model / "training_config.json").write_text(json.dumps({"data_hash": f"data-{label}", "method": "full"}))
        proc = subprocess.Popen(
            [sys.executable, "-c", PROMOTER, label, str(model), str(f1)],
            cwd=env["PYTHONPATH"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(Path(env["HOME"]) / "err.log", "w"),
            text=True,
            start_new_session=True,
        )
        racers[label] = proc
    for key, value in mlflow_env(stack, admin).items():
        os.environ[key] = value
    try:
        for label, proc in racers.items():
            assert tagged_line(proc, "READY"), (root / label / "err.log").read_text()[-3000:]
        rng = random.Random(0)
        mc = mlflow.MlflowClient(stack["mlflow"]["url"])
        orders = []
        for round_ in range(20):
            for proc in racers.values():  # the barrier: both get the go together
                proc.stdin.write(f"{name} {rng.uniform(0, 0.3):.3f} {rng.uniform(0.2, 1.0):.3f}\n")
            for proc in racers.values():
                proc.stdin.flush()
            decisions = {}
            for label, proc in racers.items():
                line = tagged_line(proc, "DECISION ")
                assert line, (root / label / "err.log").read_text()[-3000:]
                decisions[label] = json.loads(line)
            a, b = decisions["A"], decisions["B"]
            aliases = {k: str(v) for k, v in mc.get_registered_model(name).aliases.items()}
            tags = {d["version"]: mc.get_model_version(name, d["version"]).tags for d in (a, b)}
            assert aliases.get("production") == b["version"] and b["promoted"], (round_, aliases, a, b)
            assert tags[b["version"]]["gate.passed"] == "true"
            if a["promoted"]:  # A first (no production), then B against A
                orders.append("A")
                assert a["production_version_before"] is None and b["production_version_before"] == a["version"], (
                    round_,
                    a,
                    b,
                )
                assert (
                    aliases.get("previous") == a["version"]
                    and tags[b["version"]]["gate.production_before"] == a["version"]
                )
            else:  # B first, then A against B: refused
                orders.append("B")
                assert b["production_version_before"] is None and a["production_version_before"] == b["version"], (
                    round_,
                    a,
                    b,
                )
                assert (
                    tags[a["version"]]["gate.passed"] == "false"
                    and tags[a["version"]]["gate.production_before"] == b["version"]
                )
                assert "previous" not in aliases
            assert not mc.search_registered_models(f"name LIKE '{name}.%'"), "a lease was left behind"
            # the next round starts with no production
            for alias in aliases:
                mc.delete_registered_model_alias(name, alias)
            for version, version_tags in tags.items():
                for key in version_tags:
                    if key.startswith("gate.") and key != registry.TAG_METRICS:
                        mc.delete_model_version_tag(name, version, key)
        print("first to promote per round:", "".join(orders))
        assert len(mc.search_model_versions(f"name = '{name}'")) == 2
    finally:
        for key in mlflow_env(stack, admin):
            os.environ.pop(key, None)
        for proc in racers.values():
            proc.stdin.close()
            proc.wait(timeout=120)


# ------------------------------------------------------------------------------- no secret anywhere


# ------------------------------------------------------------------- the Kubeflow spec, task by task

KFP: dict[str, str] = {}


def run_status(admin: dict, job: str) -> list[str]:
    """[pipeline run status, train step status] of the ZenML run of the Kubeflow job `job`."""
    code = textwrap.dedent(
        f"""
        import json
        from zenml.client import Client
        run = Client().get_pipeline_run(Client().list_pipeline_runs(orchestrator_run_id="{job}").items[0].id)
        print(json.dumps([run.status.value, run.steps["train"].status.value]))
        """
    )
    done = run([sys.executable, "-c", code], admin["env"], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(
        done.stdout.strip().splitlines()[-1]
    )  # what the Kubeflow test wrote: the spec, the tasks' logs (scanned for secrets below)


def test_kubeflow_spec_runs_task_by_task_on_the_team_stack(stack, admin, tiny_student, tmp_path_factory):
    """The compiled distill_ner spec of configs/smoke.yaml, run by the spec runner: each task its own process with
    its own HOME, cwd and temp folder, nothing shared but the servers. The train task is killed (SIGKILL, as a
    node lost) after its first mirrored checkpoint; rerunning that task alone, in the same job, resumes there."""
    import yaml

    from distill_ner import kubeflow

    root = tmp_path_factory.mktemp("kubeflow")
    env = client(stack, root, "K")
    repo = Path(env["PYTHONPATH"])
    done = run(
        [
            "distill-ner",
            "kubeflow",
            "stack",
            "--host",
            "https://kubeflow.invalid/pipeline",
            "--registry",
            "r.invalid/t",
        ],
        env,
        timeout=300,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]

    raw = yaml.safe_load((ROOT / "configs/smoke.yaml").read_text())
    config = raw["parameters"]["config"]
    config["train"].update(max_steps=40, checkpoint_every=2, per_device_batch_size=1)  # room to kill it mid-way
    config["gate"]["model_name"] = raw["model"]["name"] = "distill-ner-kfp"
    # as remote_gpu.yaml: ZenML accepts a train step started again in the same run only within its retries
    raw["steps"] = {"train": {"retry": {"max_retries": 2}}}
    config_path = root / "smoke_kfp.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    out = root / "specs"
    done = run(
        [
            "distill-ner",
            "kubeflow",
            "compile",
            "--stack",
            kubeflow.KUBEFLOW_STACK,
            "--image",
            "r.invalid/t/distill-ner:1",
            "--config",
            f"distill_ner={config_path}",
            "--out",
            str(out),
        ],
        env,
        timeout=600,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    spec = out / "distill_ner.yaml"
    KFP["spec"] = spec.read_text()
    assert "{{$.pipeline_job_name}}" in KFP["spec"] and env["ZENML_STORE_URL"] in KFP["spec"]

    # the runner's own environment: the client's servers, none of the client's local ZenML folders
    runner_env = {k: v for k, v in env.items() if k not in ("ZENML_CONFIG_PATH", "ZENML_REPOSITORY_PATH")}
    workdir, job = root / "runs", "distill-ner-kfp-test"
    runner = ["distill-ner", "kubeflow", "run", str(spec), "--workdir", str(workdir), "--job", job]
    before_train = ["--step", "sample_corpus", "--step", "annotate", "--step", "add_negatives", "--step", "build_sft"]
    done = run(runner + before_train, runner_env, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]

    # train, killed after its first checkpoint reached the bucket
    earlier = set(bucket_keys(stack, admin))
    bindir = Path(sys.executable).parent
    proc = subprocess.Popen(
        [str(bindir / "distill-ner"), *runner[1:], "--step", "train"],
        cwd=repo,
        env=runner_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    first = proc.stdout.readline()
    assert first.startswith("train: started, pid "), first
    pid = int(first.rsplit(" ", 1)[1])
    deadline = time.monotonic() + 600
    while not any(
        k.startswith("zenml/checkpoints/") and k.endswith("checkpoint-2/trainer_state.json")
        for k in set(bucket_keys(stack, admin)) - earlier
    ):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)  # the task's process group, as a pod lost with its node
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0 and "exited with -9" in rest, rest[-3000:]
    # no handler ran in the killed process: the runner marked its step run failed, which ZenML, with retries
    # left, records as "retrying" (not "running"): the run waits for the task to start again
    assert "marked step run" in rest, rest[-3000:]
    assert run_status(admin, job) == ["running", "retrying"]

    # the same task rerun in the same job resumes from the mirrored checkpoint, then the rest of the DAG runs
    done = run(runner + ["--step", "train"], runner_env, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    logs = sorted((workdir / job / "train").glob("attempt-*/log.txt"))
    assert len(logs) == 2
    resumed = logs[1].read_text(errors="replace")
    assert "fetched checkpoint-" in resumed and "from s3://" in resumed, resumed[-3000:]  # from the object store
    assert "resuming from" in resumed, resumed[-3000:]
    done = run(runner + ["--step", "evaluate", "--step", "register_and_promote"], runner_env, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    KFP["logs"] = "\n".join(p.read_text(errors="replace") for p in (workdir / job).glob("*/attempt-*/log.txt"))

    # every task ran in its own folders, none in the checkout
    folders = [p.parent for p in (workdir / job).glob("*/attempt-*/log.txt")]
    assert len(folders) == 8 and len({p / "home" for p in folders}) == 8
    assert not (repo / "mlflow.db").exists() and not (repo / "mlruns").exists()

    assert run_status(admin, job) == ["completed", "completed"]
    # the run completed in the ZenML server, on the Kubeflow stack, with every step
    code = textwrap.dedent(
        f"""
        import json
        from zenml.client import Client
        run = Client().list_pipeline_runs(orchestrator_run_id="{job}").items[0]
        run = Client().get_pipeline_run(run.id)
        print(json.dumps([str(run.status), run.stack.name, sorted(run.steps), str(run.steps["train"].status)]))
        """
    )
    done = run([sys.executable, "-c", code], admin["env"], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    status, stack_name, steps, train_status = json.loads(done.stdout.strip().splitlines()[-1])
    assert status.lower().endswith("completed") and stack_name == kubeflow.KUBEFLOW_STACK, (status, stack_name)
    assert len(steps) == 7 and train_status.lower().endswith("completed"), (steps, train_status)

    # its artifacts in the object store, its model in MLflow (PostgreSQL), the gate's decision on it
    keys = bucket_keys(stack, admin)
    assert any(k.startswith("zenml/") and "student_model" in k for k in keys)
    assert not [k for k in keys if k.startswith("zenml/checkpoints/")]  # removed once the training finished
    versions = sql(stack, admin, "SELECT version FROM model_versions WHERE name = 'distill-ner-kfp'")
    assert versions == [(1,)], versions
    aliases = sql(stack, admin, "SELECT alias FROM registered_model_aliases WHERE name = 'distill-ner-kfp'")
    assert aliases == [("production",)], aliases  # min_f1 0: the gate promotes the first version


def test_no_secret_in_mlflow_zenml_artifacts_or_logs(stack, admin):
    if not RUNS:
        pytest.skip("needs the pipeline runs of the test before")
    from distill_ner import team_stack

    s = admin["secrets"]
    secrets = {
        "teacher key": TEACHER_KEY,
        "database password": s[team_stack.DB_SECRET]["password"],
        "S3 key id": s[team_stack.S3_SECRET]["aws_access_key_id"],
        "S3 secret": s[team_stack.S3_SECRET]["aws_secret_access_key"],
        "MLflow password": s[team_stack.MLFLOW_SECRET]["password"],
    }
    # MLflow's store: every param, tag and description
    texts = {
        f"postgres:{table}": "\n".join(" ".join(map(str, row)) for row in sql(stack, admin, f"SELECT * FROM {table}"))
        for table in (
            "params",
            "tags",
            "model_versions",
            "model_version_tags",
            "registered_models",
            "registered_model_tags",
            "experiments",
        )
    }
    # the clients' output (ZenML step logs included)
    texts.update({f"client {name}": done.stdout + done.stderr for name, done in RUNS.items()})
    texts.update({f"kubeflow {name}": text for name, text in KFP.items()})
    leaks = [f"{what} in {where}" for where, text in texts.items() for what, value in secrets.items() if value in text]
    # every object in the bucket: ZenML artifacts and logs, MLflow artifacts and models
    for key in bucket_keys(stack, admin):
        data = bucket_bytes(stack, admin, key)
        leaks += [
            f"{what} in s3://{stack['s3']['bucket']}/{key}" for what, value in secrets.items() if value.encode() in data
        ]
    assert not leaks, leaks
