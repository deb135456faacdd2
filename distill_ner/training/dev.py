"""The dev split during training: a teacher-forced dev loss and a recipe's own dev metric, on the model
being trained.

Every recipe hands the trainer the same thing (`SFTDataset.dev_rows`, `.dev_queries`, `.dev_metric`):
rows for the loss, and questions already rendered as at inference with the answer the assistant turn
would give. The trainer decodes the questions greedily through the shared Engine (one sentence's
questions share their prompt prefix) and scores the answers with the metric named by `dev_metric`,
looked up here: the NER recipe's UniNER F1, the extraction recipe's tree score. Pure functions over a
model, a tokenizer and records: tests call them without a Trainer.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from distill_ner.chat import IGNORE_INDEX
from distill_ner.records import DevQuery, SFTRow

# name -> "module:function" taking (predictions, references) raw answer texts and returning a score in
# [0, 1]; imported when used, so the training core does not import the recipes
DEV_METRICS: dict[str, str] = {
    "uniner_f1": "distill_ner.ner.metrics:dev_f1",
    "tree_score": "distill_ner.extraction.metric:dev_tree_score",
}


def dev_metric(name: str) -> Callable[[Sequence[str], Sequence[str]], float]:
    if name not in DEV_METRICS:
        raise ValueError(f"unknown dev metric {name!r}; known: {', '.join(sorted(DEV_METRICS))}")
    module, function = DEV_METRICS[name].split(":")
    return getattr(importlib.import_module(module), function)


def rows_of(rows: Sequence[SFTRow], queries: Sequence[DevQuery]) -> list[SFTRow]:
    """The dev rows of the passages the (capped) questions ask about: the loss is taken on the same passages."""
    groups = {q.group for q in queries}
    return [r for r in rows if r.conversation_id in groups] if groups else list(rows)


def capped_queries(queries: Sequence[DevQuery], cap: int) -> list[DevQuery]:
    """The first `cap` queries, ending on a whole group (passage) where the cap allows one: the dev set's
    order is already seeded by passage, so this is a random subset of whole passages (0: no cap)."""
    if cap <= 0 or len(queries) <= cap:
        return list(queries)
    end = cap
    while end > 0 and queries[end - 1].group == queries[end].group:
        end -= 1
    return list(queries[: end or cap])


def dev_loss(model: Any, rows: Sequence[SFTRow], collate: Callable[[Sequence[dict]], dict], batch_size: int) -> float:
    """Mean token cross-entropy over the rows' target tokens, in eval mode (no dropout) and without gradients.
    The LM head runs at the target positions only (trainer.supervised_loss): a full-vocabulary head over
    every position of a long row costs more than the rest of the forward pass."""
    import torch

    from distill_ner.training.loss import supervised_loss

    total, count = 0.0, 0
    device = next(model.parameters()).device
    features = [{"input_ids": r.input_ids, "labels": r.labels} for r in rows]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(features), batch_size):
                batch = {k: v.to(device) for k, v in collate(features[start : start + batch_size]).items()}
                n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
                total += float(supervised_loss(model, batch, n)) * n
                count += n
    finally:
        model.train(was_training)
    return total / count if count else float("nan")


def answer_queries(
    model: Any, tokenizer: Any, queries: Sequence[DevQuery], *, batch_size: int, max_new_tokens: int
) -> tuple[list[str], float]:
    """(greedy answers in query order, queries per second) from the model as it is now (eval mode for the
    call; the caller's train/eval mode is restored)."""
    from distill_ner.engine import Engine, group_indices

    was_training = model.training
    use_cache = getattr(model.config, "use_cache", True)
    model.config.use_cache = True  # training turns the KV cache off; decoding wants it
    started = time.perf_counter()
    try:
        engine = Engine.from_model(model, tokenizer, batch_size=batch_size, max_new_tokens=max_new_tokens)
        groups = group_indices(q.group for q in queries)
        generations = engine.generate_ids([q.prompt_ids for q in queries], groups, progress=False)
    finally:
        model.config.use_cache = use_cache
        model.train(was_training)
    seconds = time.perf_counter() - started
    return [g.text.strip() for g in generations], len(queries) / seconds if seconds > 0 else 0.0


def evaluate_dev(
    model: Any,
    tokenizer: Any,
    rows: Sequence[SFTRow],
    queries: Sequence[DevQuery],
    metric: str,
    *,
    collate: Callable[[Sequence[dict]], dict],
    batch_size: int,
    max_new_tokens: int,
) -> dict[str, float]:
    """{"loss", "score", "queries", "queries_per_s", "seconds"}: what one dev evaluation logs. "score" is
    `metric` over the queries' answers (absent without queries), "loss" the dev rows' (absent without rows)."""
    started = time.perf_counter()
    out: dict[str, float] = {}
    if rows:
        out["loss"] = dev_loss(model, rows, collate, batch_size)
    if queries:
        answers, rate = answer_queries(model, tokenizer, queries, batch_size=batch_size, max_new_tokens=max_new_tokens)
        out["score"] = float(dev_metric(metric)(answers, [q.reference for q in queries]))
        out["queries"] = float(len(queries))
        out["queries_per_s"] = rate
    out["seconds"] = time.perf_counter() - started
    return out
