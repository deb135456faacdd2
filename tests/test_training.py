"""Training: LoRA / full fine-tuning on a tiny random Llama, checkpoint + kill + resume, MLflow tracking.

Everything runs for real on CPU (tiny model from `models.make_tiny_model`); QLoRA, bf16 and multi-GPU
tests run where CUDA is present and skip cleanly elsewhere.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from distill_ner.chat import IGNORE_INDEX
from distill_ner.config import TrainConfig
from distill_ner.models import load_model, make_tiny_model
from distill_ner.records import SFTDataset, SFTRow
from distill_ner.training.checkpoints import data_hash, last_checkpoint, run_key
from distill_ner.training.train import (
    ALL_LINEAR,
    TrainResult,
    resolve_precision,
    target_modules_for,
    train_student,
)
from distill_ner.training.trainer import PadToLongestCollator, SeededBatchOrderSampler

REPO = Path(__file__).resolve().parents[1]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The tiny model's matmuls are far smaller than the cost of waking a second OpenMP thread (~5x slower
    # on 2 cores); one thread also makes in-process and subprocess numerics identical.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The tiny random Llama with its (tied) embeddings scaled x5 to std 0.1, about a trained model's.

    At the random init's std 0.02 the logits can move by only ~0.3 nats whatever the frozen-base LoRA
    learns, so "the loss falls" would be hard to tell from noise.
    """
    from distill_ner.models import load_tokenizer

    root = tmp_path_factory.mktemp("models")
    raw = make_tiny_model(root / "raw")
    model = load_model(str(raw))
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(5.0)
    model.save_pretrained(root / "tiny")
    load_tokenizer(str(raw)).save_pretrained(root / "tiny")
    return root / "tiny"


def synthetic_sft(vocab_size: int, n: int = 48, seed: int = 0) -> SFTDataset:
    """Prompt tokens (no loss) followed by an answer drawn from a small token subset (learnable), with
    skewed lengths; ends with the eos id, which is also a target (as in real chat rows)."""
    rng = random.Random(seed)
    answer_vocab = list(range(20, 36))
    rows = []
    for i in range(n):
        prompt = [rng.randrange(10, vocab_size) for _ in range(rng.choice([4, 6, 8, 30, 60]))]
        answer = [rng.choice(answer_vocab) for _ in range(rng.randint(4, 10))] + [2]
        rows.append(
            SFTRow(
                id=f"r{i}",
                conversation_id=f"c{i}",
                input_ids=prompt + answer,
                labels=[IGNORE_INDEX] * len(prompt) + answer,
            )
        )
    return SFTDataset(conversations=[], rows=rows, tokenizer="tiny")


@pytest.fixture(scope="module")
def sft(tiny) -> SFTDataset:
    vocab = json.loads((tiny / "config.json").read_text())["vocab_size"]
    return synthetic_sft(vocab)


def lora_config(**overrides) -> TrainConfig:
    # a much higher lr than the recipe: the tiny random model must visibly learn in a few steps
    base = dict(method="lora", learning_rate=3e-2, warmup_ratio=0.0, per_device_batch_size=4, lora_r=8, lora_alpha=16)
    return TrainConfig(**{**base, **overrides})


