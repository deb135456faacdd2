"""The names of the inference backends and GGUF types: one list for the engine, the configs and the command
line. A leaf module (no torch, no engine) so that the CLI can offer the choices without importing them."""

from __future__ import annotations

from typing import Literal, get_args

# auto: llama.cpp on a CPU where llama-cpp-python is installed (the fastest CPU path measured by
# benchmarks/bench_eval.py, same answers at f16), else transformers; see engine.resolve_backend
Backend = Literal["auto", "transformers", "vllm", "llamacpp"]
BACKENDS: tuple[str, ...] = get_args(Backend)

# f32/f16/q8_0 are written by llama.cpp's converter; q4_k_m by its quantizer
Quant = Literal["f32", "f16", "q8_0", "q4_k_m"]
QUANTS: tuple[str, ...] = get_args(Quant)
