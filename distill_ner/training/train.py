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

import json
import logging
import math
import os
import resource
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from distill_ner.chat import IGNORE_INDEX
from distill_ner.config import TrainConfig
from distill_ner.records import SFTDataset, SFTRow
from distill_ner.training.checkpoints import (
    FINGERPRINT_FILE,
    data_hash,
    dev_hash,
    last_checkpoint,
    run_fingerprint,
    student_reference,
)

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
            "llama",
            "mistral",
            "qwen2",
            "qwen3",
            "gemma",
            "gemma2",
            "gemma3",
            "gemma3_text",
            "olmo",
            "olmo2",
            "granite",
            "smollm3",
        )
    },
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "phi": ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
}
ALL_LINEAR = "all-linear"


# TrainConfig fields that do not change the optimisation trajectory: a checkpoint stays valid across them.
class TrainResult(BaseModel):
    output_dir: str
    metrics: dict[str, float]
    history: list[dict[str, float]] = Field(default_factory=list)  # {step, loss, learning_rate}
    # one entry per dev evaluation: {step, dev_loss, dev_score, ...}; empty without eval_every
    dev_history: list[dict[str, float]] = Field(default_factory=list)
    best_step: int | None = None  # the step whose weights were saved (the best dev score), None without dev
    # the MLflow params and final metrics this run logged (empty when it logged nothing)
    logged_params: dict[str, str] = Field(default_factory=dict)
    logged_metrics: dict[str, float] = Field(default_factory=dict)
    data_hash: str
    config: dict[str, Any]


# --------------------------------------------------------------------------------------------- pure parts


def target_modules_for(model_type: str, override: Sequence[str] | None = None) -> list[str] | str:
    if override:
        # PEFT wants its "all-linear" shorthand as a plain string
        return ALL_LINEAR if list(override) == [ALL_LINEAR] else list(override)
    return TARGET_MODULES.get(model_type, ALL_LINEAR)


def cpu_info() -> dict[str, Any]:
    """The CPU's model name and whether it has AMX-BF16 (oneDNN then runs bf16 matmuls on AMX tiles, several
    times the fp32 rate; on AVX2-only CPUs bf16 autocast is no faster than fp32). Read from /proc/cpuinfo."""
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"cpu_model": model or "unknown", "cpu_amx_bf16": "amx_bf16" in flags}


def resolve_precision(requested: str, *, cuda: bool, bf16_supported: bool, cpu_amx_bf16: bool = False) -> Precision:
    """'auto' is bf16 on a bf16-capable GPU, fp16 on an older GPU; on CPU bf16 autocast where the CPU has
    AMX-BF16, fp32 elsewhere. Explicit values are checked."""
    if requested == "auto":
        if not cuda:
            return "bf16" if cpu_amx_bf16 else "fp32"
        return "bf16" if bf16_supported else "fp16"
    if requested == "bf16" and cuda and not bf16_supported:
        raise ValueError("train.precision=bf16, but this GPU has no bf16 support (Ampere or newer); use fp16 or auto")
    if requested == "fp16" and not cuda:
        raise ValueError("train.precision=fp16 needs a CUDA GPU (loss-scaled fp16 AMP); on CPU use fp32 or bf16")
    if requested not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"train.precision: unknown value {requested!r}")
    return requested  # type: ignore[return-value]


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
                layers_to_transform=last_layers(model, config.lora_last_layers),
                bias="none",
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(model, lora)
        # so that the saved folder loads alone: `models.load_model(output_dir)` reads this field
        model.peft_config["default"].base_model_name_or_path = base_ref
    model.config.use_cache = False  # no KV cache while training (and required with gradient checkpointing)
    return model, tokenizer, base_ref, targets


