"""Score a model on the configured benchmarks: the UniNER string metric, and seqeval where gold is token-level.

Which (sentence, type) queries are asked is the benchmark spec's `queries` rule: a UniNER file is scored
on exactly the queries it contains (`as_in_file`, the reference evaluation's unit), a BIO/CoNLL set asks
every sentence every type (`every_type`: a type absent from a sentence has the gold answer `[]`). One
greedy answer per query, zero-shot (no `Dataset:` line). Scores are computed from the raw answers by `metrics.uniner_scores`, so a report can
be re-scored from its own predictions table.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill_ner.ner.benchmarks import Benchmark, available_benchmarks, load_benchmark, warn_absent
from distill_ner.ner.config import EvalConfig
from distill_ner.ner.metrics import average, grounding_rates, normalize_items, parse_answer, span_scores, uniner_scores
from distill_ner.records import EvalReport, Prediction, Scores

if TYPE_CHECKING:
    from distill_ner.ner.inference import NEREngine

logger = logging.getLogger(__name__)

PREDICTIONS_TABLE = "predictions.json"
_METRIC_NAME_BAD = re.compile(r"[^A-Za-z0-9_.\-/ ]")


def benchmark_queries(benchmark: Benchmark) -> list[tuple[int, str, list[str]]]:
    """(sentence index, type, gold strings) of every query the benchmark's rule asks, in sentence order
    then the benchmark's type order (so a file asking every sentence every type is asked as before)."""
    every_type = benchmark.spec is not None and benchmark.spec.query_rule == "every_type"
    return [
        (i, entity_type, list(sentence.gold.get(entity_type, [])))
        for i, sentence in enumerate(benchmark.sentences)
        for entity_type in benchmark.types
        if every_type or entity_type in sentence.gold
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
    Every benchmark is loaded (and a missing one reported) before the model is.
    `config.grounded` decodes the main pass grounded; `config.grounded_also` adds a grounded pass as
    `report.grounded` (same engine, same queries), so both numbers come from one evaluation.
    """
    names, absent = available_benchmarks(config.benchmarks)
    warn_absent(absent)
    benchmarks = [load_benchmark(name, config.max_sentences, config.seed) for name in names]
    t_load = time.perf_counter()
    if engine is None:
        from distill_ner.ner.inference import NEREngine

        engine = NEREngine(
            model_ref,
            backend=config.backend,
            batch_size=config.batch_size,
            max_new_tokens=config.max_new_tokens,
            gguf_quant=config.gguf_quant,
        )
    load_seconds = time.perf_counter() - t_load
    report = _evaluate_pass(engine, model_ref, benchmarks, config, config.grounded, load_seconds)
    if config.grounded_also and not config.grounded:
        report.grounded = _evaluate_pass(engine, model_ref, benchmarks, config, True, 0.0)
    report.backend = engine.backend
    return report


def _evaluate_pass(
    engine: NEREngine,
    model_ref: str,
    benchmarks: list[Benchmark],
    config: EvalConfig,
    grounded: bool,
    load_seconds: float,
) -> EvalReport:
    """One decoding pass (free or grounded) over the loaded benchmarks, scored per benchmark."""
    per_dataset: dict[str, Scores] = {}
    predictions: list[Prediction] = []
    coverage: dict[str, int] = {}
    stats: dict[str, float] = {"load_seconds": load_seconds}
    total_queries = total_tokens = 0
    total_seconds = 0.0
    for benchmark in benchmarks:
        if benchmark.name in per_dataset:
            raise ValueError(f"benchmark {benchmark.name!r} is listed twice in eval.benchmarks")
        queries = benchmark_queries(benchmark)
        logger.info(
            "%s: %d sentences x %d types = %d queries",
            benchmark.name,
            len(benchmark.sentences),
            len(benchmark.types),
            len(queries),
        )
        answers = engine.answer(
            [(benchmark.sentences[i].text, t) for i, t, _ in queries],
            dataset=None,  # zero-shot: the dataset line is only for supervised training data
            max_new_tokens=config.max_new_tokens,
            grounded=grounded,
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
        logger.info(
            "%s%s: F1 %.4f (P %.4f R %.4f), %.1f queries/s",
            benchmark.name,
            " (grounded)" if grounded else "",
            scores.f1,
            scores.precision,
            scores.recall,
            run.queries_per_s,
        )
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


def report_metrics(report: EvalReport, prefix: str = "eval") -> dict[str, float]:
    """Flat MLflow metric names: eval.<dataset>.{precision,recall,f1[,span_*]}, the dataset's
    {abstention,hallucination,unparseable}_rate, eval.avg_*, throughput; a grounded pass
    (`report.grounded`) adds the same names under eval.grounded.*."""
    metrics: dict[str, float] = {}
    rows: dict[str, list[tuple[str, list[str], str]]] = {}
    for p in report.predictions:
        rows.setdefault(p.dataset, []).append((p.text, p.gold, p.raw))
    for name, scores in report.per_dataset.items():
        key = f"{prefix}.{_metric_key(name)}"
        metrics[f"{key}.precision"] = scores.precision
        metrics[f"{key}.recall"] = scores.recall
        metrics[f"{key}.f1"] = scores.f1
        for field in ("span_precision", "span_recall", "span_f1"):
            value = getattr(scores, field)
            if value is not None:
                metrics[f"{key}.{field}"] = value
        metrics[f"{key}.sentences"] = float(report.coverage.get(name, scores.n_sentences))
        if name in rows:
            metrics.update({f"{key}.{rate}": value for rate, value in grounding_rates(rows[name]).items()})
    if report.per_dataset:
        avg = average(report.per_dataset)
        metrics[f"{prefix}.avg_precision"] = avg.precision
        metrics[f"{prefix}.avg_recall"] = avg.recall
        metrics[f"{prefix}.avg_f1"] = avg.f1
        if avg.span_f1 is not None:
            metrics[f"{prefix}.avg_span_f1"] = avg.span_f1
    for stat in ("queries_per_s", "generated_tokens_per_s", "seconds"):
        if stat in report.stats:
            metrics[f"{prefix}.{stat}"] = float(report.stats[stat])
    if report.grounded is not None:
        metrics.update(report_metrics(report.grounded, f"{prefix}.grounded"))
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
    """Params, metrics, the predictions table and the comparison with published numbers into the active
    MLflow run; False when there is none."""
    import mlflow

    if mlflow.active_run() is None:
        return False
    params: dict[str, Any] = {
        "eval.model": model_ref or report.model,
        "eval.benchmarks": ",".join(config.benchmarks),
        "eval.max_sentences": config.max_sentences,
        "eval.max_new_tokens": config.max_new_tokens,
        "eval.seed": config.seed,
        # what ran: `auto` resolved (llama.cpp and transformers may differ in the last float digits)
        "eval.backend": report.backend or config.backend,
        "eval.grounded": config.grounded,
        "eval.grounded_also": config.grounded_also,
    }
    if params["eval.backend"] == "llamacpp":
        params["eval.gguf_quant"] = config.gguf_quant
    version = _registry_version(model_ref or report.model)
    if version is not None:
        params["eval.model_version"] = version
    from distill_ner.tracking import log_stage

    log_stage(params, report_metrics(report))
    if report.predictions:
        mlflow.log_table(data=predictions_table(report), artifact_file=PREDICTIONS_TABLE)
    if report.per_dataset:
        from distill_ner.ner.zero_shot import log_comparison

        log_comparison(report)  # zero_shot/comparison.md and .png: next to the published numbers
    if report.grounded is not None and report.grounded.predictions:
        mlflow.log_table(data=predictions_table(report.grounded), artifact_file="grounded_" + PREDICTIONS_TABLE)
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