class CaptureModel:
    """A TrainerCallback-compatible hook keeping the trained in-memory model."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        outer = self

        class _Capture(TrainerCallback):
            def on_train_end(self, args, state, control, model=None, **kwargs):
                outer.model = model

        self.callback = _Capture()
        self.model = None


def logits(model, input_ids: list[list[int]]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor(input_ids)).logits


# ---------------------------------------------------------------------------------------------- pure parts


def test_collator_pads_to_longest_in_batch_by_position():
    pad = 2  # pad id == eos id, as in SmolLM2: padding must be decided by position, not by id
    features = [
        {"input_ids": [5, 6, 7], "labels": [IGNORE_INDEX, 6, 2]},
        {"input_ids": [5, 6, 7, 8, 2], "labels": [IGNORE_INDEX, IGNORE_INDEX, 7, 8, 2]},
    ]
    batch = PadToLongestCollator(pad)(features)
    assert batch["input_ids"].shape == (2, 5)  # the batch's longest, not a global max length
    assert batch["input_ids"][0].tolist() == [5, 6, 7, pad, pad]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"][0].tolist() == [IGNORE_INDEX, 6, 2, IGNORE_INDEX, IGNORE_INDEX]  # real eos kept
    assert batch["labels"][1].tolist() == [IGNORE_INDEX, IGNORE_INDEX, 7, 8, 2]

    rounded = PadToLongestCollator(pad, pad_to_multiple_of=8)(features)
    assert rounded["input_ids"].shape == (2, 8)
    assert rounded["attention_mask"].sum().item() == 8
    assert (rounded["labels"][:, 5:] == IGNORE_INDEX).all()


def test_sampler_is_seeded_grouped_and_cuts_padding():
    rng = random.Random(1)
    lengths = [int(32 * (1 + rng.paretovariate(1.2))) % 512 + 32 for _ in range(400)]
    sampler = SeededBatchOrderSampler(lengths, group_size=8, seed=3)
    first = sampler.order(0)
    assert sorted(first) == list(range(400))  # a permutation: every row once
    assert first == SeededBatchOrderSampler(lengths, group_size=8, seed=3).order(0)  # pure function of seed
    assert first != sampler.order(1)  # a new order each epoch
    sampler.set_epoch(1)
    assert list(iter(sampler)) == sampler.order(1)
    assert lengths[first[0]] == max(lengths)  # longest batch first: an OOM shows at step 1

    def padded(order: list[int]) -> int:
        return sum(max(lengths[i] for i in order[s : s + 8]) * 8 for s in range(0, len(order), 8))

    plain = SeededBatchOrderSampler(lengths, group_size=8, seed=3, group_by_length=False).order(0)
    assert sorted(plain) == list(range(400))
    assert padded(first) < 0.7 * padded(plain)


def test_resolve_precision():
    assert resolve_precision("auto", cuda=False, bf16_supported=False) == "fp32"
    # a CPU with AMX-BF16 runs bf16 matmuls several times faster than fp32: autocast there only
    assert resolve_precision("auto", cuda=False, bf16_supported=False, cpu_amx_bf16=True) == "bf16"
    assert resolve_precision("fp32", cuda=False, bf16_supported=False, cpu_amx_bf16=True) == "fp32"
    assert resolve_precision("auto", cuda=True, bf16_supported=True) == "bf16"
    assert resolve_precision("auto", cuda=True, bf16_supported=False) == "fp16"
    assert resolve_precision("fp32", cuda=True, bf16_supported=True) == "fp32"
    assert resolve_precision("bf16", cuda=False, bf16_supported=False) == "bf16"  # CPU autocast
    with pytest.raises(ValueError, match="bf16"):
        resolve_precision("bf16", cuda=True, bf16_supported=False)
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", cuda=False, bf16_supported=False)


def test_cpu_info_reads_the_model_and_amx_flag():
    from distill_ner.training.train import cpu_info

    info = cpu_info()
    assert isinstance(info["cpu_model"], str) and info["cpu_model"]
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    assert info["cpu_amx_bf16"] == (" amx_bf16" in flags)


def test_target_modules_per_architecture():
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    assert target_modules_for("llama") == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert target_modules_for("qwen2") == target_modules_for("mistral") == target_modules_for("gemma")
    assert target_modules_for("some-new-arch") == ALL_LINEAR
    assert target_modules_for("llama", ["q_proj", "v_proj"]) == ["q_proj", "v_proj"]
    assert target_modules_for("llama", [ALL_LINEAR]) == ALL_LINEAR
    # the gpt2 names really exist in a GPT-2 (Conv1D layers)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=32))
    peft_model = get_peft_model(gpt2, LoraConfig(r=2, target_modules=target_modules_for("gpt2")))
    adapted = {name.split(".")[-1] for name, _ in peft_model.named_modules() if hasattr(_, "lora_A")}
    assert adapted == {"c_attn", "c_proj", "c_fc"}


def test_data_hash_depends_on_content_and_order(sft):
    rows = sft.rows
    assert data_hash(rows) == data_hash(list(rows))
    assert data_hash(rows) != data_hash(rows[::-1])
    assert len(data_hash(rows)) == 64


def test_run_key_names_the_optimisation_not_the_bookkeeping(sft, tiny):
    key = run_key(sft, str(tiny), lora_config())
    assert key == run_key(sft, str(tiny), lora_config(checkpoint_every=5, logging_steps=3, merge_adapter=True))
    assert key != run_key(sft, str(tiny), lora_config(learning_rate=1e-3))
    assert key != run_key(SFTDataset(conversations=[], rows=sft.rows[:-1]), str(tiny), lora_config())
    assert key != run_key(sft, str(tiny), lora_config(distributed="ddp", num_processes=2))
    assert len(key) == 16


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU refusal only applies without CUDA")
def test_qlora_on_cpu_raises_before_loading(tmp_path):
    # the student does not even exist: the error must come before any loading
    with pytest.raises(ValueError, match="qlora needs a CUDA GPU"):
        train_student(
            synthetic_sft(100, n=4), str(tmp_path / "missing-model"), TrainConfig(method="qlora"), tmp_path / "out"
        )
    assert not (tmp_path / "out").exists()


def test_rows_without_targets_are_refused(tiny, tmp_path):
    rows = [SFTRow(id="a", conversation_id="a", input_ids=[5, 6, 7], labels=[IGNORE_INDEX] * 3)]
    with pytest.raises(ValueError, match="no SFT row has a target token"):
        train_student(SFTDataset(conversations=[], rows=rows), str(tiny), lora_config(), tmp_path / "out")


# ------------------------------------------------------------------------------------------- training runs


@pytest.fixture(scope="module")
def lora_run(tiny, sft, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "adapter"
    capture = CaptureModel()
    result = train_student(
        sft,
        str(tiny),
        lora_config(max_steps=24, merge_adapter=True),
        out,
        log_to_mlflow=False,
        callbacks=[capture.callback],
    )
    return result, capture.model, out


def test_lora_trains_and_loss_falls(lora_run, sft):
    result, _, out = lora_run
    assert isinstance(result, TrainResult)
    m = result.metrics
    assert m["steps"] == 24 and len(result.history) == 24
    assert [h["step"] for h in result.history] == list(range(1, 25))
    # from ~6.8 (worse than uniform: the rescaled random model is confidently wrong) to ~4.7
    assert sum(h["loss"] for h in result.history[-4:]) / 4 < 0.75 * result.history[0]["loss"]
    assert m["first_loss"] == result.history[0]["loss"] and m["final_loss"] == result.history[-1]["loss"]
    assert m["tokens_per_s"] > 0 and m["trained_tokens"] > 0 and m["peak_cpu_rss_mb"] > 0
    assert "peak_gpu_mem_mb" not in m
    assert result.data_hash == data_hash(sft.rows)
    assert result.config["method"] == "lora"
    # non-padding tokens: 24 steps x 4 rows, rows drawn from the data, well below 24*4*max_len
    assert m["trained_tokens"] < 24 * 4 * max(len(r.input_ids) for r in sft.rows)


def test_adapter_folder_loads_alone_with_same_logits(lora_run, tiny):
    result, trained, out = lora_run
    assert (out / "adapter_model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not (out / "training_args.bin").exists() and not out.with_name(out.name + ".partial").exists()
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == str(tiny.resolve())  # absolute: the folder loads alone
    record = json.loads((out / "training_config.json").read_text())
    assert record["student"] == str(tiny.resolve()) and record["data_hash"] == result.data_hash
    assert record["train"]["lora_r"] == 8 and record["metrics"]["steps"] == 24

    ids = [[1, 40, 41, 42, 43, 44, 45, 46], [1, 50, 60, 70, 80, 90, 100, 110]]
    expected = logits(trained, ids)
    loaded = load_model(str(out))
    assert torch.allclose(logits(loaded, ids), expected, atol=1e-5)
    base = load_model(str(tiny))
    assert not torch.allclose(logits(base, ids), expected, atol=1e-3)  # the adapter changed something
    merged = load_model(str(out / "merged"))
    assert not hasattr(merged, "peft_config")
    assert torch.allclose(logits(merged, ids), expected, atol=1e-4)


def test_lora_continues_from_an_adapter(lora_run, tiny, sft, tmp_path):
    _, _, adapter = lora_run
    result = train_student(
        sft, str(adapter), lora_config(max_steps=3, learning_rate=1e-3), tmp_path / "more", log_to_mlflow=False
    )
    saved = json.loads((tmp_path / "more" / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == str(tiny.resolve())  # still the real base, not the adapter
    # it starts from the trained adapter, not from a fresh one
    assert result.metrics["first_loss"] < 0.85 * lora_run[0].metrics["first_loss"]
    load_model(str(tmp_path / "more"))


def test_full_finetuning_saves_a_whole_model(tiny, sft, tmp_path):
    out = tmp_path / "full"
    capture = CaptureModel()
    result = train_student(
        sft,
        str(tiny),
        TrainConfig(method="full", learning_rate=5e-3, warmup_ratio=0.0, max_steps=12),
        out,
        log_to_mlflow=False,
        callbacks=[capture.callback],
    )
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert not (out / "adapter_config.json").exists()
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    ids = [[1, 40, 41, 42, 43]]
    assert torch.allclose(logits(load_model(str(out)), ids), logits(capture.model, ids), atol=1e-5)


def test_gradient_checkpointing_and_rounded_padding_train_the_same_model(tiny, sft, tmp_path):
    # recomputed activations and extra (masked) padding change the memory/compute, not the result
    data = SFTDataset(conversations=[], rows=sft.rows[:16])
    plain = train_student(
        data, str(tiny), lora_config(max_steps=4, lora_dropout=0.0), tmp_path / "a", log_to_mlflow=False
    )
    other = train_student(
        data,
        str(tiny),
        lora_config(max_steps=4, lora_dropout=0.0, gradient_checkpointing=True, pad_to_multiple_of=64),
        tmp_path / "b",
        log_to_mlflow=False,
    )
    assert other.metrics["trained_tokens"] == plain.metrics["trained_tokens"]  # padding is not counted
    for a, b in zip(plain.history, other.history):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4)


def test_output_dir_that_is_not_a_result_is_refused(tiny, sft, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="does not look like a training result"):
        train_student(sft, str(tiny), lora_config(max_steps=1), tmp_path, log_to_mlflow=False)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


# ------------------------------------------------------------------------------- checkpoint, kill, resume

_KILLED_RUN = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import torch
    from transformers import TrainerCallback
    from distill_ner.config import TrainConfig
    from distill_ner.records import SFTDataset
    from distill_ner.training.train import train_student

    torch.set_num_threads(1)
    sft_path, cfg_path, student, out, ckpt, marker = sys.argv[1:7]

    class StallAfterCheckpoint(TrainerCallback):
        # checkpoint-4 is on disk and step 5 is done (work the resumed run must redo): stall there
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 5:
                Path(marker).write_text("5")
                time.sleep(600)

    train_student(
        SFTDataset.model_validate_json(Path(sft_path).read_text()), student,
        TrainConfig.model_validate_json(Path(cfg_path).read_text()), Path(out),
        checkpoint_dir=Path(ckpt), log_to_mlflow=False, callbacks=[StallAfterCheckpoint()],
    )
    """
)


