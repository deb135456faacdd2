"""The pieces transformers' Trainer runs with: the batch collator, the seeded batch-order sampler, the
Trainer subclass that uses it, and the callback that times the loop and sends metrics to MLflow.

Imports transformers at module level: train.py imports this module only when it trains.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from typing import Any

from transformers import Trainer, TrainerCallback

from distill_ner.chat import IGNORE_INDEX
from distill_ner.training.loss import supervised_loss

logger = logging.getLogger(__name__)


class PadToLongestCollator:
    """Pads a batch to its own longest row (optionally rounded up to `pad_to_multiple_of`).

    Right padding; labels are -100 and attention 0 on padding *by position*, so a pad id equal to the eos id
    (SmolLM2) never masks a real eos target. Rows are never concatenated: no cross-example attention.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: Sequence[dict[str, Sequence[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        n = len(features)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((n, width), dtype=torch.long)
        for i, feature in enumerate(features):
            k = len(feature["input_ids"])
            input_ids[i, :k] = torch.as_tensor(feature["input_ids"], dtype=torch.long)
            labels[i, :k] = torch.as_tensor(feature["labels"], dtype=torch.long)
            attention_mask[i, :k] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class SeededBatchOrderSampler:
    """Row order for one epoch, a pure function of (seed, epoch), so a resumed run sees the same batches.

    With `group_by_length`: shuffle, cut into mega-batches (up to 50 groups), sort each by length, cut into
    groups of `group_size` rows (per-device batch x processes: one micro-step on every rank), shuffle the
    groups, and put the group holding the longest row first so an out-of-memory shows at step 1.
    Without it: a plain seeded permutation. It uses its own `random.Random`, never the global RNGs.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        group_size: int,
        *,
        seed: int,
        group_by_length: bool = True,
        mega_batch_mult: int = 50,
    ) -> None:
        self.lengths = list(lengths)
        self.group_size = max(1, group_size)
        self.seed = seed
        self.group_by_length = group_by_length
        self.mega_batch_mult = mega_batch_mult
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # called by the Trainer / accelerate at each epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order(self.epoch))

    def order(self, epoch: int) -> list[int]:
        rng = random.Random(self.seed * 1_000_003 + epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        if not self.group_by_length or len(order) <= self.group_size:
            return order
        size = self.group_size
        mult = max(1, min(self.mega_batch_mult, len(order) // (size * 4)))
        mega = size * mult
        groups: list[list[int]] = []
        for start in range(0, len(order), mega):
            chunk = sorted(order[start : start + mega], key=lambda i: -self.lengths[i])
            groups += [chunk[j : j + size] for j in range(0, len(chunk), size)]
        # only the very last group can be short; keep it last so the others stay aligned with batch boundaries
        tail = [groups.pop()] if len(groups[-1]) < size else []
        rng.shuffle(groups)
        if groups:
            longest = max(range(len(groups)), key=lambda g: self.lengths[groups[g][0]])
            groups[0], groups[longest] = groups[longest], groups[0]
        return [i for group in groups + tail for i in group]


class MlflowRun:
    """Logs into the active MLflow run (ZenML's tracker starts one inside the step), or into MLFLOW_RUN_ID
    in processes started by `accelerate launch`, where no run is active. Uses the client with an explicit
    run id, so it never starts, nests or ends a run."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    @classmethod
    def find(cls) -> MlflowRun | None:
        try:
            import mlflow
        except ImportError:
            return None
        run = mlflow.active_run()
        run_id = run.info.run_id if run else os.environ.get("MLFLOW_RUN_ID")
        return cls(mlflow.MlflowClient(), run_id) if run_id else None

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        try:
            self.client.log_batch(self.run_id, params=items)
        except MlflowException:
            # a param already logged with another value (e.g. a retried step): keep the rest
            for item in items:
                try:
                    self.client.log_batch(self.run_id, params=[item])
                except MlflowException as exc:
                    logger.warning("MLflow param %s not logged: %s", item.key, exc)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if v is not None and math.isfinite(v)]
        if items:
            self.client.log_batch(self.run_id, metrics=items)


class StudentTrainer(Trainer):
    """transformers' Trainer with our seeded, length-grouped batch order (exact resumption), the loss computed
    at supervised positions only, and `evaluate` scoring the dev split (distill_ner.training.dev).

    `dev`: (rows, queries, metric name) of the dev split; with `eval_strategy="steps"` the Trainer calls
    `evaluate` every `eval_steps` and keeps the best checkpoint by `metric_for_best_model` ("dev_score").
    """

    def __init__(
        self,
        *args: Any,
        batch_order: SeededBatchOrderSampler,
        supervised_logits_only: bool = False,
        dev: tuple[Sequence[Any], Sequence[Any], str] | None = None,
        dev_batch_size: int = 16,
        dev_max_new_tokens: int = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.batch_order = batch_order
        self.supervised_logits_only = supervised_logits_only
        self.dev = dev
        self.dev_batch_size = dev_batch_size
        self.dev_max_new_tokens = dev_max_new_tokens

    def _get_train_sampler(self, train_dataset: Any = None) -> SeededBatchOrderSampler:
        return self.batch_order

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        # wrapped models (DDP, FSDP) must be called through their own forward, which syncs gradients
        if self.supervised_logits_only and not return_outputs and model is self.accelerator.unwrap_model(model):
            return supervised_loss(model, inputs, num_items_in_batch)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """Dev loss and dev metric of the model as it is now, logged (so they reach the log history, the
        checkpoints' trainer_state.json and our MLflow callback) as eval_dev_loss / eval_dev_score."""
        from distill_ner.training.dev import evaluate_dev

        if self.dev is None:
            raise ValueError("evaluation during training needs a dev split (sft.dev_fraction > 0)")
        rows, queries, metric = self.dev
        result = evaluate_dev(
            self.model,
            self.processing_class,
            rows,
            queries,
            metric,
            collate=self.data_collator,
            batch_size=self.dev_batch_size,
            max_new_tokens=self.dev_max_new_tokens,
        )
        metrics = {f"{metric_key_prefix}_dev_{k}": v for k, v in result.items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


class EvaluateLastStep(TrainerCallback):
    """Evaluates (and saves) at the last step too, so the run's end is a candidate for the best checkpoint
    even when the step count is not a multiple of eval_every."""

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step >= state.max_steps:
            control.should_evaluate = True
            control.should_save = True


class TrackingCallback(TrainerCallback):
    """Times the training loop, counts this run's tokens, and sends per-step metrics to MLflow."""

    def __init__(self, mlflow_run: MlflowRun | None) -> None:
        self.mlflow_run = mlflow_run
        self.started = self.ended = self.cpu_started = self.cpu_ended = 0.0
        self.start_step = self.start_tokens = self.end_tokens = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # the state is already restored from the checkpoint here: count only what this call trains
        self.start_step = state.global_step
        self.start_tokens = state.num_input_tokens_seen
        self.started = time.perf_counter()
        self.cpu_started = time.process_time()

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if not logs or not state.is_world_process_zero or self.mlflow_run is None:
            return
        metrics = {f"train/{k}": logs[k] for k in ("loss", "learning_rate", "grad_norm") if k in logs}
        # the learning curve: dev/loss, dev/score, dev/queries_per_s, dev/seconds by step
        metrics |= {f"dev/{k.removeprefix('eval_dev_')}": v for k, v in logs.items() if k.startswith("eval_dev_")}
        if not metrics:
            return
        try:
            self.mlflow_run.log_metrics(metrics, step=state.global_step)
        except Exception as exc:  # tracking must never kill a long training run
            logger.warning("MLflow logging failed at step %d: %s", state.global_step, exc)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.ended = time.perf_counter()
        self.cpu_ended = time.process_time()
        self.end_tokens = state.num_input_tokens_seen
