"""The student as an MLflow pyfunc: logged with its base bundled, loaded back, served over HTTP, used by the CLI.

The adapter is a LoRA on the tiny random Llama, trained for a few seconds to answer `["Warsaw"]` to the
location question about one sentence: a served answer that matches proves the adapter and the bundled
base were both loaded (the untrained base answers nothing parsable).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

# one migrated, empty MLflow sqlite file, copied per store (a fixture that belongs in conftest.py)
from test_cli_startup import kill_tree, stop_by_pid_and_check_tree, wait_until_answering
from test_mentions import long_text
from test_registry import mlflow_template  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
TEXT = "Marie Curie was born in Warsaw."


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny base + LoRA adapter (all linear layers) that has memorised one answer; ~3 s on one thread."""
    import torch
    from peft import LoraConfig, get_peft_model

    from distill_ner.models import load_model, load_tokenizer, make_tiny_model
    from distill_ner.ner.conversations import query_prompt_ids

    root = tmp_path_factory.mktemp("adapter")
    base = make_tiny_model(root / "base", [TEXT])
    tokenizer = load_tokenizer(str(base))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only contend with the rest of the machine
    try:
        torch.manual_seed(0)
        model = get_peft_model(
            load_model(str(base)),
            LoraConfig(
                r=8,
                lora_alpha=16,
                task_type="CAUSAL_LM",
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            ),
        )
        prompt = query_prompt_ids(tokenizer, TEXT, "location")
        answer = tokenizer('["Warsaw"]', add_special_tokens=False)["input_ids"] + [
            tokenizer.convert_tokens_to_ids("<|im_end|>")
        ]
        ids, labels = torch.tensor([prompt + answer]), torch.tensor([[-100] * len(prompt) + answer])
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(60):
            model(input_ids=ids, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    # as training.py leaves it: the adapter names its base by path, tokenizer and training record beside it
    model.peft_config["default"].base_model_name_or_path = str(base)
    model.save_pretrained(root / "adapter")
    tokenizer.save_pretrained(root / "adapter")
    (root / "adapter" / "training_config.json").write_text(
        json.dumps({"base_model": str(base), "method": "lora", "data_hash": "d"})
    )
    return root / "adapter"


@pytest.fixture(scope="module")
def store(mlflow_template: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    """One MLflow store for this module (environment and tracking URI set while it runs)."""
    import mlflow

    root = tmp_path_factory.mktemp("mlflow")
    shutil.copy(mlflow_template, root / "mlflow.db")
    uri = f"sqlite:///{root}/mlflow.db"
    mlflow.MlflowClient(tracking_uri=uri).create_experiment("serving", artifact_location=str(root / "artifacts"))
    previous = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_EXPERIMENT_NAME", "serving")
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        mlflow.set_tracking_uri(uri)
        yield uri
    mlflow.set_tracking_uri(previous)


def log(model_dir: Path):
    """The ModelInfo of the folder logged by serving.log_ner_model, in a run of its own."""
    import mlflow

    from distill_ner.ner import serving

    with mlflow.start_run():
        return serving.log_ner_model(model_dir, max_new_tokens=12)


@pytest.fixture(scope="module")
def production(store: str, adapter_dir: Path) -> str:
    """The adapter registered and aliased `production`, as a promotion leaves it: models:/<name>@production."""
    from mlflow import MlflowClient

    info = log(adapter_dir)
    name = f"ner-{uuid.uuid4().hex[:6]}"
    client = MlflowClient()
    client.create_registered_model(name)
    version = client.create_model_version(name, info.model_uri, run_id=info.run_id, model_id=info.model_id)
    client.set_registered_model_alias(name, "production", str(version.version))
    return f"models:/{name}@production"


def test_logged_adapter_is_self_contained_and_answers_like_the_local_model(
    adapter_dir: Path, store: str, tmp_path: Path
) -> None:
    import mlflow
    import pandas as pd

    from distill_ner.ner import serving
    from distill_ner.ner.inference import Predictor

    # a private copy of the adapter and its base, so that the base can be removed after logging
    base = tmp_path / "base"
    shutil.copytree(
        Path(json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]), base
    )
    adapter = tmp_path / "adapter"
    shutil.copytree(adapter_dir, adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": str(base)}))
    local = Predictor(str(adapter), surface_forms=True, max_new_tokens=12).predict([TEXT], ["location", "person"])
    assert local[0]["location"] == ["Warsaw"]
    assert Predictor(str(base), surface_forms=True, max_new_tokens=12).predict([TEXT], ["location"])[0]["location"] != [
        "Warsaw"
    ]

    uri = log(adapter).model_uri
    shutil.rmtree(base)  # the logged model must not need it any more

    downloaded = Path(mlflow.artifacts.download_artifacts(uri))
    bundled = downloaded / "artifacts" / "model"
    assert (bundled / "base" / "model.safetensors").exists()
    # the adapter is logged byte for byte as trained (it still names the original base)
    assert (bundled / "adapter_config.json").read_bytes() == (adapter / "adapter_config.json").read_bytes()
    mlmodel = (downloaded / "MLmodel").read_text()
    assert (
        "torch==" in (downloaded / "requirements.txt").read_text()
        and "+cpu" not in (downloaded / "requirements.txt").read_text()
    )
    assert "signature" in mlmodel and (downloaded / "input_example.json").exists()
    assert (downloaded / "code" / "distill_ner" / "engine" / "engine.py").exists()
    assert not list((downloaded / "code").rglob("__pycache__"))

    model = mlflow.pyfunc.load_model(uri)
    frame = pd.DataFrame([{"text": TEXT, "types": "location, person"}, {"text": TEXT, "types": ["location"]}])
    assert model.predict(frame, params={"output": "grouped"}) == [
        {"text": TEXT, "entities": {"location": local[0]["location"], "person": local[0]["person"]}},
        {"text": TEXT, "entities": {"location": ["Warsaw"]}},
    ]
    # the default: one record per mention, offsets into the text, the student's probability of its answer
    (warsaw,) = serving.predict(uri, [TEXT], "location")[0]["entities"]
    assert {k: warsaw[k] for k in ("text", "type", "start", "end")} == {
        "text": "Warsaw",
        "type": "location",
        "start": 24,
        "end": 30,
    }
    assert TEXT[warsaw["start"] : warsaw["end"]] == "Warsaw" and 0.0 < warsaw["score"] <= 1.0
    assert serving.predict(uri, [TEXT], "location", threshold=min(1.0, warsaw["score"] + 1e-6))[0]["entities"] == []
    with pytest.raises(Exception, match="at least one entity type"):
        model.predict([{"text": TEXT, "types": " , "}])
    with pytest.raises(Exception, match="params.output='table'"):
        model.predict([{"text": TEXT, "types": "location"}], params={"output": "table"})


def test_cli_predict_prints_entities(production: str, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from distill_ner import cli

    uri = production
    cli.main(["predict", "--model", uri, "--types", "person,location", TEXT])
    (row,) = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert row["text"] == TEXT
    assert [(m["text"], m["type"], m["start"], m["end"]) for m in row["entities"] if m["type"] == "location"] == [
        ("Warsaw", "location", 24, 30)
    ]

    # JSONL in, JSONL out; --types fills in where a line has none; --grouped: UniNER's shape
    monkeypatch.setattr(
        sys,
        "stdin",
        io.StringIO(json.dumps({"text": TEXT, "types": ["location"]}) + "\n\n" + json.dumps({"text": "Paris"}) + "\n"),
    )
    cli.main(["predict", "--model", uri, "--types", "person", "--grouped"])
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert rows[0] == {"text": TEXT, "entities": {"location": ["Warsaw"]}}
    assert rows[1]["text"] == "Paris" and list(rows[1]["entities"]) == ["person"]

    # a bad line is named, before the model is loaded
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"text": TEXT}) + "\n" + '{"text": "Paris",\n'))
    with pytest.raises(SystemExit, match=r"predict: stdin line 2: invalid JSON \(Expecting property name"):
        cli.main(["predict", "--model", uri, "--types", "person"])


