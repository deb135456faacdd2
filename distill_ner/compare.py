"""Two or more MLflow runs side by side: what differs in their parameters, and their metrics.

`distill-ner compare` prints this table and the link to the same comparison in the MLflow UI
(`distill-ner ui` serves it), so a change of config can be judged from a terminal or a browser alike.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run


class RunNotFoundError(LookupError):
    pass


def resolve_runs(
    client: "MlflowClient", refs: Sequence[str], experiment: str | None = None, last: int = 2
) -> list["Run"]:
    """Runs by id or run name (searched in every experiment, or in `experiment`); without refs, the `last`
    finished runs of `experiment` (at least one), oldest first."""
    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = ", ".join(sorted(e.name for e in client.search_experiments()))
            raise RunNotFoundError(f"no MLflow experiment named {experiment!r}; there are: {names or 'none'}")
        experiment_ids = [found.experiment_id]
    else:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    if not refs:
        runs = client.search_runs(
            experiment_ids, "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"], max_results=last
        )
        if not runs:
            where = f"experiment {experiment!r}" if experiment else "any experiment"
            raise RunNotFoundError(f"no finished run in {where}; run the pipeline first (make demo)")
        return list(reversed(runs))
    runs = []
    for ref in refs:
        matches = client.search_runs(experiment_ids, f"attributes.run_name = '{ref}'", max_results=2)
        if not matches:
            try:
                matches = [client.get_run(ref)]
            except Exception:  # MlflowException for an unknown id; a name with odd characters fails too
                matches = []
        if not matches:
            raise RunNotFoundError(f"no MLflow run with id or name {ref!r}")
        if len(matches) > 1:
            raise RunNotFoundError(f"run name {ref!r} is ambiguous; pass a run id")
        runs.append(matches[0])
    return runs


def _format(value: float | str | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}"
    return str(value)


def comparison_rows(
    runs: Sequence["Run"], *, all_params: bool = False, keys: str | None = None
) -> list[tuple[str, list[str]]]:
    """(key, one value per run): the parameters and own tags whose values differ (all with `all_params`, or
    when there is one run), then every metric's last value, sorted by key; with `keys` (a regular
    expression), only the rows it finds."""
    rows: list[tuple[str, list[str]]] = []
    all_params = all_params or len(runs) == 1  # nothing to differ from: show the run whole
    param_keys = sorted({k for r in runs for k in r.data.params})
    for key in param_keys:
        values = [r.data.params.get(key) for r in runs]
        if all_params or len(set(values)) > 1:
            rows.append((f"param {key}", [_format(v) for v in values]))
    # our own tags (the gate's decision, the registered version); MLflow's system tags are noise here
    tag_keys = sorted({k for r in runs for k in r.data.tags if not k.startswith("mlflow.")})
    for key in tag_keys:
        values = [r.data.tags.get(key) for r in runs]
        if all_params or len(set(values)) > 1:
            rows.append((f"tag {key}", [_format(v).replace("\n", "; ").replace("|", "/") for v in values]))
    metric_keys = sorted({k for r in runs for k in r.data.metrics})
    for key in metric_keys:
        rows.append((key, [_format(r.data.metrics.get(key)) for r in runs]))
    if keys is not None:
        pattern = re.compile(keys)
        rows = [row for row in rows if pattern.search(row[0])]
    return rows


def markdown_table(runs: Sequence["Run"], *, all_params: bool = False, keys: str | None = None) -> str:
    header = ["run", *[r.info.run_name or r.info.run_id[:8] for r in runs]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, values in comparison_rows(runs, all_params=all_params, keys=keys):
        lines.append("| " + " | ".join([key, *values]) + " |")
    return "\n".join(lines)


def ui_compare_url(runs: Sequence["Run"], base_url: str = "http://127.0.0.1:5055") -> str:
    """The MLflow UI's own comparison page for these runs (charts, parallel coordinates, diffs)."""
    run_ids = json.dumps([r.info.run_id for r in runs])
    experiment_ids = json.dumps(sorted({r.info.experiment_id for r in runs}))
    return f"{base_url.rstrip('/')}/#/compare-runs?runs={quote(run_ids)}&experiments={quote(experiment_ids)}"
