"""Greedy inference for any student: already tokenised prompts in, generated token ids and text out.

Recipes render their prompts with `distill_ner.chat` (the code path training uses) and hand the token ids
here, so a student sees at test time exactly the token prefix it was trained on. Stop tokens are the
model's eos ids and the chat template's end-of-turn token, or whatever the caller supplies.

Two backends:

* ``transformers`` (CPU or one GPU). Prompts in one group (e.g. all questions about one sentence) share
  a long prompt prefix (system prompt, passage turn, ...). For each sentence the
  longest common *token* prefix of its prompts is run once; its KV cache is then copied to one row per
  question and every question is decoded as one batch from there. Several sentences share a batch:
  row layout in the KV cache is

      [prefix of the row's sentence][hole][question suffix][generated tokens...]

  where the hole is padding up to the longest prefix of the sentences admitted with it plus left
  padding up to the longest suffix. The hole has attention mask 0 and every real token gets the
  position id it would have in the unpadded prompt, so each row computes the same function as a lone
  `model.generate` call; only float rounding can differ (other reduction orders), and the tests and
  benchmarks/bench_eval.py check that greedy answers come out identical. Prefixes are padded on the
  right (not the left) so that no query row is ever fully masked. A row leaves the batch as soon as it
  emits an end-of-turn/eos token, and the freed rows are refilled with the next sentences' questions
  (continuous batching: the newcomers' caches are left-padded to the running batch's length and
  stacked onto it), so one long answer does not decode alone while the others wait.

* ``vllm`` (GPU), imported only when selected: prompts go in as token ids from the same
  `query_prompt_ids`, greedy `SamplingParams`, prefix caching on (vLLM shares the common prefix by
  itself). A LoRA adapter folder is MERGED into its base once (cached in a temp folder keyed by the
  adapter's content) and the merged folder is served, rather than using `LoRARequest`: evaluation
  serves one model at a time, a merged model needs no `enable_lora`/`max_lora_rank` tuning, works for
  every target module (vLLM's LoRA kernels do not cover e.g. `modules_to_save` embeddings), and runs
  at base-model speed.

* ``llamacpp`` (CPU), imported only when selected: a GGUF file run by llama.cpp (distill_ner.engine.llamacpp),
  fed the same prompt token ids, with parallel sequences sharing each sentence's prefix in its KV cache.
  Given a .gguf file it runs that file (its tokenizer read from the GGUF by transformers); given an HF
  folder, adapter or models:/ URI it runs that model converted once to GGUF at `gguf_quant` (f16 by
  default; cached under the temp folder by content, see distill_ner.engine.gguf.cached_gguf) and tokenises
  with the folder's own tokenizer.

Constrained rows (`generate_ids(..., constraints=...)`, one `RowConstraint` per prompt, e.g. grounded
answers): each step the row's argmax is checked against its constraint and, only where it is rejected,
replaced by the argmax over the tokens the constraint allows; rows of different sentences carry their own
constraint in one batch. vLLM applies the same rule through its per-request logits processors where the
installed vLLM has them (V0); otherwise a constrained call is a clear NotImplementedError.

The transformers backend also merges an adapter into its base on load (speed; the reference loops in
tests and benchmarks use the same merged model object).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from collections import deque
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill_ner.backends import BACKENDS, Backend
from distill_ner.engine.common import (  # noqa: F401  (re-exported: the engine's public names)
    Generation,
    RowConstraint,
    _generation_config,
    constrained_argmax,
    save_merged_adapter,
    stop_token_ids,
)

logger = logging.getLogger(__name__)

# generation_config fields that would make a plain `model.generate` differ from pure greedy argmax
_NON_GREEDY_FIELDS = {
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_repetition_penalty": 1.0,
    "length_penalty": 1.0,
    "bad_words_ids": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "min_new_tokens": None,
    "min_length": 0,
}


@dataclass
class EngineStats:
    queries: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0
    chunks: int = 0  # prefill groups (one sentence's questions each)
    merges: int = 0  # admissions into a batch that was still decoding (continuous batching)

    @property
    def queries_per_s(self) -> float:
        return self.queries / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds > 0 else 0.0


# --------------------------------------------------------------------------------------- helpers


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of token sequences."""
    if not sequences:
        return 0
    first = sequences[0]
    n = min(len(s) for s in sequences)
    for i in range(n):
        token = first[i]
        if any(s[i] != token for s in sequences):
            return i
    return n


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_backend(backend: str, model_ref: str = "", device: str | None = None) -> str:
    """The backend that `auto` stands for here; any other name is returned as it is.

    A .gguf file runs on llama.cpp. On a GPU, transformers (vLLM only when asked for: it needs its own
    server-sized memory settings). On a CPU, llama.cpp where llama-cpp-python is installed: at f16 it gives
    the same greedy answers as the transformers engine but over twice as fast (README, bench_eval.py);
    without it, transformers."""
    if backend != "auto":
        return backend
    if model_ref.endswith(".gguf"):
        return "llamacpp"
    if (device or _default_device()).startswith("cuda"):
        return "transformers"
    import importlib.util

    return "llamacpp" if importlib.util.find_spec("llama_cpp") is not None else "transformers"