def last_layers(model: Any, n: int | None) -> list[int] | None:
    """Indices of the model's last n decoder layers (None for all of them)."""
    if n is None:
        return None
    total = int(model.config.num_hidden_layers)
    if n > total:
        raise ValueError(f"train.lora_last_layers={n}: the model has {total} decoder layers")
    return list(range(total - n, total))


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
    _check_method_runs_here(config, cuda)
    cpu = cpu_info()
    precision = resolve_precision(
        config.precision,
        cuda=cuda,
        bf16_supported=cuda and torch.cuda.is_bf16_supported(),
        cpu_amx_bf16=cpu["cpu_amx_bf16"],
    )
    output_dir, checkpoint_dir = _checked_folders(output_dir, checkpoint_dir)

    features, skipped = _trainable_rows(sft.rows)
    if not features:
        raise ValueError(f"no SFT row has a target token ({len(sft.rows)} rows, all labels -100)")
    dev = _dev_split(sft, config)
    rows_hash = data_hash(sft.rows)
    ref = student_reference(student)
    world_size = _world_size(config)
    fsdp = config.distributed == "fsdp" and world_size > 1

    # checkpoints (before the slow model load): fingerprint the run so that only an identical run is resumed
    resume_from = None
    if checkpoint_dir:
        fingerprint = run_fingerprint(config, ref, rows_hash, world_size, dev_hash(sft) if dev else "")
        resume_from = _prepare_checkpoints(checkpoint_dir, config, fingerprint)

    from transformers import set_seed

    # one seed for everything drawn before the Trainer takes over (LoRA A init, dropout)
    set_seed(config.seed)
    model, tokenizer, base_ref, targets = _load_for_training(ref, config, precision, cuda=cuda, fsdp=fsdp)

    # without a checkpoint_dir the Trainer still wants an output_dir; it writes nothing there
    scratch = None if checkpoint_dir else Path(tempfile.mkdtemp(prefix="distill-ner-trainer-"))
    try:
        args = _training_arguments(
            config,
            checkpoint_dir or scratch,
            precision,
            cuda=cuda,
            fsdp=fsdp,
            world_size=world_size,
            saving=bool(checkpoint_dir) and config.checkpoint_every > 0,
            model=model,
            evaluating=dev is not None,
        )
        trainer, tracking, mlflow_run = _make_trainer(
            model, tokenizer, args, features, config, log_to_mlflow=log_to_mlflow, callbacks=callbacks, dev=dev
        )
        counts = _data_counts(features, skipped, model) | _dev_counts(sft, dev)
        params: dict[str, Any] = {}
        if mlflow_run:
            params = (
                _run_params(
                    config,
                    counts,
                    ref=ref,
                    base_ref=base_ref,
                    rows_hash=rows_hash,
                    precision=precision,
                    targets=targets,
                    world_size=args.world_size,
                )
                | cpu
                # what dev/score is: uniner_f1 (NER), tree_score (extraction)
                | ({"dev_metric": dev[2]} if dev else {})
            )
            mlflow_run.log_params(params)

        if cuda:
            torch.cuda.reset_peak_memory_stats()
        if resume_from:
            logger.info("resuming from %s", resume_from)
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)

        history, dev_history, metrics = _save_result(
            trainer,
            tracking,
            mlflow_run,
            output_dir,
            config,
            counts,
            cuda=cuda,
            about={
                "student": ref,
                "base_model": base_ref,
                "method": config.method,
                "precision": precision,
                "lora_target_modules": targets,
                "data_hash": rows_hash,
                "world_size": args.world_size,
            },
        )
        trainer.accelerator.wait_for_everyone()
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)

    return TrainResult(
        output_dir=str(output_dir),
        metrics=metrics,
        history=history,
        dev_history=dev_history,
        best_step=trainer.state.best_global_step if dev else None,
        logged_params={k: str(v)[:6000] for k, v in params.items()},
        logged_metrics=_final_mlflow_metrics(metrics) if mlflow_run else {},
        data_hash=rows_hash,
        config=config.model_dump(),
    )


# ------------------------------------------------------------------------------------ train_student's parts


def _dev_split(sft: SFTDataset, config: TrainConfig) -> tuple[list[SFTRow], list[Any], str] | None:
    """(dev rows, capped dev questions, metric name) when the run evaluates; refuses eval_every without a split."""
    from distill_ner.training.dev import capped_queries, dev_metric, rows_of

    if not config.eval_every:
        return None
    if not sft.dev_queries and not sft.dev_rows:
        raise ValueError(
            "train.eval_every > 0 but the SFT set has no dev split: set sft.dev_fraction (e.g. 0.1), "
            "or train.eval_every: 0"
        )
    if sft.dev_queries:
        dev_metric(sft.dev_metric)  # an unknown metric fails before the model loads
    queries = capped_queries(sft.dev_queries, config.dev_max_queries)
    return rows_of(sft.dev_rows, queries), queries, sft.dev_metric


