"""A teacher outage does not shrink the training set for good, and a run without data stops early.

Real pipeline runs (isolated ZenML/MLflow stores, own repository folder) against the fake OpenAI server,
whose `fail_marker` makes chosen passages fail with HTTP 500 (`max_retries: 0`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, run_cli

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_openai_server import FakeOpenAIServer  # noqa: E402

pytestmark = [pytest.mark.pipeline, pytest.mark.slow]

PIPELINE = ["zenml", "pipeline", "run", "pipelines.distill_ner.distill_ner", "-c"]
KEY_ENV = "DISTILL_NER_TEST_TEACHER_KEY"
CITIES = ["Paris", "Rome", "Lagos", "Osaka", "Lima", "Oslo"]


def corpus(path: Path, n: int, failing: set[int], words: int = 9) -> Path:
    lines = []
    for i in range(n):
        text = f"Alice Moreau met Bob Okafor in {CITIES[i % len(CITIES)]} in {1900 + i} at the Red Cross office."
        text = " ".join(text.split()[:words]) + (" FAILME" if i in failing else "")
        lines.append(json.dumps({"id": f"d{i}", "text": text}))
    path.write_text("\n".join(lines) + "\n")
    return path


def config(tmp_path: Path, name: str, corpus_path: Path, server: FakeOpenAIServer, **teacher) -> Path:
    cfg = yaml.safe_load((ROOT / "configs/smoke.yaml").read_text())
    params = cfg["parameters"]["config"]
    params["corpus"] = {
        "sources": [{"path": str(corpus_path), "id_field": "id"}],
        "max_tokens": 2048,
        "num_passages": 12,
    }
    params["teacher"] = {
        "model": "fake-teacher",
        "base_url": server.base_url,
        "api_key_env": KEY_ENV,
        "max_retries": 0,
        "timeout_s": 10,
        "cache_path": str(tmp_path / f"{name}.sqlite"),
        **teacher,
    }
    params["train"]["max_steps"] = 2
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def inspect(env) -> dict:
    done = run_cli([sys.executable, "tests/inspect_run.py", "distill_ner", "distill-ner-smoke"], env)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def statuses(state: dict) -> dict[str, str]:
    return {name: s["status"].lower().rsplit(".", 1)[-1] for name, s in state["steps"].items()}


def test_failed_passages_are_retried_and_too_many_stop_the_run(tiny_student, zenml_env, tmp_path):
    zenml_env[KEY_ENV] = "sk-test-teacher-failures"
    work_tmp = tmp_path / "tmp"  # the runs' temporary folders: a trained model's working copy must not stay
    work_tmp.mkdir()
    zenml_env["TMPDIR"] = str(work_tmp)
    assert run_cli(["distill-ner", "stack"], zenml_env).returncode == 0
    with FakeOpenAIServer(fail_marker="FAILME") as server:
        two_of_twelve = config(
            tmp_path, "outage", corpus(tmp_path / "c1.jsonl", 12, {3, 7}), server, max_failed_fraction=0.25
        )

        # an outage for 2 of 12 passages, under the allowed share: the run goes on with 10
        first = run_cli(PIPELINE + [str(two_of_twelve)], zenml_env, timeout=900)
        assert first.returncode == 0, (first.stdout + first.stderr)[-6000:]
        annotations = inspect(zenml_env)["steps"]["annotate"]["outputs"]["annotations"]
        assert (annotations["passages"], annotations["failures"]) == (10, 2)
        assert server.stats()["counts"]["requests"] == 12

        # the same outage again: annotate is not served from ZenML's cache (it asks for the 2 again);
        # its annotations come out the same, so the steps after it are reused
        server.control(reset=True)
        again = run_cli(PIPELINE + [str(two_of_twelve)], zenml_env, timeout=900)
        assert again.returncode == 0, (again.stdout + again.stderr)[-6000:]
        steps = statuses(inspect(zenml_env))
        assert steps["annotate"] == "completed" and server.stats()["counts"]["requests"] == 2
        assert all(steps[s] == "cached" for s in ("add_negatives", "build_sft", "train", "evaluate")), steps

        # the teacher is back: only the 2 failed passages are asked, and training sees all 12
        server.control(reset=True, fail_marker=None)
        back = run_cli(PIPELINE + [str(two_of_twelve)], zenml_env, timeout=900)
        assert back.returncode == 0, (back.stdout + back.stderr)[-6000:]
        state = inspect(zenml_env)
        assert server.stats()["counts"]["requests"] == 2
        annotations = state["steps"]["annotate"]["outputs"]["annotations"]
        assert (annotations["passages"], annotations["failures"]) == (12, 0)
        assert statuses(state)["train"] == "completed"
        assert not list(work_tmp.glob("student_*")), "the trained model's working folder outlived the run"

        # more than teacher.max_failed_fraction (default 0.05) failed: the run stops before training
        server.control(reset=True, fail_marker="FAILME")
        too_many = config(tmp_path, "too_many", corpus(tmp_path / "c2.jsonl", 12, {1, 2, 5}), server)
        stopped = run_cli(PIPELINE + [str(too_many)], zenml_env, timeout=900)
        output = stopped.stdout + stopped.stderr
        assert stopped.returncode != 0
        assert (
            "teacher openai:fake-teacher: 3 of 12 passages failed (25.0%, above teacher.max_failed_fraction 0.05)"
            in output
        )
        assert "server_error 3" in output
        assert "Step train has started" not in output and "Step build_sft has started" not in output

        # an empty corpus (every document under corpus.min_words) stops at its first step, naming the corpus
        empty_corpus = corpus(tmp_path / "empty.jsonl", 12, set(), words=3)
        empty = run_cli(PIPELINE + [str(config(tmp_path, "empty", empty_corpus, server))], zenml_env, timeout=900)
        output = empty.stdout + empty.stderr
        assert empty.returncode != 0
        assert f"corpus: no passages from corpus.sources [{empty_corpus}]" in output
        assert "Step annotate has started" not in output
