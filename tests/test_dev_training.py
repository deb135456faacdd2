"""Training to where the quality is: the dev split, the dev evaluation during training, early stopping on
the best checkpoint (and its survival across a resume), and the supervised-positions-only loss.

All on the tiny random Llama (CPU, seconds). The early-stopping tests force the dev curve (the dev metric
follows a scripted sequence by training step) so that "the best checkpoint" is known in advance.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distill_ner.chat import IGNORE_INDEX
from distill_ner.config import TrainConfig
from distill_ner.models import load_model, load_tokenizer, make_tiny_model
from distill_ner.ner.config import SFTConfig
from distill_ner.ner.conversations import build_sft_dataset
from distill_ner.records import AnnotatedPassage, AnnotationSet, DevQuery, Entity, SFTDataset, SFTRow
from distill_ner.training import dev as dev_module
from distill_ner.training.dev import capped_queries, dev_metric
from distill_ner.training.loss import supervised_loss
from distill_ner.training.train import train_student
from distill_ner.training.trainer import PadToLongestCollator

# the tiny model on one torch thread (conftest); no MLflow run id inherited from the environment
pytestmark = pytest.mark.usefixtures("one_thread", "no_inherited_run")


@pytest.fixture()
def no_inherited_run(monkeypatch):
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def annotations(n: int = 40) -> AnnotationSet:
    passages = [
        AnnotatedPassage(
            id=f"p{i}",
            text=f"Ada Lovelace {i} met Charles Babbage in London.",
            entities=[Entity(text=f"Ada Lovelace {i}", type="person"), Entity(text="London", type="location")],
            negatives=["date"],
        )
        for i in range(n)
    ]
    return AnnotationSet(passages=passages)


def test_dev_passages_never_share_a_passage_with_training_rows(tiny):
    tokenizer = load_tokenizer(str(tiny))
    data = build_sft_dataset(annotations(), SFTConfig(max_length=512, dev_fraction=0.1, seed=3), tokenizer)
    dev_ids = {q.group for q in data.dev_queries}
    assert len(dev_ids) == 4 and {r.conversation_id for r in data.dev_rows} == dev_ids
    trained = {r.conversation_id for r in data.rows} | {c.id for c in data.conversations}
    assert not trained & dev_ids and len(trained) == 36
    # one question per type (2 positives + 1 negative), the references as the assistant would answer
    assert len(data.dev_queries) == 12 and data.stats["dev_questions"] == 12
    assert data.stats["dev_negative_questions"] == 4 and data.stats["dev_passages"] == 4
    assert sorted({q.reference for q in data.dev_queries if q.reference.startswith('["L')}) == ['["London"]']
    assert data.dev_metric == "uniner_f1"
    # seeded: the same seed holds out the same passages, another seed others
    again = build_sft_dataset(annotations(), SFTConfig(max_length=512, dev_fraction=0.1, seed=3), tokenizer)
    other = build_sft_dataset(annotations(), SFTConfig(max_length=512, dev_fraction=0.1, seed=4), tokenizer)
    assert {q.group for q in again.dev_queries} == dev_ids != {q.group for q in other.dev_queries}
    # no split: nothing held out
    none = build_sft_dataset(annotations(), SFTConfig(max_length=512), tokenizer)
    assert not none.dev_queries and not none.dev_rows and none.dev_metric == "" and len(none.conversations) == 40


def test_dev_cap_takes_whole_passages_and_metrics_score_raw_answers():
    queries = [DevQuery(group=f"p{i // 3}", prompt_ids=[1], reference="[]") for i in range(9)]
    assert [q.group for q in capped_queries(queries, 7)] == ["p0"] * 3 + ["p1"] * 3
    assert len(capped_queries(queries, 0)) == 9 and len(capped_queries(queries, 2)) == 2
    f1 = dev_metric("uniner_f1")
    assert f1(['["London"]', "[]"], ['["london"]', "[]"]) == pytest.approx(1.0, abs=1e-6)
    assert f1(['["Paris"]'], ['["London"]']) == 0.0
    tree = dev_metric("tree_score")
    assert tree(['{"city": "London"}'], ['{"city": "London"}']) == 1.0
    assert tree(["no json"], ['{"city": "London"}']) == 0.0
    with pytest.raises(ValueError, match="unknown dev metric 'nope'"):
        dev_metric("nope")


def test_supervised_only_logits_give_the_full_loss_and_gradients(tiny):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(
        load_model(str(tiny)), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    )
    # LoRA B starts at zero: give it values so the adapter's gradients are not trivially equal
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    rng = random.Random(0)
    rows = []
    for n in (30, 17, 24):
        ids = [rng.randrange(5, 380) for _ in range(n)]
        labels = [IGNORE_INDEX] * (n // 2) + ids[n // 2 :]
        rows.append({"input_ids": ids, "labels": labels})
    batch = PadToLongestCollator(0)(rows)
    n_items = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    full = model(**batch, num_items_in_batch=n_items).loss
    full_grads = grads(full)
    fast = supervised_loss(model, batch, n_items)
    fast_grads = grads(fast)
    assert float(fast) == pytest.approx(float(full), abs=1e-5)
    assert full_grads.keys() == fast_grads.keys() and len(full_grads) == 8
    for name, g in full_grads.items():
        torch.testing.assert_close(fast_grads[name], g, atol=1e-5, rtol=1e-4, msg=name)


def synthetic(vocab: int) -> SFTDataset:
    rng = random.Random(0)
    rows = []
    for i in range(32):
        prompt = [rng.randrange(10, vocab) for _ in range(rng.choice([4, 8, 16]))]
        answer = [rng.randrange(20, 36) for _ in range(5)] + [2]
        rows.append(
            SFTRow(id=f"r{i}", conversation_id=f"c{i}", input_ids=prompt + answer, labels=[-100] * len(prompt) + answer)
        )
    dev_rows = rows[:4]
    queries = [DevQuery(group=f"d{i}", prompt_ids=r.input_ids[:6], reference="[]") for i, r in enumerate(dev_rows)]
    return SFTDataset(conversations=[], rows=rows[4:], dev_rows=dev_rows, dev_queries=queries, dev_metric="uniner_f1")


class ForcedCurve:
    """The dev metric (and optionally the dev loss) as a scripted function of the training step; records the
    adapter at each evaluation."""

    def __init__(self, curve: dict[int, float], losses: dict[int, float] | None = None) -> None:
        from transformers import TrainerCallback

        self.curve = curve
        self.losses = losses or {}
        self.step = 0
        self.weights: dict[int, dict[str, torch.Tensor]] = {}
        self.calls: list[int] = []
        outer = self

        class _Step(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                outer.step = state.global_step

        self.callback = _Step()

    def evaluate_dev(self, model, tokenizer, rows, queries, metric, **kwargs):
        self.calls.append(self.step)
        self.weights[self.step] = {
            n.replace(".default", ""): p.detach().clone() for n, p in model.named_parameters() if "lora_" in n
        }
        return {"loss": self.losses.get(self.step, 1.0), "score": self.curve[self.step], "seconds": 0.0}


def dev_config(**overrides) -> TrainConfig:
    base = dict(
        method="lora",
        learning_rate=3e-2,
        warmup_ratio=0.0,
        per_device_batch_size=4,
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        eval_every=2,
        max_steps=12,
    )
    return TrainConfig(**{**base, **overrides})


def saved_adapter(folder: Path) -> dict[str, torch.Tensor]:
    return {k.replace(".default", ""): v for k, v in load_file(folder / "adapter_model.safetensors").items()}


def assert_same_weights(saved: dict[str, torch.Tensor], recorded: dict[str, torch.Tensor]) -> None:
    assert len(saved) == len(recorded) > 0
    for name, value in recorded.items():
        key = next(k for k in saved if k.endswith(name.removeprefix("base_model.model.")))
        torch.testing.assert_close(saved[key], value, msg=name)


def test_early_stopping_stops_and_keeps_the_best_checkpoint(tiny, tmp_path, monkeypatch):
    vocab = json.loads((tiny / "config.json").read_text())["vocab_size"]
    curve = ForcedCurve({2: 0.2, 4: 0.5, 6: 0.45, 8: 0.49, 10: 0.3, 12: 0.9})
    monkeypatch.setattr(dev_module, "evaluate_dev", curve.evaluate_dev)
    result = train_student(
        synthetic(vocab),
        str(tiny),
        dev_config(early_stopping_patience=3, early_stopping_min_delta=0.0),
        tmp_path / "out",
        log_to_mlflow=False,
        callbacks=[curve.callback],
    )
    # three evaluations without a gain after step 4: stopped at step 10, never reaching the 0.9 at 12
    assert curve.calls == [2, 4, 6, 8, 10]
    assert result.metrics["steps"] == 10 and result.best_step == 4 and result.metrics["best_step"] == 4
    assert result.metrics["best_dev_score"] == 0.5
    assert [h["step"] for h in result.dev_history] == [2, 4, 6, 8, 10]
    assert [h["dev_score"] for h in result.dev_history] == [0.2, 0.5, 0.45, 0.49, 0.3]
    # the saved adapter is the one evaluated at step 4, not the last one
    assert_same_weights(saved_adapter(tmp_path / "out"), curve.weights[4])
    with pytest.raises(AssertionError):
        assert_same_weights(saved_adapter(tmp_path / "out"), curve.weights[10])


def test_min_delta_and_the_last_step_is_a_candidate(tiny, tmp_path, monkeypatch):
    vocab = json.loads((tiny / "config.json").read_text())["vocab_size"]
    # 7 steps: evaluations at 3 and 6 and at the last step, 7; the last is the best
    curve = ForcedCurve({3: 0.2, 6: 0.21, 7: 0.6})
    monkeypatch.setattr(dev_module, "evaluate_dev", curve.evaluate_dev)
    result = train_student(
        synthetic(vocab),
        str(tiny),
        dev_config(eval_every=3, max_steps=7, early_stopping_patience=2, early_stopping_min_delta=0.05),
        tmp_path / "out",
        log_to_mlflow=False,
        callbacks=[curve.callback],
    )
    assert curve.calls == [3, 6, 7] and result.best_step == 7
    assert_same_weights(saved_adapter(tmp_path / "out"), curve.weights[7])


def test_selecting_on_dev_loss_keeps_the_lowest_loss(tiny, tmp_path, monkeypatch):
    vocab = json.loads((tiny / "config.json").read_text())["vocab_size"]
    curve = ForcedCurve({2: 0.9, 4: 0.1, 6: 0.2}, losses={2: 0.8, 4: 0.5, 6: 0.6})
    monkeypatch.setattr(dev_module, "evaluate_dev", curve.evaluate_dev)
    result = train_student(
        synthetic(vocab),
        str(tiny),
        dev_config(max_steps=6, dev_select="loss"),
        tmp_path / "out",
        log_to_mlflow=False,
        callbacks=[curve.callback],
    )
    assert result.best_step == 4 and result.metrics["best_dev_loss"] == 0.5 and result.metrics["best_dev_score"] == 0.1
    assert_same_weights(saved_adapter(tmp_path / "out"), curve.weights[4])


def test_a_resumed_run_keeps_its_dev_history_and_best_checkpoint(tiny, tmp_path, monkeypatch):
    from transformers import TrainerCallback

    vocab = json.loads((tiny / "config.json").read_text())["vocab_size"]
    data = synthetic(vocab)
    curve = ForcedCurve({2: 0.3, 4: 0.8, 6: 0.4, 8: 0.5, 10: 0.6, 12: 0.7})
    monkeypatch.setattr(dev_module, "evaluate_dev", curve.evaluate_dev)
    config = dev_config()

    class Crash(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 7:
                raise KeyboardInterrupt("killed at step 7")

    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        train_student(
            data,
            str(tiny),
            config,
            tmp_path / "out",
            checkpoint_dir=ckpt,
            log_to_mlflow=False,
            callbacks=[curve.callback, Crash()],
        )
    assert curve.calls == [2, 4, 6]
    result = train_student(
        data, str(tiny), config, tmp_path / "out", checkpoint_dir=ckpt, log_to_mlflow=False, callbacks=[curve.callback]
    )
    assert curve.calls == [2, 4, 6, 8, 10, 12]  # the resumed run evaluated only its own steps
    assert result.metrics["resumed_from_step"] == 6
    assert [h["step"] for h in result.dev_history] == [2, 4, 6, 8, 10, 12]  # history from before the crash too
    assert result.best_step == 4 and result.metrics["best_dev_score"] == 0.8
    assert_same_weights(saved_adapter(tmp_path / "out"), curve.weights[4])


def test_eval_every_without_a_dev_split_is_refused_before_loading(tiny, tmp_path):
    data = SFTDataset(conversations=[], rows=synthetic(100).rows)
    with pytest.raises(ValueError, match="sft.dev_fraction"):
        train_student(data, str(tiny), dev_config(), tmp_path / "out", log_to_mlflow=False)
    with pytest.raises(ValueError, match="early_stopping_patience needs train.eval_every"):
        TrainConfig(early_stopping_patience=2)


def test_real_dev_evaluation_answers_and_logs(tiny, tmp_path):
    """No forced curve: the dev questions are decoded by the model being trained and scored."""
    tokenizer = load_tokenizer(str(tiny))
    data = build_sft_dataset(annotations(12), SFTConfig(max_length=512, dev_fraction=0.25), tokenizer)
    result = train_student(
        data,
        str(tiny),
        dev_config(max_steps=4, dev_max_new_tokens=8, dev_max_queries=6),
        tmp_path / "out",
        log_to_mlflow=False,
    )
    assert [h["step"] for h in result.dev_history] == [2, 4]
    for h in result.dev_history:
        assert 0.0 <= h["dev_score"] <= 1.0 and h["dev_loss"] > 0 and h["dev_queries"] == 6
    assert result.best_step in (2, 4)
