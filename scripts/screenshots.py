"""Screenshots of an MLflow run page and its F1-per-benchmark chart, taken with headless Chromium from a real
`distill-ner ui` (started here on a free 127.0.0.1 port and stopped afterwards).

    python scripts/screenshots.py --tracking-uri sqlite:///.zen/.../mlflow.db --out docs/images
    python scripts/screenshots.py --out docs/images            # the active ZenML stack's MLflow store

Needs Debian's chromium (`apt-get install -y chromium`) or --chromium PATH. The run is the latest finished run
of --experiment that holds the F1 chart (distill_ner.tracking.F1_CHART), or --run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill_ner.tracking import F1_CHART  # noqa: E402

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--hide-scrollbars",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pick_run(client, experiment: str, run_id: str | None):  # noqa: ANN001, ANN201
    if run_id:
        return client.get_run(run_id)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(
            f"no MLflow experiment {experiment!r}; there are: {', '.join(e.name for e in client.search_experiments())}"
        )
    for run in client.search_runs(
        [found.experiment_id], "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"]
    ):
        if any(a.path == F1_CHART for a in client.list_artifacts(run.info.run_id, os.path.dirname(F1_CHART))):
            return run
    raise SystemExit(f"no finished run of {experiment!r} holds {F1_CHART}; run the pipeline first")


def wait_for(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"distill-ner ui exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{url} did not answer in {timeout_s} s")


def screenshot(chromium: str, url: str, out: Path, size: str, wait_ms: int) -> None:
    with tempfile.TemporaryDirectory(prefix="chromium_") as profile:
        subprocess.run(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={size}",
                f"--timeout={wait_ms}",
                f"--screenshot={out}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
    if not out.exists() or out.stat().st_size == 0:
        raise SystemExit(f"chromium wrote no screenshot of {url}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--tracking-uri", default=None, help="MLflow store; default: MLFLOW_TRACKING_URI, else the active stack's"
    )
    parser.add_argument("--experiment", default="distill_ner")
    parser.add_argument("--run", default=None, help="run id (default: the latest finished run with the F1 chart)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument(
        "--wait-ms",
        type=int,
        default=60000,
        help="time the page gets to load before the screenshot "
        "(the MLflow UI keeps polling, so there is no 'loaded' moment to wait for)",
    )
    args = parser.parse_args()

    from mlflow import MlflowClient

    from distill_ner.console import tracking_uri

    if args.tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    uri = tracking_uri()
    run = pick_run(MlflowClient(tracking_uri=uri), args.experiment, args.run)
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    ui = subprocess.Popen(
        [sys.executable, "-m", "distill_ner.cli", "ui", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(ROOT)},
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/health", ui, timeout_s=600)
        shots = {
            "mlflow_run.png": (base, "1400,1300"),
            "mlflow_f1_chart.png": (f"{base}/artifacts/{F1_CHART}", "1400,900"),
        }
        for name, (url, size) in shots.items():
            screenshot(args.chromium, url, args.out / name, size, args.wait_ms)
            print(f"{args.out / name}  <- {url}")
    finally:
        ui.send_signal(signal.SIGTERM)  # distill-ner ui stops the MLflow server and its workers with it
        ui.wait(timeout=60)


if __name__ == "__main__":
    main()
