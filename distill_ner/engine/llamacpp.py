"""The `llamacpp` inference backend: greedy decoding of a GGUF file with llama.cpp (llama-cpp-python).

Imported only when selected (`pip install 'distill-ner[llamacpp]'`). It takes the SAME prompt token ids
as the other backends (conversations.query_prompt_ids with the HF tokenizer) and feeds them to
`llama_decode` as ids, so llama.cpp never renders or tokenises a prompt itself; it stops on the
project's stop token ids, never on llama.cpp's own end-of-generation set.

Batching uses llama.cpp's low-level API the way its `batched` example and its server do: one context with
`n_seq_max` sequences in a unified KV cache, and one `llama_decode` per step over a batch that holds,
for every running sequence, its next token, plus the prompts of the newly admitted questions. The
questions about one sentence share their token prefix: it is decoded once, its tokens tagged with the
sequence ids of all of those questions (each KV cell then serves all of them), then each question's own
suffix under its own id. Position ids are those of the unpadded prompt. A sequence whose row stops is
removed from the cache (`llama_memory_seq_rm`) and its id is given to the next waiting question
(continuous batching, as in the transformers backend).
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


def import_llama_cpp() -> Any:
    """The llama_cpp module, or an ImportError that says how to get it."""
    try:
        import llama_cpp
    except ImportError as e:
        raise ImportError(
            "backend='llamacpp' and GGUF quantisation need llama-cpp-python (`pip install 'distill-ner[llamacpp]'`, "
            "built from source: a C/C++ compiler and CMake, a few minutes). It is not installed in this "
            "environment: use backend='transformers'."
        ) from e
    # llama.cpp's own log lines go to stderr through this logger; keep only errors
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    return llama_cpp


@dataclass
class _Row:
    index: int  # into the caller's prompt list
    seq: int  # llama.cpp sequence id
    next_pos: int
    token: int = -1  # fed at the next step
    generated: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)


class LlamaCppBackend:
    """One GGUF model and a context of `n_seq` parallel sequences; `decode` runs chunks from plan_chunks."""

    def __init__(self, gguf_path: str, stop_ids: Sequence[int], n_seq: int = 16, threads: int | None = None) -> None:
        self.lib = import_llama_cpp()
        self.path = str(gguf_path)
        self.stop_ids = set(int(i) for i in stop_ids)
        self.n_seq = n_seq
        self.threads = threads or os.cpu_count() or 1
        lib = self.lib
        lib.llama_backend_init()
        params = lib.llama_model_default_params()
        params.n_gpu_layers = 0
        self.model = lib.llama_model_load_from_file(self.path.encode(), params)
        if not self.model:
            raise ValueError(f"{self.path}: llama.cpp could not load this GGUF file")
        self.n_vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self.model))
        self.n_params = int(lib.llama_model_n_params(self.model))
        self.ctx: Any = None
        self.n_ctx = 0
        self.merges = 0

    def close(self) -> None:
        if self.ctx:
            self.lib.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            self.lib.llama_model_free(self.model)
            self.model = None

    def __del__(self) -> None:  # the C objects are not garbage collected by Python
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: the library may be gone already
            pass

    def _context(self, n_ctx: int) -> Any:
        """A context with room for n_ctx KV cells (made anew only when a larger one is needed)."""
        lib = self.lib
        if self.ctx and self.n_ctx >= n_ctx:
            lib.llama_memory_clear(lib.llama_get_memory(self.ctx), True)
            return self.ctx
        if self.ctx:
            lib.llama_free(self.ctx)
            self.ctx = None
        params = lib.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_ctx  # any one step (prompts of the admitted questions + one token per row) fits
        params.n_ubatch = min(n_ctx, 512)
        params.n_seq_max = self.n_seq
        params.n_threads = params.n_threads_batch = self.threads
        params.kv_unified = True  # a shared prefix's cells serve every sequence tagged on them
        params.no_perf = True
        self.ctx = lib.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not make a context of {n_ctx} cells for {self.path}")
        self.n_ctx = n_ctx
        return self.ctx

    def decode(
        self,
        chunks: Sequence[Any],
        max_new_tokens: int,
        on_finish: Callable[[Any], None] | None = None,
        constraints: Sequence[Any | None] | None = None,
    ) -> dict[int, Any]:
        """Greedy results by prompt index for inference._Chunk's (prefix, rows, suffixes);
        `constraints[index]`, where given, restricts what that prompt's row may emit (common.RowConstraint),
        by the same rule as the transformers backend."""
        import numpy as np

        from distill_ner.engine.common import Generation, constrained_argmax

        lib = self.lib
        if any(len(c.rows) > self.n_seq for c in chunks):
            raise ValueError(f"a chunk has more rows than the {self.n_seq} sequences of the context")
        longest = max((len(c.prefix) + max(len(s) for s in c.suffixes) for c in chunks), default=1)
        # worst case: every sequence holds a whole prompt of its own and all its new tokens
        ctx = self._context(self.n_seq * (longest + max_new_tokens) + 16)
        memory = lib.llama_get_memory(ctx)
        capacity = self.n_ctx
        batch = lib.llama_batch_init(capacity, 0, self.n_seq)
        results: dict[int, Generation] = {}
        free = list(range(self.n_seq - 1, -1, -1))
        pending = deque(chunks)
        running: list[_Row] = []
        self.merges = 0
        try:
            while pending or running:
                n = 0
                wanted: list[tuple[int, _Row]] = []  # batch position whose logits give the row's next token

                def add(token: int, pos: int, seqs: Sequence[int], logits: bool) -> None:
                    nonlocal n
                    batch.token[n] = token
                    batch.pos[n] = pos
                    batch.n_seq_id[n] = len(seqs)
                    for k, s in enumerate(seqs):
                        batch.seq_id[n][k] = s
                    batch.logits[n] = 1 if logits else 0
                    n += 1

                # one token for every running row
                for row in running:
                    add(row.token, row.next_pos, [row.seq], True)
                    wanted.append((n - 1, row))
                    row.next_pos += 1
                # then the prompts of the questions that fit into the free sequences
                admitted, decoding = 0, bool(running)
                while pending and len(pending[0].rows) <= len(free):
                    chunk = pending.popleft()
                    rows = [_Row(index=i, seq=free.pop(), next_pos=0) for i in chunk.rows]
                    seqs = [r.seq for r in rows]
                    for pos, token in enumerate(chunk.prefix):
                        add(token, pos, seqs, False)
                    for row, suffix in zip(rows, chunk.suffixes):
                        for j, token in enumerate(suffix):
                            add(token, len(chunk.prefix) + j, [row.seq], j == len(suffix) - 1)
                        wanted.append((n - 1, row))
                        row.next_pos = len(chunk.prefix) + len(suffix)
                    admitted += 1
                    running.extend(rows)
                self.merges += int(admitted > 0 and decoding)
                batch.n_tokens = n
                status = lib.llama_decode(ctx, batch)
                if status != 0:
                    raise RuntimeError(
                        f"llama_decode failed with status {status} ({n} tokens, context {capacity} cells)"
                    )
                leaving: list[_Row] = []
                for position, row in wanted:
                    logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, position), shape=(self.n_vocab,))
                    token = int(logits.argmax())
                    constraint = constraints[row.index] if constraints is not None else None
                    if constraint is not None:
                        picks = [token]
                        remaining = [max_new_tokens - len(row.generated)]
                        constrained_argmax(logits[None, :], picks, [constraint], remaining, self.stop_ids)
                        token = picks[0]
                    is_stop = token in self.stop_ids
                    if not is_stop:
                        row.generated.append(token)
                        top = float(logits.max())
                        log_total = top + float(np.log(np.exp(logits - top).sum()))
                        row.logprobs.append(float(logits[token]) - log_total)
                    if is_stop or len(row.generated) >= max_new_tokens:
                        results[row.index] = Generation(
                            token_ids=row.generated, stopped=is_stop, token_logprobs=row.logprobs
                        )
                        if on_finish is not None:
                            on_finish(results[row.index])
                        leaving.append(row)
                    else:
                        row.token = token
                for row in leaving:
                    lib.llama_memory_seq_rm(memory, row.seq, -1, -1)
                    free.append(row.seq)
                    running.remove(row)
        finally:
            lib.llama_batch_free(batch)
        return results
