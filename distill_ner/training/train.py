"""Train the student on an SFT set: LoRA, QLoRA or full fine-tuning over transformers' Trainer + PEFT.

One entry point, `train_student`, runs the same way in a plain process (CPU demo, one GPU) and in each
process of `accelerate launch` (DDP / FSDP): the Trainer reads the launcher's environment (WORLD_SIZE,
LOCAL_RANK, ...). torch / transformers / peft are imported inside functions so that importing this module
(e.g. while ZenML loads a pipeline definition) stays cheap.

Exact resumption rests on three things: the batch order is a pure function of (seed, epoch) (our own
sampler, no dataloader workers), the Trainer skips the batches already seen, and it restores the RNG
states (dropout) saved in the checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from distill_ner.chat import IGNORE_INDEX
from distill_ner.config import TrainConfig
from distill_ner.paths import looks_local
from distill_ner.records import SFTDataset, SFTRow

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16", "fp16"]

# LoRA targets per `config.model_type`: every projection of attention and MLP (the QLoRA paper's finding
# that adapting all linear layers matters more than r). Unknown architectures fall back to PEFT's
# "all-linear" (every Linear/Conv1D except the output head).
_ATTN_MLP_PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TARGET_MODULES: dict[str, list[str]] = {
    **{
        arch: _ATTN_MLP_PROJ
        for arch in (
            "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text",
            "olmo", "olmo2", "granite", "smollm3",
        )
    },
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "phi": ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
}
ALL_LINEAR = "all-linear"

# TrainConfig fields that do not change the optimisation trajectory: a checkpoint stays valid across them.
_NOT_IN_FINGERPRINT = {"checkpoint_every", "resume", "merge_adapter", "logging_steps"}
FINGERPRINT_FILE = "run_fingerprint.json"


class TrainResult(BaseModel):
    output_dir: str
    metrics: dict[str, float]
    history: list[dict[str, float]] = Field(default_factory=list)  # {step, loss, learning_rate}
    data_hash: str
    config: dict[str, Any]


# --------------------------------------------------------------------------------------------- pure parts


def data_hash(rows: Sequence[SFTRow]) -> str:
    """sha256 over the token ids and labels of the rows, in order (order decides the batches)."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps([row.input_ids, row.labels], separators=(",", ":")).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def target_modules_for(model_type: str, override: Sequence[str] | None = None) -> list[str] | str:
    if override:
        # PEFT wants its "all-linear" shorthand as a plain string
        return ALL_LINEAR if list(override) == [ALL_LINEAR] else list(override)
    return TARGET_MODULES.get(model_type, ALL_LINEAR)


def resolve_precision(requested: str, *, cuda: bool, bf16_supported: bool) -> Precision:
    """'auto' is bf16 on a bf16-capable GPU, fp16 on an older GPU, fp32 on CPU; explicit values are checked."""
    if requested == "auto":
        if not cuda:
            return "fp32"
        return "bf16" if bf16_supported else "fp16"
    if requested == "bf16" and cuda and not bf16_supported:
        raise ValueError("train.precision=bf16, but this GPU has no bf16 support (Ampere or newer); use fp16 or auto")
    if requested == "fp16" and not cuda:
        raise ValueError("train.precision=fp16 needs a CUDA GPU (loss-scaled fp16 AMP); on CPU use fp32 or bf16")
    if requested not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"train.precision: unknown value {requested!r}")
    return requested  # type: ignore[return-value]


