"""`distill-ner` as a user meets it first: help and usage errors without the heavy libraries, and `ui`
stopped with everything it started by a signal to its PID."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_registry import mlflow_template  # noqa: F401  (one migrated, empty MLflow sqlite store)

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "mlflow", "zenml")

# each argv through main() in one fresh interpreter; after each, the top-level packages imported so far
PROBE = """
import json, sys
from distill_ner.cli import main
for argv in json.loads(sys.argv[1]):
    try:
        main(argv)
    except SystemExit:
        pass
    print(json.dumps({"argv": argv, "modules": sorted({m.split(".")[0] for m in sys.modules})}), file=sys.__stderr__)
"""


def probe(argvs: list[list[str]], tmp_path: Path, env: dict[str, str] | None = None) -> list[dict]:
    script = tmp_path / "probe.py"  # a file, not -c: ZenML finds its source root from the main module
    script.write_text(PROBE)
    done = subprocess.run(
        [sys.executable, str(script), json.dumps(argvs)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith('{"argv"')]
    assert len(lines) == len(argvs), done.stderr[-3000:]
    return lines


def test_help_and_usage_errors_import_no_heavy_library(tmp_path: Path) -> None:
    from distill_ner.cli import build_parser

    commands = sorted(build_parser()._subparsers._group_actions[0].choices)  # every subcommand
    assert {"predict", "serve", "ui", "compare", "extract", "mlflow-uri"} <= set(commands)
    argvs = [["--help"], *[[c, "--help"] for c in commands]]
    argvs += [
        ["predict", "Marie Curie was born in Warsaw."],  # no --types
        ["serve", "--port", "not-a-port"],
        ["compare", "--last", "two"],
        ["extract", "file.txt"],  # no --template
        ["promote"],  # no --version
    ]
    for result in probe(argvs, tmp_path):
        assert not set(HEAVY) & set(result["modules"]), result["argv"]


def test_subcommand_help_shows_defaults(capsys) -> None:
    from distill_ner.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    help_text = "".join(capsys.readouterr().out.split())  # no whitespace: argparse wraps lines, also at a hyphen
    assert "(default:5001)" in help_text and "(default:models:/distill-ner@production)" in help_text


@pytest.mark.slow
@pytest.mark.pipeline
def test_mlflow_uri_imports_zenml_but_no_model_library(tmp_path: Path, zenml_env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "distill_ner.cli", "stack"],
        cwd=tmp_path,
        env=zenml_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [result] = probe([["mlflow-uri"]], tmp_path, env=zenml_env)
    assert "zenml" in result["modules"]
    assert not {"torch", "transformers"} & set(result["modules"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until_answering(process: subprocess.Popen, url: str, log: Path, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{url} did not answer in {timeout_s} s:\n" + log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)


def stop_by_pid_and_check_tree(process: subprocess.Popen, port: int, log: Path) -> None:
    """SIGTERM to the PID alone, as a supervisor sends it; then nothing it started may survive or listen."""
    import psutil

    started = psutil.Process(process.pid).children(recursive=True)
    assert started, "the command started no server process"
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the command did not exit within 60 s of SIGTERM:\n" + log.read_text()[-3000:])
    _, alive = psutil.wait_procs(started, timeout=15)
    survivors, described = [], []
    for p in alive:
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            described.append(" ".join(p.cmdline())[:160])
            survivors.append(p)
            p.kill()  # leave nothing behind, then fail
        except psutil.NoSuchProcess:
            continue
    assert not survivors, described
    assert not port_open(port)


def kill_tree(process: subprocess.Popen) -> None:
    """After a failure: SIGKILL to the command and everything below it, so that no test leaves a server behind."""
    import psutil

    if process.poll() is not None:
        return
    for p in [*psutil.Process(process.pid).children(recursive=True), psutil.Process(process.pid)]:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    process.wait()


@pytest.mark.slow
def test_ui_stops_with_everything_it_started_on_sigterm(tmp_path: Path, mlflow_template: Path) -> None:  # noqa: F811
    shutil.copy(mlflow_template, tmp_path / "mlflow.db")
    port = free_port()
    log = tmp_path / "ui.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    with log.open("w") as out:
        # honours MLFLOW_TRACKING_URI: no ZenML stack exists for it to fall back on here
        ui = subprocess.Popen(
            [sys.executable, "-m", "distill_ner.cli", "ui", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_answering(ui, f"http://127.0.0.1:{port}/", log)
            assert f"for sqlite:///{tmp_path}/mlflow.db" in log.read_text()
            stop_by_pid_and_check_tree(ui, port, log)
        finally:
            kill_tree(ui)
