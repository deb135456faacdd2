"""CPU training under contention: tokens/s with one busy process pinned to a core vs without it.

Each measurement runs in a fresh process (the OpenMP runtime reads its settings once, at start):
a few training steps (forward, backward, AdamW) of the student on fixed random token batches, by
default as the demo trains it (LoRA r 16 on SmolLM2's projections, 2 rows of ~430 tokens a step).
The busy process is `taskset -c 0` on a Python busy loop, so one of the cores is taken. Prints, per
setting, tokens/s idle and loaded and the ratio loaded/idle; proportional degradation on 2 cores
is about 0.5, the target is >= 0.4. Settings compared: the OpenMP defaults (threads spin while they
wait for each other), a short spin, and the project's default (distill_ner/__init__.py: passive waiting).

    python benchmarks/bench_cpu_contention.py [--model PATH] [--method lora|full] [--steps 6] [--batch 2] [--seq 432]

The figures are only meaningful on an otherwise idle machine; on a shared one they are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / ".cache/models/SmolLM2-135M-Instruct"
SETTINGS = {
    "OpenMP defaults (spin, then sleep)": {"GOMP_SPINCOUNT": "300000"},  # libgomp's documented default
    "short spin (GOMP_SPINCOUNT=10000)": {"GOMP_SPINCOUNT": "10000"},
    "project default (passive)": {},  # distill_ner/__init__.py: OMP_WAIT_POLICY=PASSIVE
}


def child(model_path: str, method: str, steps: int, batch: int, seq: int) -> None:
    sys.path.insert(0, str(REPO))
    import torch
    from transformers import AutoModelForCausalLM

    import distill_ner  # noqa: F401  (applies the project's threading defaults before torch starts)

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        from distill_ner.config import TrainConfig
        from distill_ner.training.train import target_modules_for

        train = TrainConfig()  # LoRA r 16, alpha 32, dropout 0.05: the demo's settings
        lora = LoraConfig(
            r=train.lora_r,
            lora_alpha=train.lora_alpha,
            lora_dropout=train.lora_dropout,
            target_modules=target_modules_for(model.config.model_type),
        )
        model = get_peft_model(model, lora)
    model.train()
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ids = torch.randint(100, model.config.vocab_size, (batch, seq))

    def step() -> None:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)

    step()  # warm-up: allocations, kernels
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "tokens_per_s": steps * batch * seq / seconds,
                "threads": torch.get_num_threads(),
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
                "gomp_spincount": os.environ.get("GOMP_SPINCOUNT", ""),
            }
        )
    )


def measure(env_extra: dict[str, str], args: argparse.Namespace) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    env.update(env_extra)
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            "--model",
            str(args.model),
            "--method",
            args.method,
            "--steps",
            str(args.steps),
            "--batch",
            str(args.batch),
            "--seq",
            str(args.seq),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--method", choices=("lora", "full"), default="lora")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=432)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(str(args.model), args.method, args.steps, args.batch, args.seq)
        return
    print(
        f"model {args.model.name} ({args.method}), {args.steps} steps of {args.batch}x{args.seq} tokens, "
        f"{os.cpu_count()} CPUs"
    )
    for name, env_extra in SETTINGS.items():
        idle = measure(env_extra, args)
        busy = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(1.0)
            loaded = measure(env_extra, args)
        finally:
            busy.kill()
            busy.wait()
        ratio = loaded["tokens_per_s"] / idle["tokens_per_s"]
        print(
            f"{name:28s} threads {idle['threads']}  idle {idle['tokens_per_s']:7.1f} tok/s  "
            f"one core busy {loaded['tokens_per_s']:7.1f} tok/s  ratio {ratio:.2f}"
        )


if __name__ == "__main__":
    main()
