"""Evaluation throughput on CPU: the inference engine against what a CPU user would run instead.

In one run, on the same queries (every sentence of a seeded benchmark subset asked all its types), the
same prompt token ids (conversations.query_prompt_ids), greedy, the same stop tokens and max_new_tokens:

  engine          distill_ner.engine.Engine, transformers backend (shared prefixes, continuous batching)
  engine-grounded the same engine with grounded decoding (answers held to JSON lists of spans of the
                  text); its time against the engine row is the cost of grounding (target <= 1.20x)
  generate        a batched, left-padded `model.generate` loop over the same loaded weights (what a
                  transformers user writes), --batch-size queries per call
  llamacpp-f16    the Engine's llamacpp backend on the model exported to GGUF f16 (distill-ner export):
                  what evaluation's default backend `auto` runs on a CPU where llama-cpp-python is installed
  llamacpp-f16-grounded  the same with grounded decoding
  llamacpp-q4_k_m the same on the GGUF quantised to q4_k_m

For each: seconds, queries/s, generated tokens/s, the share of the CPU's compute limit that the work
needed, i.e. (prompt + generated tokens) x 2 x parameters / (seconds x matmul FLOP/s), where the FLOP/s
is an fp32 torch matmul measured in this run; then the agreement of its answers with the engine's
(identical token ids) and its F1 on the benchmark next to the engine's (UniNER metric); a grounded row is compared with
engine-grounded where that row was run.

    python benchmarks/bench_eval.py                               # SmolLM2-135M-Instruct, 100 sentences
    python benchmarks/bench_eval.py --sentences 20 --max-new-tokens 64
    python benchmarks/bench_eval.py --tiny --rows engine,generate  # the tiny random Llama (seconds)

The llamacpp rows need llama-cpp-python (`pip install -e '.[llamacpp]'`); without it they are reported
as skipped. The GGUF files are written once under .cache/bench-gguf/ (delete it to export anew), except for a
registry URI (models:/, runs:/), exported anew on every run.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill_ner.cli import DEFAULT_STUDENT_DIR, TINY_STUDENT_DIR  # noqa: E402
from distill_ner.console import quiet_defaults  # noqa: E402

quiet_defaults()
ROWS = ("engine", "engine-grounded", "generate", "llamacpp-f16", "llamacpp-f16-grounded", "llamacpp-q4_k_m")


@dataclass
class Row:
    name: str
    seconds: float
    ids: list[list[int]]  # generated ids per query, without the stop token
    generated_tokens: int  # stop tokens included, as the engine counts them


def matmul_flops(seconds: float = 3.0, n: int = 1024) -> float:
    """fp32 FLOP/s of a square torch matmul on this machine now (torch's threads): the compute limit."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - t0)


def generate_loop(
    model, prompts: list[list[int]], max_new_tokens: int, stop_ids: list[int], pad_id: int, batch: int
) -> Row:
    """Batched `model.generate` with left padding, `batch` queries per call in query order."""
    import torch

    ids_out: list[list[int]] = []
    tokens = 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(prompts), batch):
            group = prompts[start : start + batch]
            width = max(map(len, group))
            input_ids = torch.full((len(group), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            for r, ids in enumerate(group):
                input_ids[r, width - len(ids) :] = torch.tensor(ids)
                mask[r, width - len(ids) :] = 1
            out = model.generate(
                input_ids,
                attention_mask=mask,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                eos_token_id=stop_ids,
                pad_token_id=pad_id,
            )[:, width:].tolist()
            for generated in out:
                cut = next((i for i, t in enumerate(generated) if t in stop_ids), None)
                ids_out.append(generated if cut is None else generated[:cut])
                tokens += len(generated) if cut is None else cut + 1
    return Row("generate", time.perf_counter() - t0, ids_out, tokens)


def engine_row(name: str, engine, queries, **kwargs) -> Row:
    t0 = time.perf_counter()
    generations = engine.generate(queries, progress=False, **kwargs)
    seconds = time.perf_counter() - t0
    return Row(name, seconds, [g.token_ids for g in generations], sum(g.n_generated for g in generations))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the tiny random Llama instead of SmolLM2-135M")
    parser.add_argument("--model", default=None, help="any HF model/adapter folder (overrides --tiny)")
    parser.add_argument("--benchmark", default="mit_restaurant")
    parser.add_argument("--sentences", type=int, default=100)
    parser.add_argument("--max-new-tokens", type=int, default=256, help="as in the UniNER evaluation")
    parser.add_argument("--batch-size", type=int, default=32, help="rows decoded together (every row type)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch and llama.cpp threads (default: all cores)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    parser.add_argument("--gguf-dir", default=str(ROOT / ".cache/bench-gguf"))
    args = parser.parse_args(argv)
    rows_wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    if unknown := sorted(set(rows_wanted) - set(ROWS)):
        parser.error(f"--rows: unknown {', '.join(unknown)}; choose from {', '.join(ROWS)}")

    import importlib.util

    import torch

    from distill_ner.engine.gguf import export_gguf
    from distill_ner.models import load_model, load_tokenizer, make_tiny_model
    from distill_ner.ner.benchmarks import load_benchmark
    from distill_ner.ner.evaluation import score_benchmark
    from distill_ner.ner.inference import NEREngine as Engine

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    if args.model:
        ref = args.model
    elif args.tiny:
        ref = str(make_tiny_model(ROOT / TINY_STUDENT_DIR))
    else:
        ref = str(ROOT / DEFAULT_STUDENT_DIR)
        if not Path(ref).exists():
            sys.exit(f"{ref} is missing: run `distill-ner fetch-student` first (or use --tiny)")

    model = load_model(ref)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.eval()
    tokenizer = load_tokenizer(ref)
    params = sum(p.numel() for p in model.parameters())  # tied embeddings counted once
    engine = Engine.from_model(
        model, tokenizer, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, name=ref
    )
    bench = load_benchmark(args.benchmark, args.sentences, args.seed)
    queries = [(s.text, t) for s in bench.sentences for t in bench.types]
    prompts = [engine.prompt_ids(text, t) for text, t in queries]
    prompt_tokens = sum(map(len, prompts))
    flops = matmul_flops()
    print(
        f"model {ref} ({params / 1e6:.1f} M parameters) | {bench.name}: {len(bench.sentences)} sentences x "
        f"{len(bench.types)} types = {len(queries)} queries, {prompt_tokens} prompt tokens | max_new_tokens "
        f"{args.max_new_tokens} | batch {args.batch_size} | threads {threads} | cpu cores {os.cpu_count()} | "
        f"fp32 matmul {flops / 1e9:.0f} GFLOP/s",
        flush=True,
    )

    llama_engines: dict[str, Engine] = {}
    for row in rows_wanted:
        if not row.startswith("llamacpp-"):
            continue
        if importlib.util.find_spec("llama_cpp") is None:
            print(f"{row}: skipped (llama-cpp-python is not installed: pip install -e '.[llamacpp]')", flush=True)
            continue
        quant = row.split("-")[1]
        if quant in llama_engines:
            continue
        # the whole reference in the name: `models:/a/1` and `models:/b/1` must not share a file
        gguf = Path(args.gguf_dir) / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', ref).strip('_')}-{quant}.gguf"
        # a registry URI is exported anew every run: an alias (or a re-created registry) can name other weights
        if ref.startswith(("models:/", "runs:/")) or not gguf.is_file():
            t0 = time.perf_counter()
            export_gguf(ref, gguf, quant, log_to_registry=False)
            print(
                f"{row}: exported {gguf} ({gguf.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
        llama_engines[quant] = Engine(
            str(gguf),
            backend="llamacpp",
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            threads=threads,
        )

    # warm-up: the first forward passes of a process are slow (allocator, kernel selection)
    engine.generate(queries[:8], progress=False, max_new_tokens=4)
    for llama in llama_engines.values():
        llama.generate(queries[:8], progress=False, max_new_tokens=4)

    results: list[Row] = []
    for name in rows_wanted:
        if name == "engine":
            results.append(engine_row("engine", engine, queries))
        elif name == "engine-grounded":
            engine.generate(
                queries[:8], progress=False, max_new_tokens=4, grounded=True
            )  # builds the vocabulary tables
            results.append(engine_row(name, engine, queries, grounded=True))
        elif name == "generate":
            results.append(
                generate_loop(
                    model, prompts, args.max_new_tokens, engine.stop_ids, tokenizer.pad_token_id, args.batch_size
                )
            )
        elif name.startswith("llamacpp-") and (llama := llama_engines.get(name.split("-")[1])) is not None:
            grounded = name.endswith("-grounded")
            if grounded:
                llama.generate(queries[:8], progress=False, max_new_tokens=4, grounded=True)
            results.append(engine_row(name, llama, queries, grounded=grounded))
        else:
            continue
        r = results[-1]
        print(f"  {r.name:16s} done in {r.seconds:.1f} s", flush=True)

    by_name = {r.name: r for r in results}

    def reference_of(row: Row) -> Row:
        """engine-grounded for a grounded row where it was run, else engine (else the first row)."""
        if row.name.endswith("-grounded") and "engine-grounded" in by_name:
            return by_name["engine-grounded"]
        return by_name.get("engine", results[0])

    # each row scored once: a reference row's F1 serves every row compared with it
    f1_of = {
        r.name: score_benchmark(bench, [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in r.ids])[0].f1
        for r in results
    }

    print("\n| row | seconds | queries/s | generated tok/s | share of compute limit | identical to | F1 | F1 delta |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        reference = reference_of(r)
        f1 = f1_of[r.name]
        same = sum(a == b for a, b in zip(r.ids, reference.ids))
        share = (prompt_tokens + r.generated_tokens) * 2 * params / (r.seconds * flops)
        print(
            f"| {r.name} | {r.seconds:.1f} | {len(queries) / r.seconds:.2f} | {r.generated_tokens / r.seconds:.1f} | "
            f"{100 * share:.1f} % | {same}/{len(queries)} {reference.name} | {f1:.4f} | {f1 - f1_of[reference.name]:+.4f} |"
        )
    for r in results:
        reference = reference_of(r)
        for ids, ref_ids, q in zip(r.ids, reference.ids, queries):
            if ids != ref_ids:
                print(
                    f"first difference, {r.name}: {q[1]!r} on {q[0][:60]!r}\n    {reference.name:8s} "
                    f"{tokenizer.decode(ref_ids)[:100]!r}\n    {r.name:8s} {tokenizer.decode(ids)[:100]!r}"
                )
                break


if __name__ == "__main__":
    main()
