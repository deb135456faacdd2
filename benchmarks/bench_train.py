"""Training throughput: the previous training path against today's, on the same rows, in one run.

    python benchmarks/bench_train.py [--rows 16] [--batch-size 2] [--tiny] [--sft demo_sft.json] [--threads N]
                                     [--lora-last-layers N] [--lora-dropout P] [--torch-compile]

Both arms run the real `training.train_student` (LoRA r 16 as the demo trains, length-grouped batches)
on the same model, rows and steps (one pass over the rows):
  before: the LM head and the loss over every position (full logits), fp32;
  now:    the LM head and the loss only at the supervised positions (train.supervised_logits_only), and
          `precision: auto` (bf16 autocast on a CPU with AMX-BF16, fp32 elsewhere).
The rows are demo-shaped (300-512 tokens, the last --target-share of each the answer, as the UniNER
conversations' short JSON answers are) or come from an SFTDataset JSON (--sft). Throughput counts real
tokens. It also measures this machine's matmul rate (1024x1024x4096) in each arm's precision and prints the
share of it each arm reaches, counting 4·N FLOPs a token (LoRA: forward and input gradients of the frozen
weights). Target: now / before >= 1.4 in fp32, >= 2 on a CPU with AMX-BF16; exits 1 below it.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distill_ner.console import quiet_defaults  # noqa: E402

quiet_defaults()
# peft 0.21 calls a transformers property deprecated in 5.x on every model it wraps: noise here
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")

from distill_ner.chat import IGNORE_INDEX  # noqa: E402
from distill_ner.config import TrainConfig  # noqa: E402
from distill_ner.records import SFTDataset, SFTRow  # noqa: E402
from distill_ner.training.train import train_student  # noqa: E402

MIN_RATIO_FP32 = 1.4
MIN_RATIO_BF16 = 2.0
DEFAULT_MODEL = REPO / ".cache/models/SmolLM2-135M-Instruct"


def demo_shaped_rows(
    n: int, vocab_size: int, min_len: int, max_len: int, seed: int, target_share: float
) -> list[SFTRow]:
    """Uniform lengths in [min_len, max_len]; the last `target_share` of each row is the target."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        length = rng.randint(min_len, max_len)
        ids = [rng.randrange(100, vocab_size) for _ in range(length)]
        prompt = int(length * (1 - target_share))
        rows.append(
            SFTRow(id=f"b{i}", conversation_id=f"b{i}", input_ids=ids, labels=[IGNORE_INDEX] * prompt + ids[prompt:])
        )
    return rows


def matmul_rate(dtype_name: str, repeats: int = 5) -> float:
    """FLOP/s of a 1024x1024 @ 1024x4096 matmul in fp32 or bf16 (best of `repeats`)."""
    import time

    import torch

    dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float32
    a, b = torch.randn(1024, 1024, dtype=dtype), torch.randn(1024, 4096, dtype=dtype)
    a @ b  # warm-up (oneDNN primitive creation)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * 1024 * 1024 * 4096 / best


def model_params(model: Path) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model))
    return sum(p.numel() for p in m.parameters())


