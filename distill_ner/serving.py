"""Serving a student as an MLflow pyfunc model, shared by every recipe: staging the model folder, logging it
from code, and resolving the staged folder when the pyfunc loads. What a recipe adds is a `Flavour`: the
models-from-code file, signature, input example and settings of its call shape (distill_ner.ner.serving,
distill_ner.extraction.serving).

A PEFT adapter names its base model. When that base is a local folder (the demo's SmolLM2 or the tiny
test model) the folder is bundled under `model/base/` as it is (same bytes, so the served model is the
model the gate evaluated; hard links, not copies, while staging), and `adapter_config.json` is kept
unchanged (so the logged adapter is byte-identical to the trained one). On load, `StagedModel.model_ref`
points the adapter at the bundled base. A hub id base is kept as a reference: loading then needs the hub
or its cache. A folder with `merged/` (train.merge_adapter) is logged as that merged model alone.

Measured for the demo student (SmolLM2-135M-Instruct fp32 + a r=16 LoRA on q/k/v/o, 10.4 MiB):
the logged model is 527 MiB (base 517 MiB); with `base_dtype="float16"` 271 MiB (base 260 MiB), at the
cost of serving weights rounded to fp16, which the gate did not evaluate, so the default keeps them as
they are. Only new model content is logged (registry.register_and_gate reuses a registered version).
Logging the NER flavour took 45 s on a 2-core machine busy with other jobs (load average 5): about 24 s
of it is MLflow's validation of the input example (load 4 s, then 2 x 256 greedy tokens, 20 s, as the
untuned base never stops early); the other ~21 s (by difference) is saving: the 517 MiB copied into the
model folder, then into the artifact store.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import mlflow.pyfunc

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
BASE_SUBDIR = "base"
# overrides the logged model_config's backend where the model is loaded (`distill-ner serve --backend`)
BACKEND_ENV = "DISTILL_NER_BACKEND"
# distributions the pyfunc needs at load time: generation stack, MLflow (and its pickle), data frames
REQUIREMENTS = (
    "mlflow",
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "peft",
    "accelerate",
    "pandas",
    "numpy",
    "pydantic",
    "tqdm",
)


@runtime_checkable
class Flavour(Protocol):
    """A recipe's served call shape, with its typed serving settings (each recipe's pydantic model)."""

    # weights of the bundled local base: None keeps them as trained, e.g. "float16" halves the model
    base_dtype: str | None

    def python_model(self) -> Path:
        """The models-from-code file that calls mlflow.models.set_model (code is logged, never a pickle)."""
        ...

    def signature(self) -> Any:
        """The MLflow ModelSignature of the call shape."""
        ...

    def input_example(self) -> Any:
        """Rows MLflow predicts on while logging, to validate the logged model."""
        ...

    def pyfunc_config(self) -> dict[str, Any]:
        """The settings the pyfunc reads in load_context (context.model_config)."""
        ...


def pip_requirements() -> list[str]:
    """Pinned to what is installed here; a local version label (`2.13.0+cpu`) is dropped, since only the
    PyTorch index serves such wheels and a plain pin resolves on PyPI."""
    pins = []
    for dist in REQUIREMENTS:
        try:
            pins.append(f"{dist}=={metadata.version(dist).split('+', 1)[0]}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def has_bundled_base(folder: Path) -> bool:
    return (folder / "adapter_config.json").exists() and (folder / BASE_SUBDIR / "config.json").exists()


def bundled_adapter_view(folder: Path, view: Path) -> Path | None:
    """For a logged adapter with its base bundled under `base/`: a folder `view` of symlinks to the adapter
    whose adapter_config.json names that bundled base. None for any other folder."""
    if not has_bundled_base(folder):
        return None
    view.mkdir(parents=True, exist_ok=True)
    for item in folder.iterdir():
        if item.name not in (BASE_SUBDIR, "adapter_config.json"):
            (view / item.name).symlink_to(item.resolve())
    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = str((folder / BASE_SUBDIR).resolve())
    (view / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2, sort_keys=True))
    return view


def invalid_input(exc: Exception) -> Exception:
    """A bad request row as MLflow's INVALID_PARAMETER_VALUE: the scoring server answers 400 with this message
    and no stack trace (any other exception becomes "unexpected error" followed by a traceback)."""
    from mlflow.exceptions import MlflowException

    return MlflowException.invalid_parameter_value(str(exc))


class StagedModel(mlflow.pyfunc.PythonModel):
    """Base of every recipe's pyfunc: resolves the staged `model` artifact into a loadable reference."""

    _tmp: tempfile.TemporaryDirectory[str] | None = None

    def model_ref(self, context: Any) -> str:
        """The folder itself, or, for an adapter with a bundled base, a view of it that names that base."""
        folder = Path(context.artifacts["model"])
        if not has_bundled_base(folder):
            return str(folder)
        self._tmp = tempfile.TemporaryDirectory(prefix="staged_adapter_")
        return str(bundled_adapter_view(folder, Path(self._tmp.name)))