def test_cli_predict_grounded_by_default_free_on_request(production: str, capsys) -> None:
    """Grounded is the default: the trained answer `["Warsaw"]` is already a span of the text, so it comes out
    as free decoding gives it (grounded greedy = free greedy where the free answer is allowed); every entity
    is a span of its text."""
    from distill_ner import cli

    texts = [TEXT, "Paris is far from Warsaw."]
    outputs = {}
    for flags in (["--free"], []):
        cli.main(["predict", "--model", production, "--types", "person,location", "--grouped", *flags, *texts])
        outputs[bool(flags)] = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert outputs[True][0]["entities"]["location"] == outputs[False][0]["entities"]["location"] == ["Warsaw"]
    for row in outputs[False]:
        assert all(entity in row["text"] for found in row["entities"].values() for entity in found)


def test_wrong_model_name_alias_or_version_lists_what_exists(production: str) -> None:
    """One line that names what is registered, instead of MLflow's traceback."""
    from distill_ner import cli

    name = production.removeprefix("models:/").split("@")[0]
    cases = [
        (
            ["predict", "--model", "models:/no-such-model@production", "--types", "person", TEXT],
            ["no registered model 'no-such-model'; registered: ", name],
        ),
        (
            ["predict", "--model", f"models:/{name}@staging", "--types", "person", TEXT],
            ["has no alias 'staging'; its aliases: production -> v1; versions: 1", "distill-ner promote"],
        ),
        (["serve", "--model", f"models:/{name}/7"], ["has no version '7'; its versions: 1"]),
        (["promote", "--model-name", name, "--version", "9"], ["has no version '9'"]),
        (["rollback", "--model-name", "no-such-model"], ["no registered model 'no-such-model'", name]),
    ]
    for argv, expected in cases:
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        message = str(exc.value)
        assert "\n" not in message and all(e in message for e in expected), (argv, message)