def bare_loop(data: SFTDataset, model: Path, config: TrainConfig, compile_model: bool = False) -> dict[str, float]:
    """The same optimisation without transformers' Trainer: the model loaded and wrapped by the project's
    own code, the same batches (sampler and collator), supervised-only loss, AdamW at the same learning
    rate, autocast where the arm's precision says so. What the Trainer's loop costs on top is the gap.
    `compile_model`: the PEFT model through `torch.compile(dynamic=True)` (inductor), one untimed pass first
    so that compiling is not counted."""
    import time

    import torch

    from distill_ner.training.loss import supervised_loss
    from distill_ner.training.train import _load_for_training, resolve_precision
    from distill_ner.training.trainer import PadToLongestCollator, SeededBatchOrderSampler

    precision = resolve_precision(config.precision, cuda=False, bf16_supported=False, cpu_amx_bf16=cpu_amx())
    net, tokenizer, _, _ = _load_for_training(str(model), config, precision, cuda=False, fsdp=False)
    net.train()
    rows = [{"input_ids": r.input_ids, "labels": r.labels} for r in data.rows]
    order = SeededBatchOrderSampler([len(r["input_ids"]) for r in rows], config.per_device_batch_size, seed=0).order(0)
    collate = PadToLongestCollator(tokenizer.pad_token_id or 0)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=config.learning_rate)
    bs = config.per_device_batch_size
    if compile_model:
        net = torch.compile(net, dynamic=True)

    def one_pass() -> int:
        tokens = 0
        for start in range(0, len(order), bs):
            batch = collate([rows[i] for i in order[start : start + bs]])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = supervised_loss(net, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in net.parameters() if p.requires_grad], 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            tokens += int(batch["attention_mask"].sum())
        return tokens

    if compile_model:
        one_pass()  # compiles (every new shape class too); not timed
    started, cpu_started = time.perf_counter(), time.process_time()
    tokens = one_pass()
    runtime = time.perf_counter() - started
    return {
        "tokens_per_s": tokens / runtime,
        "train_runtime_s": runtime,
        "train_cpu_s": time.process_time() - cpu_started,
    }