def _merged_adapter_dir(adapter_dir: str) -> str:
    """An adapter merged into its base, saved once per adapter content under the temp folder."""
    from distill_ner.fingerprint import fingerprint_paths

    key = hashlib.sha256(f"{Path(adapter_dir).resolve()}\x00{fingerprint_paths([adapter_dir])}".encode()).hexdigest()[
        :16
    ]
    dest = Path(tempfile.gettempdir()) / "distill_ner_merged" / key
    if (dest / "config.json").exists():
        return str(dest)
    return str(save_merged_adapter(adapter_dir, dest))


# ---------------------------------------------------------------------------------------- plans


def group_indices(keys: Iterable[Hashable]) -> list[list[int]]:
    """Indices of equal keys together, groups in order of first appearance: `groups` for generate_ids."""
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return list(groups.values())


@dataclass
class _Chunk:
    """Questions about one sentence that enter decoding together, with their shared token prefix."""

    prefix: list[int]
    rows: list[int]  # indices into the caller's prompt list
    suffixes: list[list[int]]


def plan_chunks(prompts: Sequence[Sequence[int]], groups: Sequence[Sequence[int]], batch_size: int) -> list[_Chunk]:
    """Cut sentence groups into chunks of at most batch_size rows, each with its shared prefix.

    The shared prefix of a chunk stops at least one token before its shortest prompt, so every row has a
    non-empty suffix whose last position yields the first generated token. Chunks come longest prompt
    first, so rows decoded together have similar lengths (less padding).
    """
    chunks: list[_Chunk] = []
    for group in groups:
        for start in range(0, len(group), batch_size):
            rows = list(group[start : start + batch_size])
            seqs = [prompts[i] for i in rows]
            n = min(common_prefix_length(seqs), min(len(s) for s in seqs) - 1)
            chunks.append(_Chunk(prefix=list(seqs[0][:n]), rows=rows, suffixes=[list(s[n:]) for s in seqs]))
    chunks.sort(key=lambda c: -(len(c.prefix) + max(len(s) for s in c.suffixes)))
    return chunks


# ----------------------------------------------------------------------------- transformers path


@dataclass
class _Running:
    """Rows decoded together: their KV cache (rows x cache columns), attention mask over the cache
    columns, the position id and token each row feeds next, and which query each row answers."""

    cache: Any
    mask: Any  # [rows, columns] long, 0 on padding holes
    next_pos: Any  # [rows]
    tokens: Any  # [rows]
    rows: list[int]

    @property
    def size(self) -> int:
        return len(self.rows)


