"""Serving throughput: the real server (`distill-ner serve`) under concurrent clients against the engine's
offline batch rate on the same rows, in one run, and the server worker's memory.

Rows: the demo benchmark's sentences, each asked `--types` (one request = one sentence and its types, as a
NER client sends them). Decoding as served by default (grounded, mentions with offsets and scores).

  offline     ner.inference.Predictor.extract over all rows in one call (the engine batching as evaluation
              does): rows/s, the rate no server can beat on this machine
  c=1,4,16    that many clients, each sending its next request when the last one is answered; requests/s,
              p50 and p99 latency; the ratio to offline (target at c=16: >= 0.70)
  worker RSS  resident memory of the server's worker (the uvicorn process that holds the model) after the
              load, and the model's weights on disk beside it (target: <= 1.5 GB for the demo student)

    python benchmarks/bench_serve.py                                  # the production model, if registered
    python benchmarks/bench_serve.py --model .cache/models/SmolLM2-135M-Instruct   # a folder, logged here
    python benchmarks/bench_serve.py --model .cache/models/tiny-random-llama --requests 32   # seconds

A folder is logged as the NER pyfunc into a throw-away MLflow store under the temp folder first; a models:/
URI is served from the project's tracking store. Run it on an idle machine: the clients, the server and the
offline pass take turns on the same cores, and any other job makes every number noise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill_ner.console import quiet_defaults  # noqa: E402

quiet_defaults()


def rows_of(benchmark: str, types: list[str], n: int) -> list[dict]:
    from distill_ner.ner.benchmarks import load_benchmark

    sentences = load_benchmark(benchmark).sentences
    return [{"text": sentences[i % len(sentences)].text, "types": types} for i in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_folder(folder: str, store: Path) -> str:
    """The folder logged as the NER pyfunc into a sqlite store at `store`; its runs:/ URI."""
    import mlflow

    from distill_ner.ner.serving import log_ner_model

    uri = f"sqlite:///{store}/mlflow.db"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("bench_serve")
    with mlflow.start_run() as run:
        log_ner_model(folder, max_new_tokens=64)
    return f"runs:/{run.info.run_id}/model"


def offline_rate(model_ref: str, rows: list[dict], overrides: dict) -> float:
    """Rows/s of Predictor.extract over all rows at once, as the served model is configured."""
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(model_ref, model_config=overrides or None)
    predictor = model.unwrap_python_model().predictor
    texts, types = [r["text"] for r in rows], rows[0]["types"]
    predictor.extract(texts[:2], types)  # warm-up: first-call allocations
    t0 = time.perf_counter()
    predictor.extract(texts, types)
    seconds = time.perf_counter() - t0
    model.unwrap_python_model().batcher.close()
    return len(rows) / seconds


def post(port: int, row: dict) -> float:
    body = json.dumps({"dataframe_records": [row]}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    t0 = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as r:
        r.read()
    return time.perf_counter() - t0


def load(port: int, rows: list[dict], clients: int) -> tuple[float, float, float]:
    """(requests/s, p50 s, p99 s) of `clients` closed-loop clients sending every row once."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(lambda row: post(port, row), rows))
    wall = time.perf_counter() - t0
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(round(0.99 * (len(latencies) - 1))))]
    return len(rows) / wall, statistics.median(latencies), p99


def worker_rss(server_pid: int) -> tuple[float, int]:
    """Largest resident memory (GB) among the server's processes, and how many there are."""
    import psutil

    processes = [psutil.Process(server_pid), *psutil.Process(server_pid).children(recursive=True)]
    return max(p.memory_info().rss for p in processes) / 1e9, len(processes)


def weights_gb(model_ref: str) -> float:
    import mlflow.artifacts

    local = Path(mlflow.artifacts.download_artifacts(model_ref))
    return sum(p.stat().st_size for p in local.rglob("*.safetensors")) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models:/distill-ner@production", help="models:/ URI or model folder")
    parser.add_argument("--benchmark", default="distill_ner_demo")
    parser.add_argument("--types", default="person,organization,location")
    parser.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a serving setting (serve --set)"
    )
    args = parser.parse_args()
    overrides = {k: json.loads(v) for k, _, v in (item.partition("=") for item in args.set)}
    types = [t.strip() for t in args.types.split(",") if t.strip()]
    rows = rows_of(args.benchmark, types, args.requests)
    levels = [int(c) for c in args.concurrency.split(",")]

    tmp = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    try:
        if args.model.startswith("models:/"):
            from distill_ner.console import use_tracking_uri

            os.environ["MLFLOW_TRACKING_URI"] = use_tracking_uri()
            model_ref = args.model
        else:
            model_ref = log_folder(args.model, tmp)
        print(
            f"model {model_ref} ({args.model}); {len(rows)} requests of 1 sentence x {len(types)} types; "
            f"settings {overrides or 'as logged'}"
        )
        offline = offline_rate(model_ref, rows, overrides)
        print(f"{'offline':>8}  {offline:7.2f} rows/s")

        port = free_port()
        log = open(tmp / "serve.log", "w")
        server = subprocess.Popen(
            [sys.executable, "-m", "distill_ner.cli", "serve", "--model", model_ref, "--port", str(port)]
            + [arg for item in args.set for arg in ("--set", item)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")},
        )
        try:
            deadline = time.monotonic() + 600
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5).read()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(
                            "the server did not start:\n" + (tmp / "serve.log").read_text()[-3000:]
                        ) from None
                    time.sleep(1)
            post(port, rows[0])  # warm-up
            print(f"{'clients':>8}  {'req/s':>7}  {'p50 s':>7}  {'p99 s':>7}  {'vs offline':>10}")
            ratio = 0.0
            for clients in levels:
                rate, p50, p99 = load(port, rows, clients)
                ratio = rate / offline
                print(f"{clients:>8}  {rate:7.2f}  {p50:7.2f}  {p99:7.2f}  {ratio:9.2f}x")
            rss, n = worker_rss(server.pid)
            print(
                f"worker RSS {rss:.2f} GB (largest of {n} server processes); weights on disk {weights_gb(model_ref):.2f} GB"
            )
            print(f"c={levels[-1]} / offline = {ratio:.2f} (target >= 0.70); worker RSS target <= 1.5 GB")
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
