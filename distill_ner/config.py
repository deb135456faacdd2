"""One pydantic schema per stage, composed into the pipeline's single `config` parameter.

The YAML a user edits (`parameters.config` in configs/*.yaml) maps one-to-one onto these models:
an unknown key or a wrong type is a validation error that names the key, raised before any step runs,
and a local path that does not exist is an error that names the path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from distill_ner.paths import looks_local


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


def checks_paths(info: ValidationInfo | None) -> bool:
    """Path checks run unless the validation context says `skip_path_checks` (config linting in tests)."""
    return not (info is not None and (info.context or {}).get("skip_path_checks"))


def require_path(ref: str, what: str, info: ValidationInfo | None = None) -> str:
    path = Path(ref).expanduser()
    if checks_paths(info) and not path.exists():
        raise ValueError(f"{what}: path does not exist: {ref} (resolved to {path.resolve()})")
    return ref


def check_model_ref(ref: str, what: str, info: ValidationInfo | None = None) -> str:
    if looks_local(ref):
        require_path(ref, what, info)
    return ref


class CorpusSource(StrictModel):
    """Local .txt/.jsonl/.parquet files (a file or a folder), or a HF dataset (hub id or local folder)."""

    path: str | None = Field(None, description="local file or folder of .txt/.jsonl/.parquet")
    hf_dataset: str | None = Field(None, description="HF dataset hub id or local dataset folder")
    hf_config: str | None = Field(None, description="HF dataset configuration name, if it has several")
    split: str = Field("train", description="dataset split to read")
    text_field: str = Field("text", description="column (or JSONL key) holding the text")
    id_field: str | None = Field(None, description="column holding a stable document id, if any")
    streaming: bool = Field(True, description="stream a hub dataset instead of downloading it whole")
    max_documents: int | None = Field(None, gt=0, description="read at most this many documents from this source")

    @model_validator(mode="after")
    def _one_source(self, info: ValidationInfo) -> "CorpusSource":
        if (self.path is None) == (self.hf_dataset is None):
            raise ValueError("corpus source: give exactly one of `path` or `hf_dataset`")
        if self.path is not None:
            require_path(self.path, "corpus.sources[].path", info)
        if self.hf_dataset is not None and looks_local(self.hf_dataset):
            require_path(self.hf_dataset, "corpus.sources[].hf_dataset", info)
        return self


class CorpusConfig(StrictModel):
    sources: list[CorpusSource] = Field(..., description="where the passages come from (files, folders or HF datasets)")
    max_tokens: int = Field(256, gt=8, description="passage length limit in student tokens")
    num_passages: int = Field(50_000, gt=0, description="passages sampled (seeded)")
    min_words: int = Field(5, ge=0, description="passages with fewer words are dropped as near-empty")
    seed: int = Field(0, description="seed of every random choice of this stage")


class TeacherConfig(StrictModel):
    backend: Literal["openai", "transformers"] = Field(
        "openai", description="how the teacher is called: an OpenAI-compatible API or a local transformers model"
    )
    model: str = Field(
        "gpt-3.5-turbo-0301", description="teacher model name (API) or hub id / local folder (transformers)"
    )
    base_url: str | None = Field(None, description="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    api_key_secret: str | None = Field(
        None, description="ZenML secret name (key `api_key`) used when the env variable is unset"
    )
    prompt: Literal["entities", "entities_with_descriptions"] = Field(
        "entities", description="teacher prompt: entity types only, or types with a short description"
    )
    temperature: float = Field(0.0, description="teacher sampling temperature (0: greedy)")
    max_tokens: int = Field(1024, gt=0, description="answer length limit per teacher request")
    concurrency: int = Field(8, gt=0, description="teacher requests in flight at once")
    timeout_s: float = Field(60.0, gt=0, description="seconds before one teacher request is abandoned (and retried)")
    max_retries: int = Field(
        6, ge=0, description="retries of a failed teacher request (rate limit, timeout, server error)"
    )
    retry_backoff_s: float = Field(1.0, gt=0, description="first retry delay; doubles per attempt, with jitter")
    retry_backoff_max_s: float = Field(60.0, gt=0, description="cap on one backoff delay (Retry-After wins)")
    cache_path: str = Field(".cache/teacher_cache.sqlite", description="persistent response cache")
    recorded_responses: list[str] = Field(
        default_factory=list, description="JSONL files in the cache's export format, loaded into the cache"
    )
    offline: bool = Field(False, description="a cache miss is an error instead of a request")
    max_failed_fraction: float = Field(
        0.05, ge=0, le=1, description="share of passages allowed to fail (no usable answer) before the run stops"
    )
    price_per_1k_prompt_tokens: float = Field(
        0.0, description="teacher price per 1000 prompt tokens, for the cost estimate"
    )
    price_per_1k_completion_tokens: float = Field(
        0.0, description="teacher price per 1000 completion tokens, for the cost estimate"
    )

    @field_validator("recorded_responses")
    @classmethod
    def _recorded_exist(cls, v: list[str], info: ValidationInfo) -> list[str]:
        for p in v:
            require_path(p, "teacher.recorded_responses", info)
        return v


class StudentConfig(StrictModel):
    model: str = Field(..., description="hub id or local folder of the student")

    @field_validator("model")
    @classmethod
    def _model_exists(cls, v: str, info: ValidationInfo) -> str:
        return check_model_ref(v, "student.model", info)


class TrainConfig(StrictModel):
    method: Literal["lora", "qlora", "full"] = Field(
        "lora", description="LoRA adapter, QLoRA (4-bit base, CUDA only) or full fine-tuning"
    )
    epochs: float = Field(3.0, gt=0, description="passes over the SFT set (ignored when max_steps > 0)")
    max_steps: int = Field(-1, description="overrides epochs when > 0")
    learning_rate: float = Field(2e-5, gt=0, description="peak learning rate")
    lr_scheduler: str = Field("cosine", description="transformers learning-rate schedule name, e.g. cosine or linear")
    warmup_ratio: float = Field(
        0.04, ge=0, le=1, description="fraction of the steps spent warming the learning rate up"
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    per_device_batch_size: int = Field(4, gt=0, description="rows per device per step (before accumulation)")
    gradient_accumulation_steps: int = Field(
        1, gt=0, description="steps whose gradients add up before one optimiser update"
    )
    lora_r: int = Field(16, gt=0, description="LoRA rank")
    lora_alpha: int = Field(32, gt=0, description="LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA path")
    target_modules: list[str] | None = Field(None, description="default: chosen per architecture")
    lora_last_layers: int | None = Field(
        None,
        gt=0,
        description="LoRA only on the last N decoder layers (None: all); backpropagation then stops below them",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16/fp16 on a GPU that has it, bf16 autocast on a CPU with AMX-BF16, fp32 elsewhere"
    )
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass: less memory, more time"
    )
    group_by_length: bool = Field(
        True, description="batch rows of similar length together (seeded), so less padding is computed"
    )
    pad_to_multiple_of: int | None = Field(
        None, gt=0, description="round each batch's padded length up to a multiple (e.g. 8 for tensor cores)"
    )
    attn_implementation: str | None = Field(None, description="e.g. sdpa or flash_attention_2")
    distributed: Literal["none", "ddp", "fsdp"] = Field(
        "none", description="multi-process training: DDP or FSDP (with num_processes > 1)"
    )
    num_processes: int = Field(1, gt=0, description="processes (GPUs, or CPU ranks) of a distributed run")
    checkpoint_every: int = Field(0, ge=0, description="steps between checkpoints (0: none)")
    resume: bool = Field(True, description="resume from the last checkpoint of an identical run")
    merge_adapter: bool = Field(False, description="also save the merged model")
    logging_steps: int = Field(1, gt=0, description="steps between logged training metrics")
    eval_every: int = Field(
        0,
        ge=0,
        description="steps between dev evaluations (dev loss and dev metric on the SFT set's dev split, logged to "
        "MLflow by step); the best one is the model kept. 0: none",
    )
    dev_max_queries: int = Field(
        128, ge=0, description="dev questions answered per evaluation, whole passages drawn by seed (0: all)"
    )
    dev_batch_size: int = Field(16, gt=0, description="dev questions decoded together (and dev rows per loss batch)")
    dev_max_new_tokens: int = Field(64, gt=0, description="answer length limit of a dev question")
    dev_direction: Literal["maximize", "minimize"] = Field(
        "maximize", description="whether a higher dev metric is better (the recipes' F1 and tree score are)"
    )
    dev_select: Literal["score", "loss"] = Field(
        "score",
        description="what picks the best checkpoint and drives early stopping: the dev metric (in dev_direction) "
        "or the dev loss (lower is better; smoother than a metric over a few dozen questions)",
    )
    early_stopping_patience: int = Field(
        0,
        ge=0,
        description="stop after this many dev evaluations without a gain of early_stopping_min_delta (0: never)",
    )
    early_stopping_min_delta: float = Field(
        0.0, ge=0, description="the least dev-metric change that counts as a gain for early stopping"
    )
    supervised_logits_only: bool = Field(
        True,
        description="compute the LM head and the loss only at the target (assistant) positions; same loss and "
        "gradients, less work (single-process runs of models without logit scaling)",
    )
    seed: int = Field(0, description="seed of every random choice of this stage")

    @model_validator(mode="after")
    def _early_stopping_needs_dev(self) -> "TrainConfig":
        if self.early_stopping_patience and not self.eval_every:
            raise ValueError("train.early_stopping_patience needs train.eval_every > 0 (dev evaluations to watch)")
        return self


class GateConfig(StrictModel):
    model_name: str = Field("distill-ner", description="registered model name in the MLflow registry")
    min_f1: float = Field(0.0, ge=0, le=1, description="absolute floor on the average F1")
    margin: float = Field(0.0, description="candidate avg F1 must be >= production's + margin")
    max_drop: float = Field(0.05, ge=0, description="largest drop allowed on any single benchmark")
