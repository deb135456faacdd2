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
            _publish_closing_sample(monitor)


def _publish_closing_sample(monitor: Any) -> None:
    """MLflow's monitor publishes only after a full sampling interval, so a block shorter than one (a cached
    pipeline's only running step, a fast machine) would leave no `system/*` key and runs would not compare
    key for key. One sample taken at the block's end, averaged with any still unpublished, closes every block."""
    try:
        monitor.collect_metrics()
        monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.mlflow_logger.flush()
    except Exception as exc:  # noqa: BLE001  (the run may have ended): metrics are never worth a failed step
        logger.warning("closing system metrics sample not logged: %s", exc)


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


DEV_CURVE_CHART = "charts/dev_curve.png"


def dev_curve_chart(history: Sequence[Mapping[str, float]], best_step: int | None, title: str = "Dev split") -> Any:
    """Dev score (left axis) and dev loss (right axis) by training step, the kept checkpoint marked."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    steps = [e["step"] for e in history]
    figure = Figure(figsize=(6.4, 3.6), dpi=120)
    axes = figure.subplots()
    if any("dev_score" in e for e in history):
        axes.plot(steps, [e.get("dev_score", float("nan")) for e in history], "o-", color="#3b7dd8", label="dev score")
    axes.set_xlabel("training step")
    axes.set_ylabel("dev score", color="#3b7dd8")
    if best_step is not None:
        axes.axvline(best_step, color="#999999", linestyle="--", label=f"kept: step {best_step}")
    if any("dev_loss" in e for e in history):
        loss_axes = axes.twinx()
        loss_axes.plot(steps, [e.get("dev_loss", float("nan")) for e in history], "s:", color="#d8703b")
        loss_axes.set_ylabel("dev loss", color="#d8703b")
    axes.legend(loc="best")
    axes.set_title(title)
    figure.tight_layout()
    return figure


def log_dev_curve(history: Sequence[Mapping[str, float]], best_step: int | None) -> bool:
    """The dev curve as a PNG artifact of the active run (the run's charts also plot dev/score by step)."""
    if _active_run() is None or not history:
        return False
    import mlflow

    mlflow.log_figure(dev_curve_chart(history, best_step), DEV_CURVE_CHART)
    return True


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


# ZenML step metadata key under which a step records the MLflow params and metrics it logged
LOGGED_KEY = "mlflow_logged"


def log_stage(params: Mapping[str, Any] | None = None, metrics: Mapping[str, float] | None = None) -> bool:
    """Log a step's params and metrics into the active MLflow run, and record them in the step's ZenML
    metadata: a later pipeline run that takes this step from ZenML's cache puts the same keys on its own
    MLflow run (replay_cached_steps), so MLflow's compare view never shows them as unknown. Call it once a
    step (the metadata key is overwritten)."""
    if _active_run() is None:
        return False
    import mlflow

    params, metrics = dict(params or {}), {k: float(v) for k, v in (metrics or {}).items()}
    if params:
        mlflow.log_params(params)  # MLflow stores each value as its string
    if metrics:
        mlflow.log_metrics(metrics)
    remember_logged(params, metrics)
    return True


def remember_logged(params: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
    """Only the record half of `log_stage`, for what was logged into the run by other means (the trainer)."""
    try:
        from zenml import log_metadata

        log_metadata(
            metadata={
                LOGGED_KEY: {
                    "params": {k: str(v) for k, v in params.items()},
                    "metrics": {k: float(v) for k, v in metrics.items()},
                }
            }
        )
    except Exception as exc:  # noqa: BLE001  (outside a step, e.g. a test calling the step function)
        logger.debug("step metadata not recorded: %s", exc)


def replay_cached_steps() -> int:
    """Put the params and metrics that this pipeline run's cached steps logged when they really ran (their
    `log_stage` record, read from the original step run) on the active MLflow run; keys the run already has
    are left alone. Called by the steps that run; returns the number of keys logged."""
    if _active_run() is None:
        return 0
    try:
        from zenml import get_step_context
        from zenml.client import Client
        from zenml.enums import ExecutionStatus

        client = Client()
        pipeline_run = client.get_pipeline_run(get_step_context().pipeline_run.id)
        records = []
        for step in pipeline_run.steps.values():
            if step.status != ExecutionStatus.CACHED:
                continue
            record = step.run_metadata.get(LOGGED_KEY)
            if record is None and step.original_step_run_id:
                record = client.get_run_step(step.original_step_run_id).run_metadata.get(LOGGED_KEY)
            if isinstance(record, dict):
                records.append(record)
    except Exception as exc:  # noqa: BLE001  (no step context, store unreachable): tracking must not fail a step
        logger.warning("params and metrics of cached steps not replayed: %s", exc)
        return 0
    import mlflow

    run = mlflow.get_run(_active_run().info.run_id)
    params: dict[str, str] = {}
    metrics: dict[str, float] = {}
    for record in records:
        params |= {k: v for k, v in record.get("params", {}).items() if k not in run.data.params}
        metrics |= {k: v for k, v in record.get("metrics", {}).items() if k not in run.data.metrics}
    if params:
        mlflow.log_params(params)
    if metrics:
        mlflow.log_metrics(metrics)
    return len(params) + len(metrics)