def test_checkpoint_kill_and_resume_matches_uninterrupted_run(tiny, sft, tmp_path):
    from safetensors.torch import load_file

    # 24 rows, batch 2 x accumulation 2: 6 steps an epoch, so the 8 steps cross an epoch boundary;
    # dropout is on, so the RNG state must be restored too
    data = SFTDataset(conversations=[], rows=sft.rows[:24])
    cfg = lora_config(
        max_steps=8,
        per_device_batch_size=2,
        gradient_accumulation_steps=2,
        checkpoint_every=2,
        lora_dropout=0.1,
        learning_rate=1e-2,
    )
    (tmp_path / "sft.json").write_text(data.model_dump_json())
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    ckpt, out, marker = tmp_path / "ckpt", tmp_path / "resumed", tmp_path / "stalled"

    with open(tmp_path / "child.log", "w") as log:
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _KILLED_RUN,
                str(tmp_path / "sft.json"),
                str(tmp_path / "cfg.json"),
                str(tiny),
                str(out),
                str(ckpt),
                str(marker),
            ],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 180
            while not marker.exists():
                assert child.poll() is None, (tmp_path / "child.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the child never reached step 5"
                time.sleep(0.1)
        finally:
            os.kill(child.pid, signal.SIGKILL)  # a real, unclean kill
            child.wait()
    assert child.returncode == -signal.SIGKILL
    assert last_checkpoint(ckpt) == ckpt / "checkpoint-4"
    assert not out.exists()  # a killed run leaves no result behind

    resumed = train_student(data, str(tiny), cfg, out, checkpoint_dir=ckpt, log_to_mlflow=False)
    assert resumed.metrics["resumed_from_step"] == 4
    assert resumed.metrics["steps"] == 8 and resumed.metrics["steps_this_run"] == 4
    assert sorted(p.name for p in ckpt.glob("checkpoint-*")) == ["checkpoint-6", "checkpoint-8"]  # limit 2

    reference = train_student(data, str(tiny), cfg, tmp_path / "uninterrupted", log_to_mlflow=False)
    got = load_file(out / "adapter_model.safetensors")
    want = load_file(tmp_path / "uninterrupted" / "adapter_model.safetensors")
    assert got.keys() == want.keys() and got
    for name in want:
        assert torch.allclose(got[name], want[name], atol=1e-5), name
    # the whole loss curve matches too (steps 1-4 come from the checkpoint's state)
    assert [h["step"] for h in resumed.history] == [h["step"] for h in reference.history]
    for a, b in zip(resumed.history, reference.history):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)

    # a different run must not pick these checkpoints up
    with pytest.raises(ValueError, match="different run.*learning_rate"):
        train_student(
            data,
            str(tiny),
            cfg.model_copy(update={"learning_rate": 5e-3}),
            tmp_path / "other",
            checkpoint_dir=ckpt,
            log_to_mlflow=False,
        )


