"""The trained student's model card: facts from the folder training leaves, shown by its ZenML materializer."""

from __future__ import annotations

import json
from pathlib import Path

from distill_ner.model_card import card_facts, model_card_markdown


def student_folder(root: Path) -> Path:
    folder = root / "student"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 2**20)
    record = {
        "student": "models/tiny",
        "base_model": "/abs/models/tiny",
        "method": "lora",
        "precision": "fp32",
        "data_hash": "0123456789abcdef",
        "train": {"learning_rate": 0.002},
        "metrics": {
            "n_rows": 24,
            "n_target_tokens": 812,
            "steps": 16.0,
            "first_loss": 3.21,
            "final_loss": 1.05,
            "trainable_params": 4096.0,
            "train_runtime_s": 12.5,
        },
    }
    (folder / "training_config.json").write_text(json.dumps(record))
    return folder


def test_card_states_base_method_data_steps_loss_and_size(tmp_path: Path) -> None:
    folder = student_folder(tmp_path)
    card = model_card_markdown(folder)
    for expected in (
        "# Student: models/tiny",
        "| Base model | `/abs/models/tiny` |",
        "| Method | lora (fp32) |",
        "24 SFT rows, 812 target tokens (data hash 0123456789ab)",
        "| Steps | 16 at learning rate 0.002 |",
        "| Loss (first -> last logged) | 3.2100 -> 1.0500 |",
        "| Size on disk | 1.0 MiB |",
    ):
        assert expected in card, (expected, card)
    assert card_facts(folder)["steps"] == 16 and card_facts(folder)["final_loss"] == 1.05


def test_card_of_a_folder_without_training_record(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"x" * 1024)
    assert "No training record" in model_card_markdown(tmp_path)


def test_materializer_round_trips_the_folder_and_writes_the_card(tmp_path: Path) -> None:
    from zenml.enums import VisualizationType

    from materializers.model import StudentModelMaterializer

    folder = student_folder(tmp_path)
    store = tmp_path / "artifact"
    store.mkdir()
    materializer = StudentModelMaterializer(str(store))
    materializer.save(folder)
    [(path, kind)] = materializer.save_visualizations(folder).items()
    assert kind == VisualizationType.MARKDOWN and "| Method | lora (fp32) |" in Path(path).read_text()
    assert not list(store.rglob("*.pkl"))
    loaded = materializer.load(Path)
    assert (loaded / "training_config.json").read_bytes() == (folder / "training_config.json").read_bytes()
    assert materializer.extract_metadata(folder)["sft_rows"] == 24


def test_card_shows_the_dev_curve_and_the_kept_checkpoint(tmp_path: Path) -> None:
    folder = student_folder(tmp_path)
    record = json.loads((folder / "training_config.json").read_text())
    record["metrics"] |= {"best_step": 8.0, "best_dev_score": 0.61}
    record["dev_history"] = [
        {"step": 4.0, "dev_loss": 0.9, "dev_score": 0.4},
        {"step": 8.0, "dev_loss": 0.7, "dev_score": 0.61},
        {"step": 12.0, "dev_loss": 0.72, "dev_score": 0.55},
    ]
    (folder / "training_config.json").write_text(json.dumps(record))
    card = model_card_markdown(folder)
    assert "| Kept checkpoint | step 8 (best dev score 0.6100) |" in card
    assert "## Dev curve" in card and "| 8 | 0.7000 | 0.6100 | kept |" in card and "| 12 | 0.7200 | 0.5500 |  |" in card
    assert card_facts(folder)["best_step"] == 8
