"""What the pipeline adds to its MLflow run so that the run page tells the story by itself: datasets as
inputs (with digests), system metrics while training and evaluating, a chart of F1 per benchmark, the
run's description, and HTML views as artifacts. Every function is a no-op without an active run."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)

F1_CHART = "charts/f1_per_benchmark.png"
F1_TABLE = "charts/f1_per_benchmark.json"


def _active_run() -> Any:
    import mlflow

    return mlflow.active_run()


@contextmanager
def system_metrics(sampling_interval_s: float = 5.0) -> Iterator[None]:
    """CPU, memory, disk, network (and GPU where there is one) of the machine into the active run while the
    block runs, as `system/...` curves (MLflow's monitor; it needs psutil)."""
    run = _active_run()
    monitor = None
    if run is not None:
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            # resume_logging: the step's run may already hold system metrics from an earlier step
            monitor = SystemMetricsMonitor(run.info.run_id, sampling_interval=sampling_interval_s, resume_logging=True)
            monitor.start()
        except Exception as exc:  # noqa: BLE001  (missing psutil, ...): the step itself must still run
            logger.warning("system metrics not logged: %s", exc)
            monitor = None
    try:
        yield
    finally:
        if monitor is not None:
            monitor.finish()


def log_dataset(records: Sequence[Mapping[str, Any]], name: str, context: str, source: str | None = None) -> bool:
    """Log rows as an MLflow dataset input of the active run (its digest is MLflow's hash of the rows).
    Lists, dicts and None become JSON strings and missing keys "": MLflow's digest reads only the columns
    whose every value is a string or a number."""
    if _active_run() is None or not records:
        return False
    import mlflow
    import mlflow.data
    import pandas as pd

    def cell(value: Any) -> Any:
        return value if isinstance(value, (str, int, float, bool)) else json.dumps(value, ensure_ascii=False)

    frame = pd.DataFrame([{k: cell(v) for k, v in r.items()} for r in records]).fillna("")
    mlflow.log_input(mlflow.data.from_pandas(frame, source=source, name=name), context=context)
    return True


def f1_chart(f1: Mapping[str, float], title: str = "F1 per benchmark") -> Any:
    """A horizontal bar chart of F1 per benchmark (a matplotlib Figure, drawn without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    names = sorted(f1)
    figure = Figure(figsize=(6.4, 0.6 + 0.45 * max(len(names), 1)), dpi=120)
    axes = figure.subplots()
    bars = axes.barh(names, [f1[n] for n in names], color="#3b7dd8")
    axes.bar_label(bars, labels=[f"{f1[n]:.4f}" for n in names], padding=3)
    axes.set_xlim(0, 1.1)
    axes.set_xlabel("F1")
    axes.set_title(title)
    axes.invert_yaxis()
    figure.tight_layout()
    return figure


def log_f1_chart(f1: Mapping[str, float]) -> bool:
    """The chart as a PNG artifact and the numbers as an MLflow table beside it."""
    if _active_run() is None or not f1:
        return False
    import mlflow

    mlflow.log_figure(f1_chart(f1), F1_CHART)
    mlflow.log_table({"benchmark": sorted(f1), "f1": [f1[n] for n in sorted(f1)]}, artifact_file=F1_TABLE)
    return True


def log_text_view(text: str, artifact_file: str) -> bool:
    """A view (HTML or Markdown, the same one ZenML shows) as an artifact of the active run."""
    if _active_run() is None:
        return False
    import mlflow

    mlflow.log_text(text, artifact_file)
    return True


def run_description(
    *,
    recipe: str,
    teacher: str,
    student: str,
    counts: Mapping[str, Any],
    f1: Mapping[str, float],
    outcome: Sequence[str],
    metric: str = "F1",
) -> str:
    """The run's description (MLflow shows it at the top of the run page), in Markdown. `f1`: the recipe's
    primary metric per benchmark, named `metric`."""
    lines = [f"**{recipe}**: teacher `{teacher}` distilled into student `{student}`.", ""]
    if counts:
        lines += ["Data: " + ", ".join(f"{k} {v}" for k, v in counts.items()), ""]
    if f1:
        avg = sum(f1.values()) / len(f1)
        lines += [f"| benchmark | {metric} |", "|---|---|", *[f"| {n} | {v:.4f} |" for n, v in sorted(f1.items())]]
        if len(f1) > 1:
            lines.append(f"| average | {avg:.4f} |")
        lines.append("")
    lines += [f"- {line}" for line in outcome]
    return "\n".join(lines)


def describe_run(description: str, tags: Mapping[str, Any] | None = None) -> bool:
    """Set the active run's description (the `mlflow.note.content` tag) and summary tags."""
    if _active_run() is None:
        return False
    import mlflow

    mlflow.set_tags({"mlflow.note.content": description, **{k: str(v) for k, v in (tags or {}).items()}})
    return True


# settings that only matter when requests are sent; an offline teacher replays recorded answers instead
_SENDING_ONLY = (
    "base_url",
    "api_key_env",
    "api_key_secret",
    "concurrency",
    "timeout_s",
    "max_retries",
    "retry_backoff_s",
    "retry_backoff_max_s",
)


def teacher_params(config: Any) -> dict[str, Any]:
    """The teacher as it ran, for MLflow params: an offline teacher is `backend=recorded` (answers replayed
    from the cache and the recorded files) without the API settings it never used."""
    params = config.model_dump(exclude={"recorded_responses"})
    if config.offline:
        for key in _SENDING_ONLY:
            params.pop(key, None)
        params["backend"] = "recorded"
        params["recorded_responses"] = ",".join(config.recorded_responses) or "none (cache only)"
    return {f"teacher.{k}": v for k, v in params.items()}
