"""Score a model on the configured benchmarks: the UniNER string metric, and seqeval where gold is token-level.

Each sentence is asked every type of its benchmark (as in the UniNER test files: a type absent from a
sentence has the gold answer `[]`), one greedy answer per (sentence, type) query, zero-shot (no
`Dataset:` line). Scores are computed from the raw answers by `metrics.uniner_scores`, so a report can
be re-scored from its own predictions table.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill_ner.ner.benchmarks import Benchmark, load_benchmark
from distill_ner.ner.config import EvalConfig
from distill_ner.ner.metrics import average, normalize_items, parse_answer, span_scores, uniner_scores
from distill_ner.records import EvalReport, Prediction, Scores

if TYPE_CHECKING:
    from distill_ner.ner.inference import NEREngine

logger = logging.getLogger(__name__)

PREDICTIONS_TABLE = "predictions.json"
_METRIC_NAME_BAD = re.compile(r"[^A-Za-z0-9_.\-/ ]")


def benchmark_queries(benchmark: Benchmark) -> list[tuple[int, str, list[str]]]:
    """(sentence index, type, gold strings) for every sentence × every type of the benchmark."""
    return [
        (i, entity_type, list(sentence.gold.get(entity_type, [])))
        for i, sentence in enumerate(benchmark.sentences)
        for entity_type in benchmark.types
    ]


def score_benchmark(benchmark: Benchmark, answers: list[str]) -> tuple[Scores, list[Prediction]]:
    """Scores and prediction rows of one benchmark from the raw answers, in `benchmark_queries` order."""
    queries = benchmark_queries(benchmark)
    if len(answers) != len(queries):
        raise ValueError(f"{benchmark.name}: {len(answers)} answers for {len(queries)} queries")
    scores = uniner_scores(answers, [gold for _, _, gold in queries], n_sentences=len(benchmark.sentences))
    if benchmark.sentences and all(s.tokens is not None for s in benchmark.sentences):
        by_query = {(benchmark.sentences[i].id, t): a for (i, t, _), a in zip(queries, answers)}
        p, r, f = span_scores(benchmark.sentences, by_query)
        scores = scores.model_copy(update={"span_precision": p, "span_recall": r, "span_f1": f})
    predictions = [
        Prediction(
            dataset=benchmark.name,
            id=benchmark.sentences[i].id,
            text=benchmark.sentences[i].text,
            type=t,
            gold=gold,
            # what the metric compares: the answer parsed and normalised by the reference's rules
            predicted=parse_answer(answer),
            raw=answer,
        )
        for (i, t, gold), answer in zip(queries, answers)
    ]
    return scores, predictions


def evaluate_model(model_ref: str, config: EvalConfig, engine: NEREngine | None = None) -> EvalReport:
    """Greedy answers of the model to every benchmark query, scored per benchmark.

    `engine` reuses an already loaded model (its batch size is kept; max_new_tokens comes from the config).
    """
    t_load = time.perf_counter()
    if engine is None:
        from distill_ner.ner.inference import NEREngine

        engine = NEREngine(
            model_ref, backend=config.backend, batch_size=config.batch_size, max_new_tokens=config.max_new_tokens
        )
    load_seconds = time.perf_counter() - t_load

    per_dataset: dict[str, Scores] = {}
    predictions: list[Prediction] = []
    coverage: dict[str, int] = {}
    stats: dict[str, float] = {"load_seconds": load_seconds}
    total_queries = total_tokens = 0
    total_seconds = 0.0
    for name in config.benchmarks:
        benchmark = load_benchmark(name, config.max_sentences, config.seed)
        if benchmark.name in per_dataset:
            raise ValueError(f"benchmark {benchmark.name!r} is listed twice in eval.benchmarks")
        queries = benchmark_queries(benchmark)
        logger.info("%s: %d sentences x %d types = %d queries", benchmark.name, len(benchmark.sentences), len(benchmark.types), len(queries))
        answers = engine.answer(
            [(benchmark.sentences[i].text, t) for i, t, _ in queries],
            dataset=None,  # zero-shot: the dataset line is only for supervised training data
            max_new_tokens=config.max_new_tokens,
        )
        run = engine.last_stats
        scores, rows = score_benchmark(benchmark, answers)
        per_dataset[benchmark.name] = scores
        predictions += rows
        coverage[benchmark.name] = len(benchmark.sentences)
        stats[f"{benchmark.name}.seconds"] = run.seconds
        stats[f"{benchmark.name}.queries_per_s"] = run.queries_per_s
        stats[f"{benchmark.name}.generated_tokens_per_s"] = run.tokens_per_s
        total_queries += run.queries
        total_tokens += run.generated_tokens
        total_seconds += run.seconds
        logger.info("%s: F1 %.4f (P %.4f R %.4f), %.1f queries/s", benchmark.name, scores.f1, scores.precision, scores.recall, run.queries_per_s)
    stats.update(
        seconds=total_seconds,
        queries=float(total_queries),
        generated_tokens=float(total_tokens),
        queries_per_s=total_queries / total_seconds if total_seconds > 0 else 0.0,
        generated_tokens_per_s=total_tokens / total_seconds if total_seconds > 0 else 0.0,
    )
    return EvalReport(
        model=model_ref,
        metric="F1",
        unit="sentences",
        primary={name: scores.f1 for name, scores in per_dataset.items()},
        coverage=coverage,
        per_dataset=per_dataset,
        predictions=predictions,
        stats=stats,
    )


def _metric_key(name: str) -> str:
    return _METRIC_NAME_BAD.sub("_", name)


def report_metrics(report: EvalReport) -> dict[str, float]:
    """Flat MLflow metric names: eval.<dataset>.{precision,recall,f1[,span_*]}, eval.avg_*, throughput."""
    metrics: dict[str, float] = {}
    for name, scores in report.per_dataset.items():
        key = f"eval.{_metric_key(name)}"
        metrics[f"{key}.precision"] = scores.precision
        metrics[f"{key}.recall"] = scores.recall
        metrics[f"{key}.f1"] = scores.f1
        for field in ("span_precision", "span_recall", "span_f1"):
            value = getattr(scores, field)
            if value is not None:
                metrics[f"{key}.{field}"] = value
        metrics[f"{key}.sentences"] = float(report.coverage.get(name, scores.n_sentences))
    if report.per_dataset:
        avg = average(report.per_dataset)
        metrics["eval.avg_precision"] = avg.precision
        metrics["eval.avg_recall"] = avg.recall
        metrics["eval.avg_f1"] = avg.f1
        if avg.span_f1 is not None:
            metrics["eval.avg_span_f1"] = avg.span_f1
    for stat in ("queries_per_s", "generated_tokens_per_s", "seconds"):
        if stat in report.stats:
            metrics[f"eval.{stat}"] = float(report.stats[stat])
    return metrics


def predictions_table(report: EvalReport) -> dict[str, list[Any]]:
    """The predictions as columns (what mlflow.log_table takes); lists become JSON-friendly strings."""
    columns = ("dataset", "id", "text", "type", "gold", "predicted", "raw")
    table: dict[str, list[Any]] = {c: [] for c in columns}
    table["correct"] = []
    for p in report.predictions:
        for c in columns:
            table[c].append(getattr(p, c))
        gold = set(normalize_items(p.gold))
        table["correct"].append(sum(1 for item in p.predicted if item in gold))
    return table


def log_to_mlflow(report: EvalReport, config: EvalConfig, model_ref: str | None = None) -> bool:
    """Params, metrics and the predictions table into the active MLflow run; False when there is none."""
    import mlflow

    if mlflow.active_run() is None:
        return False
    params: dict[str, Any] = {
        "eval.model": model_ref or report.model,
        "eval.benchmarks": ",".join(config.benchmarks),
        "eval.max_sentences": config.max_sentences,
        "eval.max_new_tokens": config.max_new_tokens,
        "eval.seed": config.seed,
        "eval.backend": config.backend,
    }
    version = _registry_version(model_ref or report.model)
    if version is not None:
        params["eval.model_version"] = version
    mlflow.log_params(params)
    mlflow.log_metrics(report_metrics(report))
    if report.predictions:
        mlflow.log_table(data=predictions_table(report), artifact_file=PREDICTIONS_TABLE)
    return True


def _registry_version(ref: str) -> str | None:
    """The registry version a `models:/name@alias` or `models:/name/N` URI points at now (None otherwise)."""
    if not ref.startswith("models:/"):
        return None
    body = ref[len("models:/") :]
    try:
        from mlflow import MlflowClient

        if "@" in body:
            name, alias = body.split("@", 1)
            return str(MlflowClient().get_model_version_by_alias(name, alias).version)
        if "/" in body:
            return body.rsplit("/", 1)[1]
    except Exception as e:  # the evaluation itself already worked; a missing alias only loses a param
        logger.warning("could not resolve %s to a registry version: %s", ref, e)
    return None


def is_registry_reference(ref: str) -> bool:
    """MLflow URIs: `models:/name@alias` can point at other weights tomorrow, so never cache on them."""
    return ref.startswith(("models:/", "runs:/"))


def model_fingerprint(ref: str) -> str:
    """A cache key for a model reference: file content for a local path, the text for a hub id or an
    MLflow URI (whose steps run uncached, see is_registry_reference)."""
    from distill_ner.fingerprint import fingerprint_paths

    if is_registry_reference(ref):
        return ref
    path = Path(ref).expanduser()
    if path.exists():
        return fingerprint_paths([str(path)])
    return ref
