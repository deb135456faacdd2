"""An evaluation next to the published zero-shot numbers: a Markdown table and a bar chart.

The published numbers are data (data/benchmarks/published/uniner_zero_shot.yaml, each model with its
source). Averages are only ever taken over the sets actually scored, and say so ("avg over 2 of 7"):
a two-set average is not the paper's seven-set average, so the published seven-set average is shown
in its own column.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from pydantic import BaseModel, ConfigDict, Field

from distill_ner.ner.benchmarks import BENCHMARK_DIR, fetch_hint
from distill_ner.records import EvalReport

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PUBLISHED_FILE = BENCHMARK_DIR / "published" / "uniner_zero_shot.yaml"


class PublishedModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    source: str
    f1: dict[str, float] = Field(default_factory=dict, description="benchmark -> F1 in %")
    avg: float | None = None


class PublishedTable(BaseModel):
    model_config = ConfigDict(extra="forbid")

    suite: str
    metric: str
    columns: dict[str, str] = Field(min_length=1, description="benchmark -> paper column title, in order")
    models: list[PublishedModel]


def load_published(path: str | Path = PUBLISHED_FILE) -> PublishedTable:
    p = Path(path)
    try:
        table = PublishedTable(**yaml.safe_load(p.read_text(encoding="utf-8")))
    except Exception as e:
        raise ValueError(f"{p}: invalid published-numbers file: {e}") from None
    for model in table.models:
        unknown = set(model.f1) - set(table.columns)
        if unknown:
            raise ValueError(f"{p}: model {model.name}: benchmarks {sorted(unknown)} are not in `columns`")
    return table


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def scores_the_suite(report: EvalReport, published: PublishedTable | None = None) -> bool:
    """Whether any set of the published suite was scored (else there is nothing to compare with)."""
    columns = (published or load_published()).columns
    return any(name in columns for name in report.per_dataset)


def comparison_columns(report: EvalReport, published: PublishedTable) -> list[str]:
    """The suite's sets in paper order, then any other scored benchmark."""
    return list(published.columns) + [n for n in report.per_dataset if n not in published.columns]


def comparison_markdown(report: EvalReport, published: PublishedTable | None = None) -> str:
    """Per-dataset P/R/F1 of the report, then its F1 next to every published model's, in %."""
    published = published or load_published()
    suite = list(published.columns)
    columns = comparison_columns(report, published)
    scored = [n for n in suite if n in report.per_dataset]
    title = {n: published.columns.get(n, n) for n in columns}
    avg_label = f"avg over {len(scored)} of {len(suite)}"

    lines = [
        f"### {report.model}: per benchmark",
        "",
        "| benchmark | P | R | F1 | sentences |",
        "|---|---|---|---|---|",
    ]
    for name, s in report.per_dataset.items():
        lines.append(
            f"| {name} | {100 * s.precision:.1f} | {100 * s.recall:.1f} | {100 * s.f1:.1f} | {report.coverage.get(name, s.n_sentences)} |"
        )
    if not scored:  # e.g. the demo's own benchmark: a table of dashes would say nothing
        lines += [
            "",
            f"No set of the {published.suite} suite was scored, so there is no comparison with published numbers "
            f"(`{fetch_hint(['--suite', published.suite])}`, then `eval.benchmarks: [{published.suite}]`).",
        ]
        return "\n".join(lines) + "\n"
    lines += ["", f"### Zero-shot F1 (%) next to published numbers ({published.suite})", ""]
    header = ["model", *(title[n] for n in columns), avg_label, f"avg of {len(suite)} (published)"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def avg_over(f1: dict[str, float]) -> float | None:
        values = [f1[n] for n in scored if n in f1]
        return sum(values) / len(values) if scored and len(values) == len(scored) else None

    ours = {n: 100 * s.f1 for n, s in report.per_dataset.items()}
    lines.append(
        "| "
        + " | ".join(
            [
                f"**{report.model}**",
                *(_pct(ours.get(n)) if n in ours else "not scored" for n in columns),
                _pct(avg_over(ours)),
                "-",
            ]
        )
        + " |"
    )
    for model in published.models:
        cells = [_pct(model.f1.get(n)) for n in columns]
        lines.append("| " + " | ".join([model.name, *cells, _pct(avg_over(model.f1)), _pct(model.avg)]) + " |")
    lines.append("")
    lines.append(
        f"Averages are over the {len(scored)} of {len(suite)} suite sets scored here"
        + (f" ({', '.join(title[n] for n in scored)})" if scored else "")
        + "; a published model's average is shown only where it has a number for every one of them."
    )
    absent = [n for n in suite if n not in report.per_dataset]
    if absent:
        lines.append(
            f"Not scored: {', '.join(absent)}. Fetch: `{fetch_hint(['--suite', published.suite])}`, "
            f"then evaluate with `eval.benchmarks: [{published.suite}]`."
        )
    lines.append("Published numbers are on the full test sets; this model's on the sentences counted above.")
    lines.append("Sources: " + "; ".join(f"{m.name}: {' '.join(m.source.split())}" for m in published.models) + ".")
    return "\n".join(lines) + "\n"


def comparison_figure(report: EvalReport, published: PublishedTable | None = None) -> Figure:
    """Grouped bars: F1 per scored benchmark (and their average) for the report and each published model
    with numbers on those benchmarks."""
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display: files only
    from matplotlib.figure import Figure

    published = published or load_published()
    suite = list(published.columns)
    names = [n for n in comparison_columns(report, published) if n in report.per_dataset]
    scored = [n for n in suite if n in report.per_dataset]
    groups = [published.columns.get(n, n) for n in names]
    series: list[tuple[str, list[float | None]]] = [(report.model, [100 * report.per_dataset[n].f1 for n in names])]
    for model in published.models:
        values = [model.f1.get(n) for n in names]
        if any(v is not None for v in values):
            series.append((model.name, values))
    if scored:
        groups.append(f"avg over {len(scored)} of {len(suite)}")
        for _, values in series:
            in_suite = [v for n, v in zip(names, values) if n in scored]
            values.append(sum(in_suite) / len(in_suite) if all(v is not None for v in in_suite) else None)  # type: ignore[arg-type]

    fig = Figure(figsize=(max(6.0, 1.2 * len(groups) * max(1, len(series)) / 3 + 2), 4.0), dpi=100)
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    for k, (label, values) in enumerate(series):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(groups))]
        bars = ax.bar(
            [x for x, v in zip(xs, values) if v is not None], [v for v in values if v is not None], width, label=label
        )
        if k == 0:
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(groups)), groups, rotation=20, ha="right")
    ax.set_ylabel("F1 (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Zero-shot F1: {report.model} vs published")
    ax.legend(fontsize=7, ncols=2)
    fig.tight_layout()
    return fig


def figure_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def log_comparison(report: EvalReport) -> str:
    """The table (zero_shot/comparison.md) and the chart (zero_shot/comparison.png) into the active MLflow run."""
    import mlflow

    markdown = comparison_markdown(report)
    mlflow.log_text(markdown, "zero_shot/comparison.md")
    if scores_the_suite(report):
        mlflow.log_figure(comparison_figure(report), "zero_shot/comparison.png")
    return markdown
