"""Screenshots of an MLflow run page and its F1-per-benchmark chart, taken with headless Chromium from a real
`distill-ner ui` (started here on a free 127.0.0.1 port and stopped afterwards).

    python scripts/screenshots.py --tracking-uri sqlite:///.zen/.../mlflow.db --out docs/images
    python scripts/screenshots.py --out docs/images            # the active ZenML stack's MLflow store

Needs Debian's chromium (`apt-get install -y chromium`) or --chromium PATH, driven by Playwright
(`pip install -e ".[screenshots]"`; it uses that browser, it downloads none) so that each shot waits for
what it shows: the MLflow UI is a single-page app that keeps polling, so a fixed delay either catches its
loading skeleton or wastes minutes. The run is the latest finished run of --experiment that holds the F1
chart (distill_ner.tracking.F1_CHART), or --run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill_ner.tracking import F1_CHART  # noqa: E402


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


def close_assistant(page) -> None:  # noqa: ANN001
    """MLflow 3 opens its assistant panel beside every page; closed, the run gets the whole width."""
    panel = page.get_by_text("MLflow Assistant", exact=True)
    if panel.count():
        buttons = panel.first.locator("xpath=ancestor::*[.//button][1]").locator("button")
        if buttons.count():
            buttons.last.click()  # the panel's header buttons: refresh, settings, close
            page.wait_for_timeout(500)


def screenshot(page, url: str, out: Path, ready: str, timeout_ms: int) -> None:  # noqa: ANN001
    """Open `url`, wait until `ready` (a JavaScript predicate) holds, then save a PNG."""
    page.goto(url)
    page.wait_for_function(ready, timeout=timeout_ms)
    close_assistant(page)
    page.wait_for_timeout(1500)  # charts and tables finish drawing after their data arrives
    page.screenshot(path=str(out))
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
    parser.add_argument("--timeout-ms", type=int, default=180_000, help="how long a page may take to show what is shot")
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
        from playwright.sync_api import sync_playwright

        wait_for(f"http://127.0.0.1:{port}/health", ui, timeout_s=600)
        shots = {
            # ready: the run page when its metrics table lists the F1; the artifact view when the chart's image
            # (fetched as a blob, so no src to wait for) has been decoded at its real size
            "mlflow_run.png": (
                base,
                {"width": 1400, "height": 1300},
                "() => document.body.innerText.includes('result.avg_f1')",
            ),
            "mlflow_f1_chart.png": (
                f"{base}/artifacts/{F1_CHART}",
                {"width": 1400, "height": 900},
                "() => [...document.images].some(i => i.complete && i.naturalWidth >= 300)",
            ),
        }
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox", "--disable-gpu"])
            try:
                for name, (url, viewport, ready) in shots.items():
                    page = browser.new_page(viewport=viewport)
                    screenshot(page, url, args.out / name, ready, args.timeout_ms)
                    page.close()
                    print(f"{args.out / name}  <- {url}")
            finally:
                browser.close()
    finally:
        ui.send_signal(signal.SIGTERM)  # distill-ner ui stops the MLflow server and its workers with it
        ui.wait(timeout=60)


if __name__ == "__main__":
    main()