# ------------------------------------------------------------------------------------------------- MLflow


def test_mlflow_records_params_and_loss_history(tiny, sft, tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setattr("mlflow.tracking._tracking_service.utils._tracking_uri", uri)
    # an explicit experiment id: mlflow.set_experiment would leave a global behind for other tests
    experiment_id = mlflow.MlflowClient().create_experiment("training-test")
    with mlflow.start_run(experiment_id=experiment_id) as run:
        result = train_student(sft, str(tiny), lora_config(max_steps=5), tmp_path / "out")
        assert mlflow.active_run().info.run_id == run.info.run_id  # we never end or replace the caller's run
    client = mlflow.MlflowClient()
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [1, 2, 3, 4, 5]
    assert [m.value for m in history] == pytest.approx([h["loss"] for h in result.history])
    assert len(client.get_metric_history(run.info.run_id, "train/learning_rate")) == 5
    data = client.get_run(run.info.run_id).data
    assert data.params["data_hash"] == result.data_hash
    assert data.params["train.method"] == "lora" and data.params["train.lora_r"] == "8"
    assert data.params["student"] == str(tiny.resolve()) and data.params["n_rows"] == str(len(sft.rows))
    assert data.metrics["train/tokens_per_s"] == pytest.approx(result.metrics["tokens_per_s"])
    assert "train/peak_cpu_rss_mb" in data.metrics
    every_experiment = [e.experiment_id for e in client.search_experiments()]
    assert len(client.search_runs(every_experiment)) == 1  # no run of its own, in any experiment


# ---------------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@needs_cuda
def test_qlora_trains_on_gpu(tiny, sft, tmp_path):
    pytest.importorskip("bitsandbytes")
    result = train_student(
        sft, str(tiny), lora_config(method="qlora", max_steps=12), tmp_path / "q", log_to_mlflow=False
    )
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.metrics["peak_gpu_mem_mb"] > 0
    load_model(str(tmp_path / "q"))


@pytest.mark.gpu
@needs_cuda
def test_auto_precision_on_gpu_is_half(tiny, sft, tmp_path):
    result = train_student(sft, str(tiny), lora_config(max_steps=4), tmp_path / "b", log_to_mlflow=False)
    record = json.loads((tmp_path / "b" / "training_config.json").read_text())
    assert record["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    assert result.metrics["peak_gpu_mem_mb"] > 0


_DDP_RUN = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from distill_ner.config import TrainConfig
    from distill_ner.records import SFTDataset
    from distill_ner.training.train import train_student

    sft_path, cfg_path, student, out = sys.argv[1:5]
    train_student(SFTDataset.model_validate_json(Path(sft_path).read_text()), student,
                  TrainConfig.model_validate_json(Path(cfg_path).read_text()), Path(out), log_to_mlflow=False)
    """
)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
@pytest.mark.parametrize("distributed", ["ddp", "fsdp"])
def test_multi_gpu_launch(tiny, sft, tmp_path, distributed):
    (tmp_path / "run.py").write_text(_DDP_RUN)
    (tmp_path / "sft.json").write_text(sft.model_dump_json())
    cfg = lora_config(max_steps=6, distributed=distributed, num_processes=2)
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--num_processes",
            "2",
            "--multi_gpu",
            str(tmp_path / "run.py"),
            str(tmp_path / "sft.json"),
            str(tmp_path / "cfg.json"),
            str(tiny),
            str(tmp_path / "out"),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
        timeout=600,
    )
    record = json.loads((tmp_path / "out" / "training_config.json").read_text())
    assert record["world_size"] == 2 and record["metrics"]["steps"] == 6
    load_model(str(tmp_path / "out"))


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tiny, sft, tmp_path, monkeypatch):
    """The train step's multi-process path for real: two ranks (gloo), each on its share of every batch."""
    from distill_ner.training.launch import train_distributed

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    config = lora_config(max_steps=6, distributed="ddp", num_processes=2, per_device_batch_size=2)
    result = train_distributed(sft, str(tiny), config, tmp_path / "out", cpu=True)
    assert isinstance(result, TrainResult) and result.metrics["steps"] == 6
    record = json.loads((tmp_path / "out" / "training_config.json").read_text())
    assert record["world_size"] == 2
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 6 and all(map(math.isfinite, losses))
    # one process with the same global batch (4) sees the same rows: the ranks split each batch, not copy it
    single = train_student(
        sft, str(tiny), lora_config(max_steps=6, per_device_batch_size=4), tmp_path / "one", log_to_mlflow=False
    )
    assert result.metrics["trained_tokens"] == single.metrics["trained_tokens"]
    assert losses[0] == pytest.approx(single.history[0]["loss"], rel=0.05)
    load_model(str(tmp_path / "out"))


def test_lora_on_the_last_layers_only_trains_those_layers(tiny_student) -> None:
    """`train.lora_last_layers`: adapters on the last N decoder layers only, so nothing below them needs a
    gradient (backpropagation stops there); more layers than the model has is a clear error."""
    import re

    from distill_ner.config import TrainConfig
    from distill_ner.training.train import _load_for_training

    model, _, _, _ = _load_for_training(
        str(tiny_student), TrainConfig(method="lora", lora_last_layers=1), "fp32", cuda=False, fsdp=False
    )
    total = model.config.num_hidden_layers
    layers = {
        int(m.group(1))
        for n, p in model.named_parameters()
        if p.requires_grad and (m := re.search(r"layers\.(\d+)\.", n))
    }
    assert layers == {total - 1}
    with pytest.raises(ValueError, match="lora_last_layers=99"):
        _load_for_training(
            str(tiny_student), TrainConfig(method="lora", lora_last_layers=99), "fp32", cuda=False, fsdp=False
        )
