"""Score a student on the extraction benchmark: an EvalReport the shared registry gate reads.

The primary metric is the tree score (metric.py; the leaf similarity is `eval.leaf_metric`): per document
kind, `primary[kind]` is the mean tree score of its documents and `coverage[kind]` the documents scored
(unit "documents"), so a subset of another size is never compared with production. The gate averages
it over kinds and compares kind by kind with production, as it does for NER benchmarks.
`details[kind]` adds the leaf precision and recall pooled over its documents.

`eval.grounded` decodes with grounded decoding (inference.py): every answer is the template's JSON with spans of
the text, so `valid_json` and `conforms` are 1 unless max_new_tokens cannot hold the empty filling.

Each Prediction is one document: `gold` / `predicted` are the filled strings as `path = value` lines
(what was missed and what was invented) and `raw` is what the model wrote.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from distill_ner.extraction.config import ExtractionEvalConfig, ExtractionPromptConfig
from distill_ner.extraction.data import ExtractionExample, load_examples
from distill_ner.extraction.inference import Extractor
from distill_ner.extraction.metric import kind_scores, score_document
from distill_ner.extraction.templates import conforms, string_leaves
from distill_ner.records import EvalReport, Prediction
from distill_ner.rng import stable_rng

PRIMARY_METRIC = "tree score"


def select_documents(examples: list[ExtractionExample], config: ExtractionEvalConfig) -> list[ExtractionExample]:
    """The kinds asked for, and at most `max_per_kind` documents of each (seeded, file order kept)."""
    by_kind: dict[str, list[ExtractionExample]] = defaultdict(list)
    for ex in examples:
        by_kind[ex.kind].append(ex)
    if config.kinds is not None:
        unknown = sorted(set(config.kinds) - set(by_kind))
        if unknown:
            raise ValueError(f"eval.kinds: {unknown} not in {config.benchmark} (kinds there: {sorted(by_kind)})")
    chosen: set[str] = set()
    for kind, docs in by_kind.items():
        if config.kinds is not None and kind not in config.kinds:
            continue
        if config.max_per_kind is not None and len(docs) > config.max_per_kind:
            picks = stable_rng(config.seed, "subset", kind).choice(len(docs), size=config.max_per_kind, replace=False)
            docs = [docs[i] for i in picks.tolist()]
        chosen.update(ex.id for ex in docs)
    return [ex for ex in examples if ex.id in chosen]


def _lines(value: Any) -> list[str]:
    return [f"{path} = {text}" for path, text in string_leaves(value)]


def evaluate_extraction(
    model_ref: str,
    config: ExtractionEvalConfig,
    prompt: ExtractionPromptConfig,
    *,
    extractor: Extractor | None = None,
    progress: bool = True,
) -> EvalReport:
    documents = select_documents(load_examples(config.benchmark), config)
    if not documents:
        raise ValueError(f"eval: no benchmark documents selected from {config.benchmark}")
    extractor = extractor or Extractor.load(
        model_ref,
        prompt,
        backend=config.backend,
        batch_size=config.batch_size,
        max_new_tokens=config.max_new_tokens,
        gguf_quant=config.gguf_quant,
    )
    t0 = time.perf_counter()
    fillings = extractor.fill(
        [(d.template, d.text) for d in documents],
        progress=progress,
        max_new_tokens=config.max_new_tokens,
        grounded=config.grounded,
    )
    seconds = time.perf_counter() - t0
    scored = [score_document(d.kind, f.value, d.filled) for d, f in zip(documents, fillings)]
    per_kind = kind_scores(scored, config.leaf_metric)
    n = len(documents)
    stats = {
        "documents": float(n),
        "tree_score": sum((s.edit if config.leaf_metric == "edit" else s.exact).score for s in scored) / n,
        "tree_score_edit": sum(s.edit.score for s in scored) / n,
        "tree_score_exact": sum(s.exact.score for s in scored) / n,
        "valid_json": sum(f.value is not None for f in fillings) / n,
        "conforms": sum(f.value is not None and conforms(f.value, d.template) for d, f in zip(documents, fillings)) / n,
        "seconds": seconds,
        "documents_per_s": n / seconds if seconds > 0 else 0.0,
    }
    predictions = [
        Prediction(dataset=d.kind, id=d.id, text=d.text, gold=_lines(d.filled), predicted=_lines(f.value), raw=f.raw)
        for d, f in zip(documents, fillings)
    ]
    return EvalReport(
        model=model_ref,
        metric=PRIMARY_METRIC,
        unit="documents",
        primary={kind: s.tree_score for kind, s in per_kind.items()},
        coverage={kind: s.documents for kind, s in per_kind.items()},
        details={
            kind: {"leaf_precision": s.leaf_precision, "leaf_recall": s.leaf_recall} for kind, s in per_kind.items()
        },
        predictions=predictions,
        stats=stats,
        backend=getattr(getattr(extractor, "engine", None), "backend", ""),  # what ran (`auto` resolved)
    )


def report_metrics(report: EvalReport) -> dict[str, float]:
    """What a person compares runs by, named for MLflow."""
    metrics = {f"extract.{kind}.tree_score": value for kind, value in report.primary.items()}
    for kind, numbers in report.details.items():
        metrics.update({f"extract.{kind}.{name}": value for name, value in numbers.items()})
    metrics["extract.avg_tree_score"] = report.average
    metrics.update({f"extract.{k}": v for k, v in report.stats.items()})
    return metrics