class _TransformersBackend:
    """Greedy decoding with shared sentence prefixes and continuous batching.

    Queue of chunks (one sentence's questions each). Whenever a chunk fits in the free rows of the
    running batch it is admitted: its prefix is run once, its cache copied to one row per question, its
    suffixes run, and the new rows are merged into the running batch (cache columns left-padded to a
    common length; padding has mask 0). Rows leave as soon as they stop. Refilling freed rows this way
    keeps the batch full although answer lengths vary (one 256-token answer no longer decodes alone).
    Merging edits the cache tensors of `DynamicLayer`s directly; for any other cache layout (sliding
    window, linear attention) a new group of chunks is only admitted when the batch is empty.

    Caveat for sliding-window layers: their window is counted in cache columns, holes included, so a
    row whose real tokens span nearly a whole window would see a few fewer of them than in a lone
    `generate` call. UniNER prompts (a sentence plus one question) are far shorter than such windows.
    """

    def __init__(self, model: Any, tokenizer: Any, stop_ids: Sequence[int], device: str, refill: bool = True) -> None:
        import inspect

        self.refill = refill
        self.model = model
        self.tokenizer = tokenizer
        self.stop_ids = list(stop_ids)
        self.device = device
        # transformers 5.x renamed `past_key_values` to `cache` (the old name is deprecated)
        params = inspect.signature(model.forward).parameters
        self.cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (self.stop_ids or [0])[0]
        self.merges = 0  # of the last decode() call

    # ------------------------------------------------------------------------------- model calls

    def _forward(self, input_ids: Any, attention_mask: Any, position_ids: Any, cache: Any) -> Any:
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,  # only the last position's logits are needed (the lm_head is big)
            **{self.cache_kwarg: cache},
        )
        return out.logits[:, -1, :]

    def _prefill(self, chunks: Sequence[_Chunk]) -> tuple[_Running, Any]:
        """Run the chunks' prompts; returns their rows (cache filled) and the logits of their first token.

        Row layout in the cache: [prefix of the row's sentence][pad to the longest prefix][left pad]
        [question suffix]. Prefixes are padded on the right so no query row is ever fully masked.
        """
        import torch
        from transformers import DynamicCache

        device = self.device
        n_chunks = len(chunks)
        prefix_lengths = [len(c.prefix) for c in chunks]
        p_max = max(prefix_lengths)
        row_chunk = [ci for ci, c in enumerate(chunks) for _ in c.rows]
        suffixes = [s for c in chunks for s in c.suffixes]
        n_rows = len(suffixes)
        l_max = max(len(s) for s in suffixes)

        cache = DynamicCache(config=self.model.config)
        # 1) each sentence's prefix once, right-padded to the longest prefix of the group
        if p_max > 0:
            ids = torch.full((n_chunks, p_max), self.pad_id, dtype=torch.long)
            prefix_mask = torch.zeros((n_chunks, p_max), dtype=torch.long)
            for ci, c in enumerate(chunks):
                ids[ci, : len(c.prefix)] = torch.tensor(c.prefix, dtype=torch.long)
                prefix_mask[ci, : len(c.prefix)] = 1
            # pads continue the count; they are masked out as keys, so their positions never matter
            positions = torch.arange(p_max, dtype=torch.long).unsqueeze(0).expand(n_chunks, -1)
            self._forward(ids.to(device), prefix_mask.to(device), positions.to(device), cache)
            # 2) one cache row per question
            index = torch.tensor(row_chunk, dtype=torch.long, device=device)
            cache.batch_select_indices(index)
            mask = prefix_mask.to(device)[index]
        else:
            mask = torch.zeros((n_rows, 0), dtype=torch.long, device=device)

        # 3) the question suffixes, left-padded so that every row's last token is the last column
        ids = torch.full((n_rows, l_max), self.pad_id, dtype=torch.long)
        suffix_mask = torch.zeros((n_rows, l_max), dtype=torch.long)
        positions = torch.zeros((n_rows, l_max), dtype=torch.long)
        for r, suffix in enumerate(suffixes):
            n, p = len(suffix), prefix_lengths[row_chunk[r]]
            ids[r, l_max - n :] = torch.tensor(suffix, dtype=torch.long)
            suffix_mask[r, l_max - n :] = 1
            # real tokens continue their own prefix; the padding slots get the first suffix position
            positions[r, l_max - n :] = torch.arange(p, p + n)
            positions[r, : l_max - n] = p
        mask = torch.cat([mask, suffix_mask.to(device)], dim=1)
        positions = positions.to(device)
        logits = self._forward(ids.to(device), mask, positions, cache)
        rows = [r for c in chunks for r in c.rows]
        running = _Running(cache=cache, mask=mask, next_pos=positions[:, -1] + 1, tokens=None, rows=rows)
        return running, logits

    # ----------------------------------------------------------------------- batch bookkeeping

    @staticmethod
    def _mergeable(cache: Any) -> bool:
        from transformers.cache_utils import DynamicLayer

        layers = getattr(cache, "layers", None)
        return bool(layers) and all(type(layer) is DynamicLayer and layer.is_initialized for layer in layers)

    @staticmethod
    def _merge(a: _Running | None, b: _Running | None) -> _Running | None:
        """One batch from two: cache columns left-padded to the longer one (zeros, mask 0), rows stacked."""
        import torch.nn.functional as F

        if a is None or b is None:
            return a or b
        import torch

        t_a, t_b = a.mask.shape[1], b.mask.shape[1]
        t = max(t_a, t_b)
        for la, lb in zip(a.cache.layers, b.cache.layers):
            # [rows, heads, columns, dim]: pad the columns dimension at the front
            la.keys = torch.cat([F.pad(la.keys, (0, 0, t - t_a, 0)), F.pad(lb.keys, (0, 0, t - t_b, 0))], dim=0)
            la.values = torch.cat([F.pad(la.values, (0, 0, t - t_a, 0)), F.pad(lb.values, (0, 0, t - t_b, 0))], dim=0)
        a.mask = torch.cat([F.pad(a.mask, (t - t_a, 0)), F.pad(b.mask, (t - t_b, 0))], dim=0)
        a.next_pos = torch.cat([a.next_pos, b.next_pos])
        a.tokens = torch.cat([a.tokens, b.tokens])
        a.rows = a.rows + b.rows
        return a

    @staticmethod
    def _compact(run: _Running) -> None:
        """Drop leading cache columns that no remaining row attends to (left behind by departed rows)."""
        used = run.mask.sum(dim=0) > 0
        lead = int(used.int().argmax()) if bool(used.any()) else 0
        if lead > 0:
            for layer in run.cache.layers:
                layer.keys = layer.keys[:, :, lead:, :]
                layer.values = layer.values[:, :, lead:, :]
            run.mask = run.mask[:, lead:]

    def decode(
        self,
        chunks: Sequence[_Chunk],
        max_new_tokens: int,
        batch_size: int,
        on_finish: Any = None,
        constraints: Sequence[RowConstraint | None] | None = None,
    ) -> dict[int, Generation]:
        """Greedy answers for every row of the chunks (each chunk has at most batch_size rows);
        `constraints[row]`, where given, restricts what that row may emit (see RowConstraint)."""
        import torch

        stop = torch.tensor(self.stop_ids or [-1], dtype=torch.long, device=self.device)
        generated: dict[int, list[int]] = {}
        logprobs: dict[int, list[float]] = {}
        results: dict[int, Generation] = {}
        self.merges = 0
        pending = deque(chunks)
        run: _Running | None = None
        mergeable = self.refill

        def choose(batch: _Running, logits: Any) -> Any:
            """Greedy next token per row: the argmax, or the best token the row's constraint allows."""
            tokens = logits.argmax(dim=-1)
            if constraints is None:
                return tokens
            row_constraints = [constraints[row] for row in batch.rows]
            if all(c is None for c in row_constraints):
                return tokens
            picks = tokens.tolist()
            remaining = [max_new_tokens - len(generated.get(row, ())) for row in batch.rows]
            if constrained_argmax(logits, picks, row_constraints, remaining, self.stop_ids):
                tokens = torch.tensor(picks, dtype=tokens.dtype, device=tokens.device)
            return tokens

        def advance(batch: _Running, logits: Any) -> _Running | None:
            """Pick and record each row's new token; rows that stop or reach max_new_tokens leave the batch."""
            tokens = choose(batch, logits)
            # the taken token's log-probability under the full softmax (a constraint does not renormalise it)
            token_logprobs = (
                logits.gather(1, tokens.unsqueeze(1)).squeeze(1).float() - torch.logsumexp(logits.float(), dim=-1)
            ).tolist()
            done = torch.isin(tokens, stop).tolist()
            keep: list[int] = []
            for b, (row, token, is_stop) in enumerate(zip(batch.rows, tokens.tolist(), done)):
                ids = generated.setdefault(row, [])
                row_logprobs = logprobs.setdefault(row, [])
                if not is_stop:
                    ids.append(token)
                    row_logprobs.append(token_logprobs[b])
                if is_stop or len(ids) >= max_new_tokens:
                    results[row] = Generation(token_ids=ids, stopped=bool(is_stop), token_logprobs=row_logprobs)
                    if on_finish is not None:
                        on_finish(results[row])
                else:
                    keep.append(b)
            if not keep:
                return None
            if len(keep) < batch.size:
                index = torch.tensor(keep, dtype=torch.long, device=self.device)
                batch.cache.batch_select_indices(index)
                batch.mask, batch.next_pos, tokens = batch.mask[index], batch.next_pos[index], tokens[index]
                batch.rows = [batch.rows[b] for b in keep]
                if mergeable:
                    self._compact(batch)
            batch.tokens = tokens
            return batch

        while pending or run is not None:
            # admit waiting sentences into the free rows (into an empty batch only, if caches cannot merge)
            room = batch_size - (run.size if run is not None else 0)
            if pending and (run is None or mergeable) and len(pending[0].rows) <= room:
                admit = []
                while pending and len(pending[0].rows) <= room:
                    admit.append(pending.popleft())
                    room -= len(admit[-1].rows)
                new, logits = self._prefill(admit)
                mergeable = mergeable and self._mergeable(new.cache)
                new = advance(new, logits)
                self.merges += int(run is not None and new is not None)
                run = self._merge(run, new)
                if run is None:
                    continue
            if run is None:
                continue
            # one greedy step for every row of the batch
            run.mask = torch.cat([run.mask, run.mask.new_ones((run.size, 1))], dim=1)
            logits = self._forward(run.tokens.unsqueeze(1), run.mask, run.next_pos.unsqueeze(1), run.cache)
            run.next_pos = run.next_pos + 1
            run = advance(run, logits)
        return results