def test_cli_stdout_holds_only_results(production: str) -> None:
    """Warnings and library logs go to stderr, so `distill-ner predict ... | jq` works."""
    env = {**os.environ, "PYTHONWARNINGS": "always"}
    done = subprocess.run(
        [sys.executable, "-m", "distill_ner.cli", "predict", "--model", production, "--types", "person", TEXT],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert [json.loads(line)["text"] for line in done.stdout.splitlines()] == [TEXT]
    assert "Warning" in done.stderr  # there were warnings; they went where they belong


def test_stage_model_layouts(tmp_path: Path) -> None:
    """What goes into the `model` artifact: a local base bundled (hard links while staging), a merged
    folder alone, a hub base left as a reference."""
    from distill_ner.serving import stage_model

    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    (base / "model.safetensors").write_bytes(b"weights")

    def adapter(name: str, base_ref: str, merged: bool = False) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base_ref}))
        (folder / "adapter_model.safetensors").write_bytes(b"lora")
        if merged:
            (folder / "merged").mkdir()
            (folder / "merged" / "config.json").write_text("{}")
        return folder

    def files(folder: Path) -> list[str]:
        return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())

    local = stage_model(adapter("local", str(base)), tmp_path / "s1")
    assert files(local) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "base/config.json",
        "base/model.safetensors",
    ]
    assert (local / "base" / "model.safetensors").stat().st_ino == (base / "model.safetensors").stat().st_ino
    assert files(stage_model(adapter("merged", str(base), merged=True), tmp_path / "s2")) == ["config.json"]
    assert files(stage_model(adapter("hub", "HuggingFaceTB/SmolLM2-135M-Instruct"), tmp_path / "s3")) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_serve_production_over_http(production: str, tmp_path: Path) -> None:
    """`distill-ner serve` (mlflow models serve --env-manager local) for the production alias, queried over HTTP,
    without the environment's bin folder on PATH (as `.venv/bin/distill-ner serve` runs from a plain shell)."""
    port = free_port()
    bindir = Path(sys.executable).parent
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p) != bindir)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": path}
    log_file = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distill_ner.cli",
            "serve",
            "--model",
            production,
            "--port",
            str(port),
            "--timeout",
            "600",
        ],
        cwd=tmp_path,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_answering(server, f"http://127.0.0.1:{port}/ping", tmp_path / "serve.log")

        def post(payload: dict, timeout: float = 60) -> tuple[int, dict]:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/invocations",
                data=json.dumps(payload).encode(),
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=timeout) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        status, answer = post(
            {
                "dataframe_records": [
                    {"text": TEXT, "types": ["person", "location"]},
                    {"text": TEXT, "types": "location"},
                ],
                "params": {"output": "grouped"},
            }
        )
        first, second = answer["predictions"]
        assert list(first["entities"]) == ["person", "location"] and first["entities"]["location"] == ["Warsaw"]
        assert second == {"text": TEXT, "entities": {"location": ["Warsaw"]}}

        # a 100,000-character document: the planted sentence is found first and last, at its offsets
        filler, _, _ = long_text(100_000, seed=3)
        document = TEXT + " " + filler.split(" ", 6)[-1].rsplit(" Ada", 1)[0] + " " + TEXT
        assert len(document) >= 99_000
        status, answer = post({"dataframe_records": [{"text": document, "types": ["location"]}]}, timeout=600)
        assert status == 200, answer
        mentions = answer["predictions"][0]["entities"]
        assert all(document[m["start"] : m["end"]] == m["text"] and 0 <= m["score"] <= 1 for m in mentions)
        warsaw = [m["start"] for m in mentions if m["text"] == "Warsaw"]
        assert warsaw[0] == 24 and warsaw[-1] == len(document) - 7, warsaw

        # over a limit: refused at once with the limit named; the next request is served as usual
        for payload, said in (
            (
                {"dataframe_records": [{"text": "x" * 200_001, "types": ["person"]}]},
                "the limit max_text_chars is 200000",
            ),
            ({"dataframe_records": [{"text": TEXT, "types": "person"}] * 257}, "the limit max_rows is 256"),
            (
                {"dataframe_records": [{"text": TEXT, "types": [f"type {i}" for i in range(10_000)]}]},
                "10000 entity types in one row; the limit max_types is 100",
            ),
        ):
            t0 = time.monotonic()
            status, error = post(payload)
            assert status == 400 and said in error["message"], error
            assert time.monotonic() - t0 < 1.0  # refused before any work
            assert "stack_trace" not in error and "Traceback" not in json.dumps(error)
            assert post({"dataframe_records": [{"text": TEXT, "types": "location"}]})[1]["predictions"][0]["entities"]
        # a bad row: 400 with the row's problem in the message, no stack trace
        for rows, said in (
            ([{"text": TEXT, "types": " , "}], "at least one entity type"),
            ([{"text": TEXT, "types": 7}], "`types` must be a list of strings"),
        ):
            status, body = post({"dataframe_records": rows})
            assert status == 400
            assert said in body["message"] and "stack_trace" not in body and "Traceback" not in body["message"], body

        # SIGTERM to the PID we got (not its group) stops the launcher, uvicorn and its workers too
        stop_by_pid_and_check_tree(server, port, tmp_path / "serve.log")
    finally:
        kill_tree(server)  # the test failed before stopping it: nothing it started may outlive it
        log_file.close()


def test_flavours_pick_what_is_logged():
    from distill_ner.extraction.config import ExtractionServing
    from distill_ner.ner.config import NERServing
    from distill_ner.serving import Flavour

    ner = NERServing(max_new_tokens=64)
    assert isinstance(ner, Flavour) and ner.pyfunc_config()["max_new_tokens"] == 64
    assert ner.python_model().name == "pyfunc.py"
    extraction = ExtractionServing(prompt_format="1.0", indent=None)
    assert isinstance(extraction, Flavour) and extraction.pyfunc_config()["prompt_format"] == "1.0"
    assert extraction.python_model().name == "pyfunc_extraction.py"
    with pytest.raises(ValueError, match="prompt_format"):
        ExtractionServing(prompt_format="2.0")