class PadToLongestCollator:
    """Pads a batch to its own longest row (optionally rounded up to `pad_to_multiple_of`).

    Right padding; labels are -100 and attention 0 on padding *by position*, so a pad id equal to the eos id
    (SmolLM2) never masks a real eos target. Rows are never concatenated: no cross-example attention.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: Sequence[dict[str, Sequence[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        n = len(features)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((n, width), dtype=torch.long)
        for i, feature in enumerate(features):
            k = len(feature["input_ids"])
            input_ids[i, :k] = torch.as_tensor(feature["input_ids"], dtype=torch.long)
            labels[i, :k] = torch.as_tensor(feature["labels"], dtype=torch.long)
            attention_mask[i, :k] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class SeededBatchOrderSampler:
    """Row order for one epoch, a pure function of (seed, epoch), so a resumed run sees the same batches.

    With `group_by_length`: shuffle, cut into mega-batches (up to 50 groups), sort each by length, cut into
    groups of `group_size` rows (per-device batch x processes: one micro-step on every rank), shuffle the
    groups, and put the group holding the longest row first so an out-of-memory shows at step 1.
    Without it: a plain seeded permutation. It uses its own `random.Random`, never the global RNGs.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        group_size: int,
        *,
        seed: int,
        group_by_length: bool = True,
        mega_batch_mult: int = 50,
    ) -> None:
        self.lengths = list(lengths)
        self.group_size = max(1, group_size)
        self.seed = seed
        self.group_by_length = group_by_length
        self.mega_batch_mult = mega_batch_mult
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # called by the Trainer / accelerate at each epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order(self.epoch))

    def order(self, epoch: int) -> list[int]:
        rng = random.Random(self.seed * 1_000_003 + epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        if not self.group_by_length or len(order) <= self.group_size:
            return order
        size = self.group_size
        mult = max(1, min(self.mega_batch_mult, len(order) // (size * 4)))
        mega = size * mult
        groups: list[list[int]] = []
        for start in range(0, len(order), mega):
            chunk = sorted(order[start : start + mega], key=lambda i: -self.lengths[i])
            groups += [chunk[j : j + size] for j in range(0, len(chunk), size)]
        # only the very last group can be short; keep it last so the others stay aligned with batch boundaries
        tail = [groups.pop()] if len(groups[-1]) < size else []
        rng.shuffle(groups)
        if groups:
            longest = max(range(len(groups)), key=lambda g: self.lengths[groups[g][0]])
            groups[0], groups[longest] = groups[longest], groups[0]
        return [i for group in groups + tail for i in group]


def last_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest complete Trainer checkpoint. trainer_state.json is written last, so a folder without it
    was cut off while saving and is skipped."""
    best: tuple[int, Path] | None = None
    if not checkpoint_dir.is_dir():
        return None
    for path in checkpoint_dir.glob("checkpoint-*"):
        step = path.name.split("-", 1)[1]
        if step.isdigit() and (path / "trainer_state.json").is_file():
            if best is None or int(step) > best[0]:
                best = (int(step), path)
    return best[1] if best else None


def run_fingerprint(config: TrainConfig, student: str, rows_hash: str, world_size: int) -> dict[str, Any]:
    """What must be identical for a checkpoint to be resumed."""
    train = {k: v for k, v in config.model_dump().items() if k not in _NOT_IN_FINGERPRINT}
    return {"train": train, "student": student, "data_hash": rows_hash, "world_size": world_size}


def run_key(sft: SFTDataset, student: str, config: TrainConfig) -> str:
    """A short stable key for a run (config, student, data, process count): name its checkpoint folder with it.

    Two runs with the same key are the same optimisation, so one may resume the other's checkpoints.
    """
    world_size = config.num_processes if config.distributed != "none" else 1
    fingerprint = run_fingerprint(config, student_reference(student), data_hash(sft.rows), world_size)
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


def student_reference(student: str) -> str:
    """The reference recorded in the adapter: a hub id or an MLflow URI as given, a local path made absolute."""
    if "://" in student or student.startswith(("models:/", "runs:/")):
        return student
    if looks_local(student):
        return str(Path(student).expanduser().resolve())
    return student


def _trainable_rows(rows: Sequence[SFTRow]) -> tuple[list[dict[str, list[int]]], int]:
    """Rows as features; rows without any target token after the causal shift are dropped (counted)."""
    features, skipped = [], 0
    for row in rows:
        if len(row.input_ids) != len(row.labels):
            raise ValueError(f"SFT row {row.id}: {len(row.input_ids)} input ids but {len(row.labels)} labels")
        # the label at position 0 is never predicted (no token before it)
        if not any(label != IGNORE_INDEX for label in row.labels[1:]):
            skipped += 1
            continue
        features.append({"input_ids": list(row.input_ids), "labels": list(row.labels)})
    return features, skipped


def _looks_like_result(path: Path) -> bool:
    if not path.exists():
        return True
    if not path.is_dir():
        return False
    names = {p.name for p in path.iterdir()}
    return not names or bool(names & {"training_config.json", "adapter_config.json", "config.json"})


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# ------------------------------------------------------------------------------------------------- MLflow


class _MlflowRun:
    """Logs into the active MLflow run (ZenML's tracker starts one inside the step), or into MLFLOW_RUN_ID
    in processes started by `accelerate launch`, where no run is active. Uses the client with an explicit
    run id, so it never starts, nests or ends a run."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    @classmethod
    def find(cls) -> _MlflowRun | None:
        try:
            import mlflow
        except ImportError:
            return None
        run = mlflow.active_run()
        run_id = run.info.run_id if run else os.environ.get("MLFLOW_RUN_ID")
        return cls(mlflow.MlflowClient(), run_id) if run_id else None

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        try:
            self.client.log_batch(self.run_id, params=items)
        except MlflowException:
            # a param already logged with another value (e.g. a retried step): keep the rest
            for item in items:
                try:
                    self.client.log_batch(self.run_id, params=[item])
                except MlflowException as exc:
                    logger.warning("MLflow param %s not logged: %s", item.key, exc)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if v is not None and math.isfinite(v)]
        if items:
            self.client.log_batch(self.run_id, metrics=items)


# ------------------------------------------------------------------------------------ Trainer extensions


@cache
def _trainer_classes() -> tuple[type, type]:
    """Our Trainer (seeded length-grouped sampler) and tracking callback; built on first use (heavy imports)."""
    from transformers import Trainer, TrainerCallback

    class StudentTrainer(Trainer):
        def __init__(self, *args: Any, batch_order: SeededBatchOrderSampler, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.batch_order = batch_order

        def _get_train_sampler(self, train_dataset: Any = None) -> SeededBatchOrderSampler:
            return self.batch_order

    class TrackingCallback(TrainerCallback):
        """Times the training loop, counts this run's tokens, and sends per-step metrics to MLflow."""

        def __init__(self, mlflow_run: _MlflowRun | None) -> None:
            self.mlflow_run = mlflow_run
            self.started = self.ended = self.cpu_started = self.cpu_ended = 0.0
            self.start_step = self.start_tokens = self.end_tokens = 0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            # the state is already restored from the checkpoint here: count only what this call trains
            self.start_step = state.global_step
            self.start_tokens = state.num_input_tokens_seen
            self.started = time.perf_counter()
            self.cpu_started = time.process_time()

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            if not logs or "loss" not in logs or not state.is_world_process_zero or self.mlflow_run is None:
                return
            metrics = {f"train/{k}": logs[k] for k in ("loss", "learning_rate", "grad_norm") if k in logs}
            try:
                self.mlflow_run.log_metrics(metrics, step=state.global_step)
            except Exception as exc:  # tracking must never kill a long training run
                logger.warning("MLflow logging failed at step %d: %s", state.global_step, exc)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.ended = time.perf_counter()
            self.cpu_ended = time.process_time()
            self.end_tokens = state.num_input_tokens_seen

    return StudentTrainer, TrackingCallback


# ------------------------------------------------------------------------------------------ model setup


def _load_for_training(
    ref: str, config: TrainConfig, precision: Precision, *, cuda: bool, fsdp: bool
) -> tuple[Any, Any, str, str | list[str] | None]:
    """(model ready to train, tokenizer, base reference recorded in the adapter, LoRA target modules)."""
    import torch

    from distill_ner.models import adapter_base, is_adapter, load_model, load_tokenizer, resolve_reference

    resolved = resolve_reference(ref)
    adapter = resolved if is_adapter(resolved) else None
    base_ref = adapter_base(resolved) if adapter else ref
    # an adapter folder written by us carries the tokenizer; one from elsewhere may not
    has_tokenizer = not adapter or (Path(resolved) / "tokenizer_config.json").is_file()
    tokenizer = load_tokenizer(resolved if has_tokenizer else base_ref)
    compute_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]

    kwargs: dict[str, Any] = {}
    if config.attn_implementation:
        kwargs["attn_implementation"] = config.attn_implementation
    if config.method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
            # FSDP shards the packed 4-bit weights only when they are stored in a float dtype
            bnb_4bit_quant_storage=compute_dtype if fsdp else torch.uint8,
        )
        if not fsdp:
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
        base_dtype = compute_dtype
    elif config.method == "lora" and cuda and not fsdp:
        base_dtype = compute_dtype  # frozen base in half precision; PEFT keeps the adapter in fp32
    else:
        base_dtype = torch.float32  # full fine-tuning keeps fp32 master weights; AMP does the rest

    if config.method == "full":
        model = load_model(resolved, dtype=base_dtype, **kwargs)
        if adapter:  # a LoRA student continues as a full model
            model = model.merge_and_unload()
        targets = None
    else:
        from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

        model = load_model(base_ref, dtype=base_dtype, **kwargs)
        if config.method == "qlora":
            model = prepare_model_for_kbit_training(
                model,
                use_gradient_checkpointing=config.gradient_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False},
            )
        if adapter:
            if config.target_modules:
                logger.warning("student %s is an adapter: training it further; train.target_modules ignored", ref)
            model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
            targets = sorted(model.peft_config["default"].target_modules)
        else:
            targets = target_modules_for(model.config.model_type, config.target_modules)
            lora = LoraConfig(
                r=config.lora_r,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                target_modules=targets,
                bias="none",
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(model, lora)
        # so that the saved folder loads alone: `models.load_model(output_dir)` reads this field
        model.peft_config["default"].base_model_name_or_path = base_ref
    model.config.use_cache = False  # no KV cache while training (and required with gradient checkpointing)
    return model, tokenizer, base_ref, targets


def _fsdp_config(model: Any, config: TrainConfig) -> dict[str, Any]:
    """FSDP2, full sharding, one unit per decoder layer: what transformers 5 spells for 'full_shard auto_wrap'."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = list(getattr(base, "_no_split_modules", None) or [])
    return {
        "version": 2,
        "reshard_after_forward": True,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        **({"transformer_layer_cls_to_wrap": layers} if layers else {}),
        "state_dict_type": "FULL_STATE_DICT",  # the final save is one HF-loadable folder
        "activation_checkpointing": config.gradient_checkpointing,
    }


def _merge_into(output: Path, base_ref: str, precision: Precision, cuda: bool, attn: str | None) -> None:
    """Merged full model from the saved adapter, on CPU and unquantised (merging into 4-bit weights would be lossy)."""
    import torch
    from peft import PeftModel

    from distill_ner.models import load_model, load_tokenizer

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32) if cuda else torch.float32
    kwargs = {"attn_implementation": attn} if attn else {}
    base = load_model(base_ref, dtype=dtype, **kwargs)
    merged = PeftModel.from_pretrained(base, str(output)).merge_and_unload()
    merged.save_pretrained(output / "merged")
    load_tokenizer(str(output)).save_pretrained(output / "merged")
    del base, merged


# ------------------------------------------------------------------------------------------ entry point


def train_student(
    sft: SFTDataset,
    student: str,
    config: TrainConfig,
    output_dir: Path,
    *,
    checkpoint_dir: Path | None = None,
    log_to_mlflow: bool = True,
    callbacks: Sequence[Any] | None = None,
) -> TrainResult:
    """Fine-tune `student` on `sft.rows` and save the result in `output_dir`.

    lora/qlora: PEFT adapter (safetensors) + tokenizer, loadable alone by `models.load_model(output_dir)`
    (plus `merged/` when `config.merge_adapter`); full: the whole model + tokenizer. Always
    `training_config.json`. With `checkpoint_dir` and `config.checkpoint_every`, Trainer checkpoints land
    there and `config.resume` continues from the newest complete one. Under `accelerate launch` every process
    calls this with the same arguments; only the main process writes `output_dir` and logs to MLflow.
    `callbacks` are extra `transformers.TrainerCallback`s (tests, progress hooks).
    """
    import torch

    cuda = torch.cuda.is_available()
    if config.method == "qlora":
        # before anything is loaded: 4-bit NF4 training runs only on CUDA GPUs
        if not cuda:
            raise ValueError(
                "train.method=qlora needs a CUDA GPU (bitsandbytes 4-bit NF4 training); "
                "on CPU use method=lora or method=full"
            )
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                "train.method=qlora needs the bitsandbytes package (pip install 'bitsandbytes>=0.41.3')"
            ) from exc
    precision = resolve_precision(config.precision, cuda=cuda, bf16_supported=cuda and torch.cuda.is_bf16_supported())

    output_dir = Path(output_dir).expanduser().resolve()
    checkpoint_dir = Path(checkpoint_dir).expanduser().resolve() if checkpoint_dir else None
    if checkpoint_dir and (checkpoint_dir == output_dir or output_dir in checkpoint_dir.parents):
        raise ValueError(
            f"checkpoint_dir {checkpoint_dir} must not be inside output_dir {output_dir} (replaced at the end)"
        )
    if not _looks_like_result(output_dir):
        raise ValueError(
            f"output_dir {output_dir} exists and does not look like a training result; refusing to replace it"
        )

    features, skipped = _trainable_rows(sft.rows)
    if not features:
        raise ValueError(f"no SFT row has a target token ({len(sft.rows)} rows, all labels -100)")
    rows_hash = data_hash(sft.rows)
    ref = student_reference(student)

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    fsdp = config.distributed == "fsdp" and world_size > 1
    if config.num_processes > 1 and world_size == 1:
        logger.warning(
            "train.num_processes=%d but this process was not started by `accelerate launch`: training on one process",
            config.num_processes,
        )
    elif world_size > 1 and config.distributed == "none":
        logger.warning("launched on %d processes with train.distributed=none: the Trainer uses DDP", world_size)

    # checkpoints (before the slow model load): fingerprint the run so that only an identical run is resumed
    is_main = int(os.environ.get("RANK", "0")) == 0
    resume_from: Path | None = None
    fingerprint = run_fingerprint(config, ref, rows_hash, world_size)
    if checkpoint_dir:
        found = last_checkpoint(checkpoint_dir)
        saved_fp_path = checkpoint_dir / FINGERPRINT_FILE
        if config.resume and found:
            if saved_fp_path.is_file():
                saved = json.loads(saved_fp_path.read_text())
                if saved != fingerprint:
                    diff = sorted(
                        k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k)
                    ) + sorted(
                        f"train.{k}"
                        for k in set(saved.get("train", {})) | set(fingerprint["train"])
                        if saved.get("train", {}).get(k) != fingerprint["train"].get(k)
                    )
                    raise ValueError(
                        f"checkpoints in {checkpoint_dir} come from a different run (differs in: {', '.join(diff)}); "
                        "set train.resume=false to start over (its checkpoints are removed) "
                        "or use another checkpoint_dir"
                    )
            else:
                logger.warning(
                    "%s has checkpoints but no %s: resuming without checking", checkpoint_dir, FINGERPRINT_FILE
                )
            resume_from = found
        elif is_main and checkpoint_dir.is_dir():
            # a fresh start must not leave older, higher-numbered checkpoints for a later resume to pick
            for old in checkpoint_dir.glob("checkpoint-*"):
                shutil.rmtree(old, ignore_errors=True)
        if is_main:
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            saved_fp_path.write_text(json.dumps(fingerprint, indent=1))
    from transformers import TrainingArguments, set_seed

    # one seed for everything drawn before the Trainer takes over (LoRA A init, dropout)
    set_seed(config.seed)
    model, tokenizer, base_ref, targets = _load_for_training(ref, config, precision, cuda=cuda, fsdp=fsdp)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())

    saving = bool(checkpoint_dir) and config.checkpoint_every > 0
    # without a checkpoint_dir the Trainer still wants an output_dir; it writes nothing there
    scratch = None if checkpoint_dir else Path(tempfile.mkdtemp(prefix="distill-ner-trainer-"))
    try:
        args = TrainingArguments(
            output_dir=str(checkpoint_dir or scratch),
            per_device_train_batch_size=config.per_device_batch_size,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            num_train_epochs=config.epochs,
            max_steps=config.max_steps,
            learning_rate=config.learning_rate,
            lr_scheduler_type=config.lr_scheduler,
            warmup_steps=min(config.warmup_ratio, 0.999999),  # a float below 1 is a ratio of the total steps
            weight_decay=config.weight_decay,
            bf16=precision == "bf16",
            fp16=precision == "fp16",
            use_cpu=not cuda,
            # FSDP checkpoints activations itself (fsdp_config), without a redundant all-gather
            activation_checkpointing=config.gradient_checkpointing and not fsdp,
            activation_checkpointing_kwargs={"use_reentrant": False},
            logging_steps=config.logging_steps,
            logging_first_step=True,
            save_strategy="steps" if saving else "no",
            save_steps=config.checkpoint_every if saving else 500,
            save_total_limit=2,
            seed=config.seed,
            data_seed=config.seed,
            dataloader_num_workers=0,  # workers would make the batch order / RNG restore harder to reproduce
            dataloader_pin_memory=cuda,
            remove_unused_columns=False,  # our collator builds exactly the model's inputs
            label_names=["labels"],
            include_num_input_tokens_seen="non_padding",
            report_to="none",  # MLflow goes through our callback, into the caller's run
            disable_tqdm=True,
            ddp_find_unused_parameters=False if world_size > 1 else None,
            fsdp=fsdp or None,
            fsdp_config=_fsdp_config(model, config) if fsdp else None,
        )
        batch_order = SeededBatchOrderSampler(
            [len(f["input_ids"]) for f in features],
            config.per_device_batch_size * args.world_size,
            seed=config.seed,
            group_by_length=config.group_by_length,
        )
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        StudentTrainer, TrackingCallback = _trainer_classes()
        mlflow_run = _MlflowRun.find() if (log_to_mlflow and args.process_index == 0) else None
        tracking = TrackingCallback(mlflow_run)
        trainer = StudentTrainer(
            model=model,
            args=args,
            train_dataset=features,
            data_collator=PadToLongestCollator(pad_id, config.pad_to_multiple_of),
            processing_class=tokenizer,
            callbacks=[tracking, *(callbacks or [])],
            batch_order=batch_order,
        )

        n_tokens = sum(len(f["input_ids"]) for f in features)
        n_targets = sum(sum(1 for x in f["labels"][1:] if x != IGNORE_INDEX) for f in features)
        if mlflow_run:
            mlflow_run.log_params(
                {
                    **{
                        f"train.{k}": json.dumps(v) if isinstance(v, list) else v
                        for k, v in config.model_dump().items()
                    },
                    # max_steps overrides epochs: say so rather than show epochs that never ran
                    **({"train.epochs": f"unused (max_steps {config.max_steps})"} if config.max_steps > 0 else {}),
                    "student": ref,
                    "base_model": base_ref,
                    "data_hash": rows_hash,
                    "precision_resolved": precision,
                    "lora_target_modules": targets,
                    "n_rows": len(features),
                    "n_rows_skipped": skipped,
                    "n_tokens": n_tokens,
                    "n_target_tokens": n_targets,
                    "world_size": args.world_size,
                    "effective_batch_size": (
                        config.per_device_batch_size * config.gradient_accumulation_steps * args.world_size
                    ),
                    "trainable_params": trainable,
                    "total_params": total,
                }
            )

        if cuda:
            torch.cuda.reset_peak_memory_stats()
        if resume_from:
            logger.info("resuming from %s", resume_from)
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)

        # ---- save: every rank takes part (FSDP gathers the full state dict), the main process writes
        staging = output_dir.with_name(output_dir.name + ".partial")
        if trainer.is_world_process_zero():
            shutil.rmtree(staging, ignore_errors=True)
        trainer.accelerator.wait_for_everyone()
        trainer.save_model(str(staging))

        history = [
            {"step": float(e["step"]), "loss": float(e["loss"]), "learning_rate": float(e.get("learning_rate", 0.0))}
            for e in trainer.state.log_history
            if "loss" in e
        ]
        steps_run = trainer.state.global_step - tracking.start_step
        runtime = max(tracking.ended - tracking.started, 1e-9)
        trained_tokens = float(tracking.end_tokens - tracking.start_tokens)
        # no NaN anywhere: the result travels as JSON (launch.py, ZenML metadata); undefined values are left out
        metrics: dict[str, float] = {
            **({"first_loss": history[0]["loss"], "final_loss": history[-1]["loss"]} if history else {}),
            "train_runtime_s": runtime,
            # CPU seconds of this process (all threads) in the loop: on a shared machine, wall time / CPU time
            # shows how much of the cores the run really got
            "train_cpu_s": tracking.cpu_ended - tracking.cpu_started,
            "steps": float(trainer.state.global_step),
            "steps_this_run": float(steps_run),
            **({"seconds_per_step": runtime / steps_run} if steps_run else {}),
            "trained_tokens": trained_tokens,  # non-padding input tokens processed by this call, all processes
            "tokens_per_s": trained_tokens / runtime,
            "n_rows": float(len(features)),
            "n_rows_skipped": float(skipped),
            "n_target_tokens": float(n_targets),
            "trainable_params": float(trainable),
            "resumed_from_step": float(tracking.start_step),
            "peak_cpu_rss_mb": _peak_rss_mb(),  # process peak, model loading included
        }
        if cuda:
            metrics["peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20

        if trainer.is_world_process_zero():
            (staging / "training_args.bin").unlink(missing_ok=True)  # a pickle; training_config.json says it all
            if config.method != "full":
                adapter_cfg = staging / "adapter_config.json"
                saved = json.loads(adapter_cfg.read_text())
                saved["base_model_name_or_path"] = base_ref
                adapter_cfg.write_text(json.dumps(saved, indent=2, sort_keys=True))
                if config.merge_adapter:
                    _merge_into(staging, base_ref, precision, cuda, config.attn_implementation)
            record = {
                "student": ref,
                "base_model": base_ref,
                "method": config.method,
                "precision": precision,
                "lora_target_modules": targets,
                "data_hash": rows_hash,
                "world_size": args.world_size,
                "train": config.model_dump(),
                "metrics": metrics,
            }
            (staging / "training_config.json").write_text(json.dumps(record, indent=2))
            if output_dir.exists():
                shutil.rmtree(output_dir)
            staging.rename(output_dir)  # only a complete result ever appears under the final name
            if mlflow_run:
                try:
                    mlflow_run.log_metrics(
                        {f"train/{k}": v for k, v in metrics.items() if k in _FINAL_MLFLOW_METRICS},
                        step=trainer.state.global_step,
                    )
                except Exception as exc:
                    logger.warning("MLflow final metrics not logged: %s", exc)
        trainer.accelerator.wait_for_everyone()
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)

    return TrainResult(
        output_dir=str(output_dir),
        metrics=metrics,
        history=history,
        data_hash=rows_hash,
        config=config.model_dump(),
    )


_FINAL_MLFLOW_METRICS = {
    "final_loss",
    "tokens_per_s",
    "trained_tokens",
    "train_runtime_s",
    "seconds_per_step",
    "peak_cpu_rss_mb",
    "peak_gpu_mem_mb",
}