# ------------------------------------------------------------------------------------- vLLM path


def import_vllm() -> Any:
    """The vllm module, or an ImportError that says what to do instead."""
    try:
        import vllm
    except ImportError as e:
        raise ImportError(
            "backend='vllm' needs the `vllm` package (CUDA machine; `pip install 'distill-ner[vllm]'`). "
            "vllm is not installed in this environment: use backend='transformers'."
        ) from e
    return vllm


class _VLLMBackend:
    def __init__(self, model_dir: str, stop_ids: Sequence[int], **llm_kwargs: Any) -> None:
        vllm = import_vllm()
        self.vllm = vllm
        self.stop_ids = list(stop_ids)
        kwargs: dict[str, Any] = {"enable_prefix_caching": True, "seed": 0}
        kwargs.update(llm_kwargs)
        self.llm = vllm.LLM(model=model_dir, tokenizer=model_dir, **kwargs)

    def _constrained_params(self, constraint: RowConstraint, max_new_tokens: int) -> Any:
        """Greedy SamplingParams whose per-request logits processor applies `constraint`."""
        import torch

        seen = 0

        def process(token_ids: Sequence[int], logits: Any) -> Any:
            nonlocal seen
            for token in token_ids[seen:]:  # vLLM hands over the whole output so far
                constraint.advance(int(token))
            seen = len(token_ids)
            remaining = max_new_tokens - len(token_ids)
            picks = [int(logits.argmax())]
            before = picks[0]
            probe = _NoAdvance(constraint)
            constrained_argmax(logits.unsqueeze(0), picks, [probe], [remaining], self.stop_ids)
            if picks[0] == before:
                return logits
            out = torch.full_like(logits, float("-inf"))
            out[picks[0]] = 0.0
            return out

        try:
            return self.vllm.SamplingParams(
                temperature=0.0,
                max_tokens=max_new_tokens,
                stop_token_ids=self.stop_ids,
                detokenize=False,
                logprobs=0,
                logits_processors=[process],
            )
        except (TypeError, ValueError) as e:  # vLLM V1 dropped per-request logits processors
            raise NotImplementedError(
                f"constrained (grounded) decoding needs vLLM's per-request logits processors, which this vLLM "
                f"({getattr(self.vllm, '__version__', '?')}) does not offer: use backend='transformers' ({e})"
            ) from e

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        progress: bool,
        constraints: Sequence[RowConstraint | None] | None = None,
    ) -> list[Generation]:
        params: Any = self.vllm.SamplingParams(
            temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=self.stop_ids, detokenize=False, logprobs=0
        )
        if constraints is not None and any(c is not None for c in constraints):
            params = [params if c is None else self._constrained_params(c, max_new_tokens) for c in constraints]
        # token ids in, so vLLM never re-renders or re-tokenises the prompt
        requests = [{"prompt_token_ids": list(p)} for p in prompts]
        outputs = self.llm.generate(requests, params, use_tqdm=progress)
        results = []
        for out in outputs:
            completion = out.outputs[0]
            ids = list(completion.token_ids)
            # logprobs=0: each step's dict holds the taken token's entry only
            logprobs = [float(step[token].logprob) for step, token in zip(completion.logprobs or [], ids)]
            ended = bool(ids) and ids[-1] in self.stop_ids
            if ended:
                ids.pop()
            results.append(
                Generation(
                    token_ids=ids,
                    stopped=ended or completion.finish_reason == "stop",
                    token_logprobs=logprobs[: len(ids)],
                )
            )
        return results


