"""A trained student's model card, from the folder training leaves (`training_config.json` + weights):
base model, method, data, steps, loss and size, as Markdown (ZenML shows it on the model artifact)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def folder_size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def training_record(model_dir: str | Path) -> dict[str, Any]:
    record = Path(model_dir) / "training_config.json"
    return json.loads(record.read_text()) if record.exists() else {}


def card_facts(model_dir: str | Path) -> dict[str, Any]:
    """The card's numbers, flat (also the artifact's metadata)."""
    model_dir = Path(model_dir)
    record = training_record(model_dir)
    metrics = record.get("metrics", {})
    train = record.get("train", {})
    facts: dict[str, Any] = {
        "student": record.get("student", "?"),
        "base_model": record.get("base_model", "?"),
        "method": record.get("method", "?"),
        "precision": record.get("precision", "?"),
        "sft_rows": int(metrics.get("n_rows", 0)),
        "target_tokens": int(metrics.get("n_target_tokens", 0)),
        "data_hash": str(record.get("data_hash", ""))[:12],
        "steps": int(metrics.get("steps", 0)),
        "learning_rate": train.get("learning_rate"),
        "first_loss": metrics.get("first_loss"),
        "final_loss": metrics.get("final_loss"),
        "trainable_params": int(metrics.get("trainable_params", 0)),
        "train_runtime_s": metrics.get("train_runtime_s"),
        "best_step": int(metrics["best_step"]) if "best_step" in metrics else None,
        "best_dev_score": metrics.get("best_dev_score"),
        "size_mb": round(folder_size_mb(model_dir), 2),
        "merged": (model_dir / "merged" / "config.json").exists(),
    }
    return {k: v for k, v in facts.items() if v is not None}


def model_card_markdown(model_dir: str | Path) -> str:
    f = card_facts(model_dir)
    if not training_record(model_dir):
        return f"# Model\n\nNo training record (training_config.json) in this folder; {f['size_mb']} MiB of files.\n"
    loss = (
        f"{f['first_loss']:.4f} -> {f['final_loss']:.4f}" if "first_loss" in f and "final_loss" in f else "not recorded"
    )
    rows = [
        ("Base model", f"`{f['base_model']}`"),
        ("Method", f"{f['method']} ({f['precision']})" + (", adapter merged" if f["merged"] else "")),
        ("Data", f"{f['sft_rows']} SFT rows, {f['target_tokens']} target tokens (data hash {f['data_hash']})"),
        ("Steps", f"{f['steps']}" + (f" at learning rate {f['learning_rate']}" if "learning_rate" in f else "")),
        ("Loss (first -> last logged)", loss),
        ("Trainable parameters", f"{f['trainable_params']:,}"),
        ("Size on disk", f"{f['size_mb']} MiB"),
    ]
    if "train_runtime_s" in f:
        rows.append(("Training time", f"{f['train_runtime_s']:.1f} s"))
    if "best_step" in f:
        rows.append(("Kept checkpoint", f"step {f['best_step']} (best dev score {f.get('best_dev_score', 0):.4f})"))
    lines = [f"# Student: {f['student']}", "", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]
    curve = training_record(model_dir).get("dev_history", [])
    if curve:
        lines += ["", "## Dev curve", "", "| step | dev loss | dev score | |", "|---:|---:|---:|---|"]
        for e in curve:
            kept = "kept" if int(e["step"]) == f.get("best_step") else ""
            loss = f"{e['dev_loss']:.4f}" if "dev_loss" in e else ""
            score = f"{e['dev_score']:.4f}" if "dev_score" in e else ""
            lines.append(f"| {int(e['step'])} | {loss} | {score} | {kept} |")
    return "\n".join(lines) + "\n"