def _dev_counts(sft: SFTDataset, dev: tuple[list[SFTRow], list[Any], str] | None) -> dict[str, int]:
    if dev is None:
        return {}
    return {"dev_rows": len(dev[0]), "dev_queries": len(dev[1]), "dev_queries_available": len(sft.dev_queries)}


def _dev_history(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    prefix = "eval_dev_"
    return [
        {"step": float(e["step"]), **{k.removeprefix("eval_"): float(v) for k, v in e.items() if k.startswith(prefix)}}
        for e in log_history
        if any(k.startswith(prefix) for k in e)
    ]


def _check_method_runs_here(config: TrainConfig, cuda: bool) -> None:
    """Before anything is loaded: 4-bit NF4 training runs only on CUDA GPUs, with bitsandbytes."""
    if config.method != "qlora":
        return
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


def _checked_folders(output_dir: Path, checkpoint_dir: Path | None) -> tuple[Path, Path | None]:
    """Both folders absolute; refuses a checkpoint folder inside the result and a result folder that is not ours."""
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
    return output_dir, checkpoint_dir


def _world_size(config: TrainConfig) -> int:
    """The number of processes `accelerate launch` started (1 in a plain process); warns where the config
    and the launch disagree."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if config.num_processes > 1 and world_size == 1:
        logger.warning(
            "train.num_processes=%d but this process was not started by `accelerate launch`: training on one process",
            config.num_processes,
        )
    elif world_size > 1 and config.distributed == "none":
        logger.warning("launched on %d processes with train.distributed=none: the Trainer uses DDP", world_size)
    return world_size


def _fingerprint_diff(saved: dict[str, Any], fingerprint: dict[str, Any]) -> list[str]:
    top = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
    train = sorted(
        f"train.{k}"
        for k in set(saved.get("train", {})) | set(fingerprint["train"])
        if saved.get("train", {}).get(k) != fingerprint["train"].get(k)
    )
    return top + train


def _prepare_checkpoints(checkpoint_dir: Path, config: TrainConfig, fingerprint: dict[str, Any]) -> Path | None:
    """The checkpoint to resume from (None: start over). Refuses checkpoints of a different run; a fresh start
    clears older checkpoints; the main process records this run's fingerprint."""
    is_main = int(os.environ.get("RANK", "0")) == 0
    found = last_checkpoint(checkpoint_dir)
    saved_fp_path = checkpoint_dir / FINGERPRINT_FILE
    resume_from: Path | None = None
    if config.resume and found:
        if saved_fp_path.is_file():
            saved = json.loads(saved_fp_path.read_text())
            if saved != fingerprint:
                raise ValueError(
                    f"checkpoints in {checkpoint_dir} come from a different run "
                    f"(differs in: {', '.join(_fingerprint_diff(saved, fingerprint))}); "
                    "set train.resume=false to start over (its checkpoints are removed) "
                    "or use another checkpoint_dir"
                )
        else:
            logger.warning("%s has checkpoints but no %s: resuming without checking", checkpoint_dir, FINGERPRINT_FILE)
        resume_from = found
    elif is_main and checkpoint_dir.is_dir():
        # a fresh start must not leave older, higher-numbered checkpoints for a later resume to pick
        for old in checkpoint_dir.glob("checkpoint-*"):
            shutil.rmtree(old, ignore_errors=True)
    if is_main:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        saved_fp_path.write_text(json.dumps(fingerprint, indent=1))
    return resume_from


def _training_arguments(
    config: TrainConfig,
    trainer_dir: Path,
    precision: Precision,
    *,
    cuda: bool,
    fsdp: bool,
    world_size: int,
    saving: bool,
    model: Any,
    evaluating: bool = False,
) -> Any:
    from transformers import TrainingArguments

    # Dev evaluation: every eval_every steps the Trainer calls StudentTrainer.evaluate, saves a checkpoint
    # there (each one a candidate; the best is never rotated away), and loads the best one at the end.
    if evaluating:
        saving = True
    save_steps = config.eval_every if evaluating else config.checkpoint_every
    return TrainingArguments(
        output_dir=str(trainer_dir),
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
        save_steps=save_steps if saving else 500,
        save_total_limit=2,
        eval_strategy="steps" if evaluating else "no",
        eval_steps=config.eval_every if evaluating else None,
        load_best_model_at_end=evaluating,
        metric_for_best_model=f"dev_{config.dev_select}" if evaluating else None,
        greater_is_better=(config.dev_select == "score" and config.dev_direction == "maximize") if evaluating else None,
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


def _make_trainer(
    model: Any,
    tokenizer: Any,
    args: Any,
    features: list[dict[str, list[int]]],
    config: TrainConfig,
    *,
    log_to_mlflow: bool,
    callbacks: Sequence[Any] | None,
    dev: tuple[list[SFTRow], list[Any], str] | None = None,
) -> tuple[Any, Any, Any]:
    """(trainer, tracking callback, the caller's MLflow run or None)."""
    from transformers import EarlyStoppingCallback

    from distill_ner.training.loss import supports_supervised_logits
    from distill_ner.training.trainer import (
        EvaluateLastStep,
        MlflowRun,
        PadToLongestCollator,
        SeededBatchOrderSampler,
        StudentTrainer,
        TrackingCallback,
    )

    batch_order = SeededBatchOrderSampler(
        [len(f["input_ids"]) for f in features],
        config.per_device_batch_size * args.world_size,
        seed=config.seed,
        group_by_length=config.group_by_length,
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    mlflow_run = MlflowRun.find() if (log_to_mlflow and args.process_index == 0) else None
    tracking = TrackingCallback(mlflow_run)
    extra = []
    if dev is not None:
        extra.append(EvaluateLastStep())
        if config.early_stopping_patience:
            extra.append(EarlyStoppingCallback(config.early_stopping_patience, config.early_stopping_min_delta))
    trainer = StudentTrainer(
        model=model,
        args=args,
        train_dataset=features,
        # what StudentTrainer.evaluate scores (the Trainer wants one whenever it evaluates)
        eval_dataset=[{"input_ids": r.input_ids, "labels": r.labels} for r in dev[0]] if dev else None,
        data_collator=PadToLongestCollator(pad_id, config.pad_to_multiple_of),
        processing_class=tokenizer,
        callbacks=[tracking, *extra, *(callbacks or [])],
        batch_order=batch_order,
        supervised_logits_only=config.supervised_logits_only and supports_supervised_logits(model),
        dev=dev,
        dev_batch_size=config.dev_batch_size,
        dev_max_new_tokens=config.dev_max_new_tokens,
    )
    return trainer, tracking, mlflow_run


def _data_counts(features: list[dict[str, list[int]]], skipped: int, model: Any) -> dict[str, int]:
    return {
        "n_rows": len(features),
        "n_rows_skipped": skipped,
        "n_tokens": sum(len(f["input_ids"]) for f in features),
        "n_target_tokens": sum(sum(1 for x in f["labels"][1:] if x != IGNORE_INDEX) for f in features),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_params": sum(p.numel() for p in model.parameters()),
    }


def _run_params(
    config: TrainConfig,
    counts: dict[str, int],
    *,
    ref: str,
    base_ref: str,
    rows_hash: str,
    precision: Precision,
    targets: str | list[str] | None,
    world_size: int,
) -> dict[str, Any]:
    """The MLflow parameters of a training run."""
    return {
        **{f"train.{k}": json.dumps(v) if isinstance(v, list) else v for k, v in config.model_dump().items()},
        # max_steps overrides epochs: say so rather than show epochs that never ran
        **({"train.epochs": f"unused (max_steps {config.max_steps})"} if config.max_steps > 0 else {}),
        "student": ref,
        "base_model": base_ref,
        "data_hash": rows_hash,
        "precision_resolved": precision,
        "lora_target_modules": targets,
        **counts,  # rows (kept, skipped), tokens (all, target), parameters (trainable, total)
        "world_size": world_size,
        "effective_batch_size": config.per_device_batch_size * config.gradient_accumulation_steps * world_size,
    }


def _run_metrics(
    trainer: Any,
    tracking: Any,
    history: list[dict[str, float]],
    dev: list[dict[str, float]],
    counts: dict[str, int],
    *,
    cuda: bool,
) -> dict[str, float]:
    """The run's summary metrics. No NaN anywhere: the result travels as JSON (launch.py, ZenML metadata);
    undefined values are left out."""
    steps_run = trainer.state.global_step - tracking.start_step
    runtime = max(tracking.ended - tracking.started, 1e-9)
    trained_tokens = float(tracking.end_tokens - tracking.start_tokens)
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
        "n_rows": float(counts["n_rows"]),
        "n_rows_skipped": float(counts["n_rows_skipped"]),
        "n_target_tokens": float(counts["n_target_tokens"]),
        "trainable_params": float(counts["trainable_params"]),
        "resumed_from_step": float(tracking.start_step),
        "peak_cpu_rss_mb": _peak_rss_mb(),  # process peak, model loading included
    }
    if dev:
        metrics["dev_evaluations"] = float(len(dev))
        # the dev evaluations' share of the loop's wall time (this call's evaluations only)
        metrics["dev_seconds"] = sum(e.get("dev_seconds", 0.0) for e in dev if e["step"] > tracking.start_step)
        if trainer.state.best_global_step is not None:
            metrics["best_step"] = float(trainer.state.best_global_step)
            # the kept checkpoint's dev numbers, whichever of them selected it (train.dev_select)
            best = next((e for e in dev if int(e["step"]) == trainer.state.best_global_step), {})
            metrics |= {f"best_{k}": v for k, v in best.items() if k in ("dev_score", "dev_loss") and math.isfinite(v)}
    if cuda:
        import torch

        metrics["peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return metrics


def _save_result(
    trainer: Any,
    tracking: Any,
    mlflow_run: Any,
    output_dir: Path,
    config: TrainConfig,
    counts: dict[str, int],
    *,
    cuda: bool,
    about: dict[str, Any],
) -> tuple[list[dict[str, float]], list[dict[str, float]], dict[str, float]]:
    """(loss history, dev history, summary metrics). Every rank takes part in the save (FSDP gathers the full state
    dict); the main process writes the result and logs the final metrics."""
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
    dev_history = _dev_history(trainer.state.log_history)
    metrics = _run_metrics(trainer, tracking, history, dev_history, counts, cuda=cuda)
    if trainer.is_world_process_zero():
        record = {
            **about,
            "train": config.model_dump(),
            "metrics": metrics,
            # the learning curve on the dev split; the weights saved are those of metrics["best_step"]
            "dev_history": dev_history,
        }
        _publish(
            staging, output_dir, record, config, base_ref=about["base_model"], precision=about["precision"], cuda=cuda
        )
        if mlflow_run:
            try:
                mlflow_run.log_metrics(_final_mlflow_metrics(metrics), step=trainer.state.global_step)
            except Exception as exc:
                logger.warning("MLflow final metrics not logged: %s", exc)
    return history, dev_history, metrics


def _publish(
    staging: Path,
    output_dir: Path,
    record: dict[str, Any],
    config: TrainConfig,
    *,
    base_ref: str,
    precision: Precision,
    cuda: bool,
) -> None:
    """Completes the saved folder (adapter base, merged model, training_config.json) and moves it under its
    final name: only a complete result ever appears there."""
    (staging / "training_args.bin").unlink(missing_ok=True)  # a pickle; training_config.json says it all
    if config.method != "full":
        adapter_cfg = staging / "adapter_config.json"
        saved = json.loads(adapter_cfg.read_text())
        saved["base_model_name_or_path"] = base_ref
        adapter_cfg.write_text(json.dumps(saved, indent=2, sort_keys=True))
        if config.merge_adapter:
            _merge_into(staging, base_ref, precision, cuda, config.attn_implementation)
    (staging / "training_config.json").write_text(json.dumps(record, indent=2))
    if output_dir.exists():
        shutil.rmtree(output_dir)
    staging.rename(output_dir)


def _final_mlflow_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {f"train/{k}": v for k, v in metrics.items() if k in _FINAL_MLFLOW_METRICS}


_FINAL_MLFLOW_METRICS = {
    "best_step",
    "best_dev_score",
    "best_dev_loss",
    "dev_evaluations",
    "dev_seconds",
    "final_loss",
    "tokens_per_s",
    "trained_tokens",
    "train_runtime_s",
    "seconds_per_step",
    "peak_cpu_rss_mb",
    "peak_gpu_mem_mb",
}