class _NoAdvance:
    """A constraint seen through without `advance`: vLLM reports the emitted tokens on its next call."""

    def __init__(self, constraint: RowConstraint) -> None:
        self.constraint = constraint

    def allows(self, token_id: int, remaining: int) -> bool:
        return self.constraint.allows(token_id, remaining)

    def allowed_ids(self, remaining: int) -> list[int]:
        return self.constraint.allowed_ids(remaining)

    def advance(self, token_id: int) -> None:
        pass


# ----------------------------------------------------------------------------------------- engine


class Engine:
    """Batched greedy decoding of already tokenised prompts (`generate_ids`); recipes build the prompts."""

    def __init__(
        self,
        model_ref: str,
        *,
        backend: Backend = "transformers",
        batch_size: int = 16,
        max_new_tokens: int = 256,
        device: str | None = None,
        dtype: Any = None,
        continuous_batching: bool = True,
        vllm_kwargs: dict[str, Any] | None = None,
        gguf_quant: str = "f16",
        threads: int | None = None,
    ) -> None:
        from distill_ner.models import is_adapter, load_tokenizer, resolve_reference

        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
        if batch_size <= 0 or max_new_tokens <= 0:
            raise ValueError("batch_size and max_new_tokens must be positive")
        chosen = resolve_backend(backend, model_ref, device)
        if chosen == "vllm":
            import_vllm()  # fail before downloading, loading or merging anything when vllm is missing
        if chosen == "llamacpp":
            from distill_ner.engine.llamacpp import import_llama_cpp

            import_llama_cpp()  # fail before converting anything when llama-cpp-python is missing
        self.model_ref = model_ref
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.continuous_batching = continuous_batching
        self.last_stats = EngineStats()
        local = resolve_reference(model_ref)  # models:/ URIs are downloaded once, here
        self.tokenizer = load_tokenizer(local)
        self.model: Any = None
        self._tf: _TransformersBackend | None = None
        self._vllm: _VLLMBackend | None = None
        self._llama: Any = None
        if chosen == "llamacpp":
            from distill_ner.engine.gguf import ExportError, cached_gguf
            from distill_ner.engine.llamacpp import LlamaCppBackend

            try:
                gguf = local if local.endswith(".gguf") else str(cached_gguf(local, gguf_quant))
            except ExportError as e:
                if backend != "auto":
                    raise
                # auto only prefers llama.cpp: a model its converter does not take still runs
                logger.warning("%s: no GGUF conversion (%s); running it on transformers", model_ref, e)
                chosen = "transformers"
            else:
                generation_config = None if local.endswith(".gguf") else _generation_config(local)
                self.stop_ids = stop_token_ids(self.tokenizer, generation_config=generation_config)
                self._llama = LlamaCppBackend(gguf, self.stop_ids, n_seq=batch_size, threads=threads)
        elif chosen == "vllm":
            served = _merged_adapter_dir(local) if is_adapter(local) else local
            self.stop_ids = stop_token_ids(self.tokenizer, generation_config=_generation_config(served))
            self._vllm = _VLLMBackend(served, self.stop_ids, **(vllm_kwargs or {}))
        if chosen == "transformers":
            self._init_transformers(self._load_model(local, device, dtype), device)
        self.backend: str = chosen  # what runs (`auto` resolved), as evaluation logs it

    @classmethod
    def from_model(
        cls,
        model: Any,
        tokenizer: Any,
        *,
        batch_size: int = 16,
        max_new_tokens: int = 256,
        name: str = "",
        stop_ids: Sequence[int] | None = None,
        continuous_batching: bool = True,
    ) -> "Engine":
        """An engine over an already loaded model and tokenizer (transformers backend): for tests and
        for comparing with other decoding loops on the very same weights. `stop_ids` replaces the
        stop tokens read from the model and tokenizer."""
        engine = cls.__new__(cls)
        engine.model_ref = name or str(getattr(model, "name_or_path", ""))
        engine.backend = "transformers"
        engine.batch_size = batch_size
        engine.max_new_tokens = max_new_tokens
        engine.continuous_batching = continuous_batching
        engine.last_stats = EngineStats()
        engine.tokenizer = tokenizer
        engine._vllm = None
        engine._llama = None
        engine._init_transformers(model, str(next(model.parameters()).device), stop_ids)
        return engine

    @staticmethod
    def _load_model(local: str, device: str | None, dtype: Any) -> Any:
        import torch

        from distill_ner.models import is_adapter, load_model

        device = device or _default_device()
        if dtype is None:
            # fp32 on CPU (bf16 matmuls are slow there and would change the answers); bf16 on a GPU
            dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
        model = load_model(local, dtype=dtype, device=device)
        if is_adapter(local):
            # one set of weights: decoding does not pay for the LoRA side matmuls
            model = model.merge_and_unload()
        return model

    def _init_transformers(self, model: Any, device: str | None, stop_ids: Sequence[int] | None = None) -> None:
        model.eval()
        self.model = model
        self.device = device or str(next(model.parameters()).device)
        self.stop_ids = list(stop_ids) if stop_ids is not None else stop_token_ids(self.tokenizer, model)
        generation_config = getattr(model, "generation_config", None)
        changed = [
            k
            for k, default in _NON_GREEDY_FIELDS.items()
            if getattr(generation_config, k, default) not in (default, None)
        ]
        if changed:
            logger.warning(
                "the model's generation_config sets %s; this engine decodes pure greedy (the UniNER evaluation), "
                "so a plain model.generate would differ",
                ", ".join(changed),
            )
        self._tf = _TransformersBackend(
            model, self.tokenizer, self.stop_ids, self.device, refill=self.continuous_batching
        )

    # -------------------------------------------------------------------------------- public API

    def grounded_constraints(self, passages: Sequence[str]) -> list[Any]:
        """Fresh row constraints that hold each answer to a JSON list of substrings of its passage
        (see `distill_ner.engine.grounded`), for `generate_ids(..., constraints=...)`."""
        from distill_ner.engine.grounded import grounded_constraints

        return grounded_constraints(self.tokenizer, self.stop_ids, passages)

    def generate_ids(
        self,
        prompts: Sequence[Sequence[int]],
        groups: Sequence[Sequence[int]] | None = None,
        *,
        progress: bool = True,
        max_new_tokens: int | None = None,
        constraints: Sequence[RowConstraint | None] | None = None,
    ) -> list[Generation]:
        """Greedy results for already tokenised prompts, in prompt order (any prompt format, e.g. templates).

        `groups` lists prompt indices expected to share a long token prefix (each index exactly once);
        the prefix actually shared is computed, so any grouping gives the same answers and only speed
        depends on it. Default: all prompts in one group, in order. `constraints` (one per prompt, None
        for a free row) restrict each row's tokens, e.g. to a grounded answer (`engine.grounded`); they
        are stateful: pass fresh ones to every call.
        """
        max_new = max_new_tokens or self.max_new_tokens
        if groups is None:
            groups = [list(range(len(prompts)))]
        if sorted(i for g in groups for i in g) != list(range(len(prompts))):
            raise ValueError("groups must list every prompt index exactly once")
        if constraints is not None and len(constraints) != len(prompts):
            raise ValueError(f"{len(constraints)} constraints for {len(prompts)} prompts")
        t0 = time.perf_counter()
        if self._vllm is not None:
            results = self._vllm.generate(
                prompts, max_new, progress, constraints
            )  # vLLM's prefix cache finds the sharing
            chunks, merges = 0, 0
        else:
            results, chunks, merges = self._generate_chunked(prompts, groups, max_new, progress, constraints)
        for g in results:
            g.text = self.tokenizer.decode(g.token_ids, skip_special_tokens=True)
        self.last_stats = EngineStats(
            queries=len(prompts),
            generated_tokens=sum(g.n_generated for g in results),
            seconds=time.perf_counter() - t0,
            chunks=chunks,
            merges=merges,
        )
        return results

    def _generate_chunked(
        self,
        prompts: Sequence[Sequence[int]],
        groups: Sequence[Sequence[int]],
        max_new: int,
        progress: bool,
        constraints: Sequence[RowConstraint | None] | None = None,
    ) -> tuple[list[Generation], int, int]:
        """The transformers or llama.cpp backend over plan_chunks (shared sentence prefixes)."""
        import torch
        from tqdm.auto import tqdm

        decoder = self._llama if self._llama is not None else self._tf
        assert decoder is not None
        chunks = plan_chunks(prompts, groups, self.batch_size)
        tokens = 0
        t0 = time.perf_counter()
        with (
            torch.inference_mode(),
            tqdm(total=len(prompts), unit="q", desc="generate", disable=not progress, dynamic_ncols=True) as bar,
        ):

            def on_finish(generation: Generation) -> None:
                nonlocal tokens
                tokens += generation.n_generated
                bar.update(1)
                bar.set_postfix_str(f"{tokens / max(time.perf_counter() - t0, 1e-9):.1f} tok/s", refresh=False)

            if self._llama is not None:
                results = self._llama.decode(chunks, max_new, on_finish, constraints)
            else:
                results = self._tf.decode(chunks, max_new, self.batch_size, on_finish, constraints)
        return [results[i] for i in range(len(prompts))], len(chunks), decoder.merges