# ------------------------------------------------------------------------------------------- logging


def _link_or_copy(src: Path, dst: Path) -> None:
    """Stage a file without copying its bytes where the file system allows (MLflow copies them anyway)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _stage_tree(src: Path, dst: Path, skip: Iterable[str] = ()) -> None:
    skip = set(skip)
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if rel.parts[0] in skip or not path.is_file():
            continue
        _link_or_copy(path, dst / rel)


def local_base(model_dir: Path) -> Path | None:
    """The adapter's base when it is a local folder (absolute, or relative to the working directory)."""
    from distill_ner.models import adapter_base, is_adapter

    if not is_adapter(str(model_dir)):
        return None
    base = Path(adapter_base(str(model_dir))).expanduser()
    return base.resolve() if (base / "config.json").exists() else None


def stage_model(model_dir: str | Path, dest: Path, base_dtype: str | None = None) -> Path:
    """Lay out the folder logged as the `model` artifact; returns it."""
    model_dir = Path(model_dir)
    merged = model_dir / "merged"
    if (merged / "config.json").exists():
        # training already merged the adapter (train.merge_adapter): that folder stands alone
        _stage_tree(merged, dest)
        return dest
    _stage_tree(model_dir, dest, skip={"merged"})
    base = local_base(model_dir)
    if base is None:
        if (model_dir / "adapter_config.json").exists():
            from distill_ner.models import adapter_base

            logger.warning(
                "adapter base %s is not a local folder: the logged model refers to it", adapter_base(str(model_dir))
            )
        return dest
    if base_dtype is None:
        _stage_tree(base, dest / BASE_SUBDIR)
    else:
        import torch

        from distill_ner.models import load_model, load_tokenizer

        model = load_model(str(base), dtype=getattr(torch, base_dtype))
        model.save_pretrained(dest / BASE_SUBDIR, safe_serialization=True)
        load_tokenizer(str(base)).save_pretrained(dest / BASE_SUBDIR)
    return dest


def log_model(
    model_dir: str | Path,
    flavour: Flavour,
    artifact_path: str = "model",
    *,
    registered_model_name: str | None = None,
) -> Any:
    """Log the model folder as an MLflow pyfunc of `flavour` in the active run; returns the ModelInfo
    (`.model_uri`). MLflow validates the input example by loading the logged model and predicting on it
    (most of the logging time; see the module docstring); a failure there is logged by MLflow as a warning.
    """
    import mlflow

    with tempfile.TemporaryDirectory(prefix="model_stage_") as tmp:
        staged = stage_model(model_dir, Path(tmp) / "model", base_dtype=flavour.base_dtype)
        # the package as source only: MLflow copies a code path as it is, byte-code caches included
        code = Path(tmp) / "code" / PACKAGE_DIR.name
        shutil.copytree(PACKAGE_DIR, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        return mlflow.pyfunc.log_model(
            name=artifact_path,
            python_model=str(flavour.python_model()),
            artifacts={"model": str(staged)},
            code_paths=[str(code)],  # the package folder (MLflow puts its parent on sys.path)
            pip_requirements=pip_requirements(),
            signature=flavour.signature(),
            input_example=flavour.input_example(),
            model_config=flavour.pyfunc_config(),
            registered_model_name=registered_model_name,
        )