def cpu_amx() -> bool:
    from distill_ner.training.train import cpu_info

    return cpu_info()["cpu_amx_bf16"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--tiny", action="store_true", help="the tiny random Llama instead of --model")
    parser.add_argument("--sft", type=Path, help="an SFTDataset JSON to take the rows from (first --rows)")
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--min-len", type=int, default=300)
    parser.add_argument("--max-len", type=int, default=512)
    parser.add_argument("--target-share", type=float, default=0.15, help="share of each row that is the answer")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--lora-last-layers",
        type=int,
        help="add an arm: as now, with LoRA on the last N decoder layers only (train.lora_last_layers)",
    )
    parser.add_argument(
        "--lora-dropout",
        type=float,
        help="add an arm: as now, with this train.lora_dropout (0: peft skips the dropout layer altogether)",
    )
    parser.add_argument(
        "--torch-compile",
        action="store_true",
        help="add an arm: the bare loop with the model through torch.compile(dynamic=True), compile time excluded",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from distill_ner.training.train import cpu_info, resolve_precision

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tiny:
        from distill_ner.models import make_tiny_model

        args.model = make_tiny_model(REPO / ".cache/models/tiny-random-llama")
    vocab = __import__("json").loads((args.model / "config.json").read_text())["vocab_size"]
    if args.sft:
        rows = SFTDataset.model_validate_json(args.sft.read_text()).rows[: args.rows]
    else:
        rows = demo_shaped_rows(args.rows, vocab, args.min_len, args.max_len, args.seed, args.target_share)
    rows = rows[: len(rows) - len(rows) % args.batch_size]  # whole batches: both arms see every row once
    data = SFTDataset(conversations=[], rows=rows)
    lengths = [len(r.input_ids) for r in rows]
    targets = sum(sum(1 for x in r.labels[1:] if x != IGNORE_INDEX) for r in rows)
    steps = len(rows) // args.batch_size
    real = sum(lengths)
    cpu = cpu_info()
    auto = resolve_precision("auto", cuda=False, bf16_supported=False, cpu_amx_bf16=cpu["cpu_amx_bf16"])
    print(
        f"model {args.model.name}, LoRA r {args.lora_r}; CPU {cpu['cpu_model']} (AMX-BF16: {cpu['cpu_amx_bf16']}), "
        f"{torch.get_num_threads()} threads; {len(rows)} rows, {steps} steps of {args.batch_size}; lengths "
        f"{min(lengths)}..{max(lengths)}, mean {real / len(rows):.0f}; {real} real tokens, {targets / real:.1%} targets"
    )

    base = dict(
        method="lora",
        max_steps=steps,
        per_device_batch_size=args.batch_size,
        learning_rate=2e-4,
        warmup_ratio=0.0,
        lora_r=args.lora_r,
        lora_alpha=2 * args.lora_r,
        seed=args.seed,
        logging_steps=max(1, steps),
    )
    arms = {
        "before: full logits, fp32": TrainConfig(**base, supervised_logits_only=False, precision="fp32"),
        f"now: supervised logits, auto ({auto})": TrainConfig(**base, supervised_logits_only=True, precision="auto"),
    }
    if args.lora_last_layers:
        arms[f"now, LoRA on the last {args.lora_last_layers} layers"] = TrainConfig(
            **base, supervised_logits_only=True, precision="auto", lora_last_layers=args.lora_last_layers
        )
    if args.lora_dropout is not None:
        arms[f"now, LoRA dropout {args.lora_dropout:g}"] = TrainConfig(
            **base, supervised_logits_only=True, precision="auto", lora_dropout=args.lora_dropout
        )
    rates = {p: matmul_rate(p) for p in {"fp32", auto}}
    n = model_params(args.model)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        for i, (name, config) in enumerate(arms.items()):
            result = train_student(data, str(args.model), config, Path(tmp) / f"arm{i}", log_to_mlflow=False)
            m = result.metrics
            assert m["trained_tokens"] == real, (m["trained_tokens"], real)  # same rows, each once
            precision = "fp32" if config.precision == "fp32" else auto
            share = 4 * n * m["tokens_per_s"] / rates[precision]
            results[name] = m
            print(
                f"  {name:40s} {m['train_runtime_s']:7.1f} s  {m['seconds_per_step']:6.2f} s/step  "
                f"{m['tokens_per_s']:8.1f} tokens/s  {real / m['train_cpu_s']:8.1f} per CPU-s  "
                f"{precision}: {share:5.1%} of the {rates[precision] / 1e9:.0f} GFLOP/s matmul rate  "
                f"loss {m['final_loss']:.4f}  peak RSS {m['peak_cpu_rss_mb']:.0f} MB"
            )
        bare = bare_loop(data, args.model, arms[list(arms)[1]])
        compiled = bare_loop(data, args.model, arms[list(arms)[1]], compile_model=True) if args.torch_compile else None
    print(
        f"  {'bare loop (no Trainer), as now':40s} {bare['train_runtime_s']:7.1f} s  "
        f"{bare['tokens_per_s']:8.1f} tokens/s  {real / bare['train_cpu_s']:8.1f} per CPU-s  "
        f"(the Trainer's loop keeps {list(results.values())[1]['tokens_per_s'] / bare['tokens_per_s']:.0%} of it)"
    )
    if compiled:
        print(
            f"  {'bare loop, torch.compile (compiled first)':40s} {compiled['train_runtime_s']:7.1f} s  "
            f"{compiled['tokens_per_s']:8.1f} tokens/s  {real / compiled['train_cpu_s']:8.1f} per CPU-s  "
            f"({compiled['tokens_per_s'] / bare['tokens_per_s']:.2f}x the eager bare loop)"
        )
    before, now = list(results.values())[:2]
    for name, m in list(results.items())[2:]:
        print(f"{name}: {m['tokens_per_s'] / now['tokens_per_s']:.2f}x now's tokens/s")
    ratio = now["tokens_per_s"] / before["tokens_per_s"]
    # on a shared machine the wall-clock ratio moves with the neighbours' load; the CPU-time one does not
    cpu_ratio = before["train_cpu_s"] / now["train_cpu_s"]
    target = MIN_RATIO_BF16 if auto == "bf16" else MIN_RATIO_FP32
    print(
        f"ratio (now / before, real tokens/s): {ratio:.2f}x wall clock, {cpu_ratio:.2f}x per CPU-second"
        f"  (target >= {target}x in {auto})"
    )
    return 0 if ratio >= target else 1


if __name__ == "__main__":
    sys.exit(main())
