"""Evaluation throughput: the inference engine vs a plain one-query-at-a-time `model.generate` loop.

Both decode greedily with the same stop tokens and max_new_tokens, from the same prompts
(conversations.query_prompt_ids) on the very same loaded weights, over the same queries: every
sentence of a seeded mit_restaurant subset asked all 8 types. Prints both times, the speed ratio
(target >= 4x on CPU) and the share of identical answers (target 100 %, compared as token ids).

    python benchmarks/bench_eval.py                    # SmolLM2-135M-Instruct, 100 sentences (800 queries)
    python benchmarks/bench_eval.py --tiny             # the tiny random Llama (seconds)
    python benchmarks/bench_eval.py --sentences 20 --max-new-tokens 64

The plain loop is slow (about 0.5 queries/s for SmolLM2 on 2 cores), so by default it runs on the first
15 sentences only (120 queries, a few minutes) and its time is EXTRAPOLATED to N, printed as such;
answers are then compared on those 15. `--full` runs it on all N sentences (about 25 minutes for 100).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill_ner.cli import DEFAULT_STUDENT_DIR, TINY_STUDENT_DIR  # noqa: E402
from distill_ner.console import quiet_defaults  # noqa: E402
from distill_ner.testing import plain_greedy  # noqa: E402

quiet_defaults()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the tiny random Llama instead of SmolLM2-135M")
    parser.add_argument("--model", default=None, help="any model reference (overrides --tiny)")
    parser.add_argument("--benchmark", default="mit_restaurant")
    parser.add_argument("--sentences", type=int, default=100)
    parser.add_argument("--plain-sentences", type=int, default=15, help="time the plain loop on the first K sentences and extrapolate")
    parser.add_argument("--full", action="store_true", help="run the plain loop on all N sentences (no extrapolation)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="as in the UniNER evaluation")
    parser.add_argument("--batch-size", type=int, default=32, help="as in configs/evaluate_*_cpu.yaml")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args(argv)

    import torch

    from distill_ner.models import load_model, load_tokenizer, make_tiny_model
    from distill_ner.ner.benchmarks import load_benchmark
    from distill_ner.ner.inference import NEREngine

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model:
        ref = args.model
    elif args.tiny:
        ref = str(make_tiny_model(ROOT / TINY_STUDENT_DIR))
    else:
        ref = str(ROOT / DEFAULT_STUDENT_DIR)
        if not Path(ref).exists():
            sys.exit(f"{ref} is missing: run `distill-ner fetch-student` first (or use --tiny)")

    model = load_model(ref)
    tokenizer = load_tokenizer(ref)
    engine = NEREngine.from_model(model, tokenizer, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, name=ref)
    bench = load_benchmark(args.benchmark, args.sentences, args.seed)
    queries = [(s.text, t) for s in bench.sentences for t in bench.types]
    k = len(bench.sentences) if args.full else min(args.plain_sentences, len(bench.sentences))
    n_plain = k * len(bench.types)
    prompts = [engine.prompt_ids(text, t) for text, t in queries]
    print(
        f"model {ref} | {bench.name}: {len(bench.sentences)} sentences x {len(bench.types)} types = {len(queries)} queries | "
        f"max_new_tokens {args.max_new_tokens} | batch {args.batch_size} | torch threads {torch.get_num_threads()} | "
        f"cpu cores {os.cpu_count()} | mean prompt {sum(map(len, prompts)) / len(prompts):.1f} tokens",
        flush=True,
    )

    # warm-up: the first forward passes of a process are slow (allocator, kernel selection)
    engine.generate(queries[:8], progress=False, max_new_tokens=4)
    plain_greedy(model, prompts[:1], 4, engine.stop_ids, engine.tokenizer.pad_token_id)

    t0 = time.perf_counter()
    generations = engine.generate(queries, progress=True)
    t_engine = time.perf_counter() - t0
    tokens = sum(g.n_generated for g in generations)
    print(f"engine : {t_engine:8.1f} s  {len(queries) / t_engine:6.2f} queries/s  {tokens / t_engine:7.1f} generated tok/s", flush=True)

    t0 = time.perf_counter()
    reference = plain_greedy(model, prompts[:n_plain], args.max_new_tokens, engine.stop_ids, engine.tokenizer.pad_token_id)
    t_plain_measured = time.perf_counter() - t0
    t_plain = t_plain_measured * len(queries) / n_plain
    note = "" if n_plain == len(queries) else f"  (EXTRAPOLATED from {n_plain} queries measured in {t_plain_measured:.1f} s)"
    print(f"plain  : {t_plain:8.1f} s  {len(queries) / t_plain:6.2f} queries/s{note}", flush=True)

    same_ids = sum(g.token_ids == r for g, r in zip(generations, reference))
    same_text = sum(
        g.text.strip() == tokenizer.decode(r, skip_special_tokens=True).strip() for g, r in zip(generations, reference)
    )
    stopped = sum(g.stopped for g in generations)
    print(f"speed ratio (plain / engine): {t_plain / t_engine:.2f}x   (target >= 4x on CPU)")
    print(f"identical answers: {same_ids}/{n_plain} = {100 * same_ids / n_plain:.1f} % token ids, "
          f"{100 * same_text / n_plain:.1f} % text   (target 100 %)")
    print(f"engine rows ended by a stop token: {stopped}/{len(generations)}; generated tokens {tokens}")
    for g, r, q in zip(generations, reference, queries):
        if g.token_ids != r:
            print(f"  differs: {q[1]!r} on {q[0][:60]!r}\n    engine {g.text[:120]!r}\n    plain  {tokenizer.decode(r)[:120]!r}")
            break


if __name__ == "__main__":
    main()
