"""Yardsticks that the tests and the benchmarks share (torch is imported only when they run)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any


def plain_greedy(
    model: Any, prompts: Sequence[Sequence[int]], max_new_tokens: int, stop_ids: Sequence[int], pad_id: int | None
) -> list[list[int]]:
    """The reference decoder: one prompt at a time through model.generate, greedy; ids without the final stop token."""
    import torch

    stop_ids = list(stop_ids)
    out: list[list[int]] = []
    with torch.inference_mode():
        for ids in prompts:
            generated = model.generate(
                torch.tensor([list(ids)]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                eos_token_id=stop_ids,
                pad_token_id=pad_id,
            )[0, len(ids) :].tolist()
            if generated and generated[-1] in stop_ids:
                generated = generated[:-1]
            out.append(generated)
    return out


@contextmanager
def one_thread() -> Iterator[None]:
    """One torch intra-op thread: a tiny model is all per-op overhead, and a second thread only waits
    (10x slower on a busy machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
