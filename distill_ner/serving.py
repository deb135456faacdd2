"""The student as an MLflow pyfunc model: log it, load it (`models:/distill-ner@production`), serve it.

Input: a pandas DataFrame (or a list of dicts) with `text` (str) and `types` (a list of str, or one
comma-separated str). Output: one `{"text", "entities": {type: [strings]}}` per row, in input order.
Generation is distill_ner.ner.inference's Predictor (over the shared engine); this module only adapts rows to it.

A PEFT adapter names its base model. When that base is a local folder (the demo's SmolLM2 or the tiny
test model) the folder is bundled under `model/base/` as it is (same bytes, so the served model is the
model the gate evaluated; hard links, not copies, while staging), and `adapter_config.json` is kept
unchanged (so the logged adapter is byte-identical to the trained one). load_context points the
adapter at the bundled base. A hub id base is kept as a reference: loading then needs the hub or its
cache. A folder with `merged/` (train.merge_adapter) is logged as that merged model alone.

Measured for the demo student (SmolLM2-135M-Instruct fp32 + a r=16 LoRA on q/k/v/o, 10.4 MiB):
the logged model is 527 MiB (base 517 MiB); with `base_dtype="float16"` 271 MiB (base 260 MiB), at the
cost of serving weights rounded to fp16, which the gate did not evaluate, so the default keeps them as
they are. Only new model content is logged (registry.register_and_gate reuses a registered version).
log_ner_model took 45 s on a 2-core machine busy with other jobs (load average 5): about 24 s of it is
MLflow's validation of the input example (load 4 s, then 2 x 256 greedy tokens, 20 s, as the untuned
base never stops early); the other ~21 s (by difference) is saving: the 517 MiB copied into the model
folder, then into the artifact store.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow.pyfunc

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
BASE_SUBDIR = "base"
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
INPUT_EXAMPLE = [{"text": "Marie Curie was born in Warsaw.", "types": ["person", "location"]}]


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


def ner_signature() -> Any:
    """text + types in; text + entities (type -> strings) out."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, Array, ColSpec, DataType, Map, Schema

    return ModelSignature(
        # `types` is a list of strings or one comma-separated string: AnyType accepts both
        inputs=Schema([ColSpec(DataType.string, "text"), ColSpec(AnyType(), "types")]),
        outputs=Schema([ColSpec(DataType.string, "text"), ColSpec(Map(Array(DataType.string)), "entities")]),
    )


# ------------------------------------------------------------------------------------------ the model


def parse_types(value: Any) -> list[str]:
    """A list/array of type names, or a comma-separated string, as a clean list."""
    if value is None:
        items: Iterable[Any] = []
    elif isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, Iterable):
        items = list(value)
    else:
        raise TypeError(f"`types` must be a list of strings or a comma-separated string, not {type(value).__name__}")
    types = [str(t).strip() for t in items if str(t).strip()]
    if not types:
        raise ValueError("every row needs at least one entity type in `types`")
    return list(dict.fromkeys(types))


def to_rows(model_input: Any) -> list[tuple[str, list[str]]]:
    """(text, types) per row from a DataFrame, a list of dicts or a single dict."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        records = model_input.to_dict(orient="records")
    elif isinstance(model_input, Mapping):
        records = [dict(model_input)]
    elif isinstance(model_input, Sequence) and not isinstance(model_input, str):
        records = [dict(r) for r in model_input]
    else:
        raise TypeError(f"expected a DataFrame or a list of {{'text', 'types'}} dicts, got {type(model_input).__name__}")
    rows = []
    for i, record in enumerate(records):
        if not isinstance(record.get("text"), str):
            raise ValueError(f"row {i}: `text` must be a string")
        rows.append((record["text"], parse_types(record.get("types"))))
    return rows


def invalid_input(exc: Exception) -> Exception:
    """A bad request row as MLflow's INVALID_PARAMETER_VALUE: the scoring server answers 400 with this message
    and no stack trace (any other exception becomes "unexpected error" followed by a traceback)."""
    from mlflow.exceptions import MlflowException

    return MlflowException.invalid_parameter_value(str(exc))


class NERModel(mlflow.pyfunc.PythonModel):
    """Open NER with the distilled student: one generation per (text, type), as in UniversalNER."""

    def load_context(self, context: Any) -> None:
        from distill_ner.ner.inference import Predictor

        config = dict(context.model_config or {})
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        ref = self._model_ref(Path(context.artifacts["model"]))
        self.predictor = Predictor(
            ref,
            # entities as the model wrote them, not the lowercased form the UniNER metric compares
            surface_forms=bool(config.get("surface_forms", True)),
            backend=config.get("backend", "transformers"),
            batch_size=int(config.get("batch_size", 16)),
            max_new_tokens=int(config.get("max_new_tokens", 256)),
        )

    def _model_ref(self, folder: Path) -> str:
        """The folder itself, or, for an adapter with a bundled base, a view of it that names that base."""
        base = folder / BASE_SUBDIR
        if not (folder / "adapter_config.json").exists() or not (base / "config.json").exists():
            return str(folder)
        self._tmp = tempfile.TemporaryDirectory(prefix="ner_adapter_")
        view = Path(self._tmp.name)
        for item in folder.iterdir():
            if item.name not in (BASE_SUBDIR, "adapter_config.json"):
                (view / item.name).symlink_to(item.resolve())
        adapter_config = json.loads((folder / "adapter_config.json").read_text())
        adapter_config["base_model_name_or_path"] = str(base.resolve())
        (view / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2, sort_keys=True))
        return str(view)

    # `model_input` carries no type hint on purpose: MLflow 3 reads that hint as the input schema and
    # would then bypass the signature's DataFrame handling (see `to_rows` for what is accepted)
    def predict(self, context: Any, model_input, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:  # noqa: ANN001
        try:
            rows = to_rows(model_input)
        except (TypeError, ValueError) as exc:
            raise invalid_input(exc) from None
        # the engine takes one type list per call: group rows that ask for the same types
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, (_, types) in enumerate(rows):
            groups.setdefault(tuple(types), []).append(i)
        out: list[dict[str, Any] | None] = [None] * len(rows)
        for types, indices in groups.items():
            found = self.predictor.predict([rows[i][0] for i in indices], list(types))
            for i, entities in zip(indices, found, strict=True):
                out[i] = {"text": rows[i][0], "entities": {t: list(entities.get(t, [])) for t in types}}
        return out  # type: ignore[return-value]


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

            logger.warning("adapter base %s is not a local folder: the logged model refers to it", adapter_base(str(model_dir)))
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


def log_ner_model(
    model_dir: str | Path,
    artifact_path: str = "model",
    *,
    registered_model_name: str | None = None,
    base_dtype: str | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 256,
    python_model: str | Path | None = None,
    signature: Any = None,
    input_example: Any = None,
    model_config: Mapping[str, Any] | None = None,
) -> Any:
    """Log the model folder as an MLflow pyfunc in the active run; returns the ModelInfo (`.model_uri`).

    `max_new_tokens` (UniNER's 256 by default) and `batch_size` are the serving engine's settings.
    Another flavour over the same staged folder (e.g. distill_ner.extraction.serving) passes its own
    `python_model` (a models-from-code file that calls mlflow.models.set_model; code, never a pickle),
    `signature`, `input_example` and `model_config`. MLflow validates the input example
    by loading the logged model and predicting on it (most of the logging time; see the module
    docstring); a failure there is logged by MLflow as a warning.
    """
    import mlflow

    with tempfile.TemporaryDirectory(prefix="ner_stage_") as tmp:
        staged = stage_model(model_dir, Path(tmp) / "model", base_dtype=base_dtype)
        # the package as source only: MLflow copies a code path as it is, byte-code caches included
        code = Path(tmp) / "code" / PACKAGE_DIR.name
        shutil.copytree(PACKAGE_DIR, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        return mlflow.pyfunc.log_model(
            name=artifact_path,
            python_model=str(python_model or PACKAGE_DIR / "ner" / "pyfunc.py"),
            artifacts={"model": str(staged)},
            code_paths=[str(code)],  # the package folder (MLflow puts its parent on sys.path)
            pip_requirements=pip_requirements(),
            signature=signature or ner_signature(),
            input_example=input_example or INPUT_EXAMPLE,
            model_config=dict(model_config) if model_config is not None else {
                "backend": "transformers",
                "batch_size": batch_size,
                "max_new_tokens": max_new_tokens,
                "surface_forms": True,
            },
            registered_model_name=registered_model_name,
        )


FLAVOURS = ("ner", "extraction")


def flavour_log_kwargs(flavour: str = "ner", settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`log_ner_model` arguments for a served flavour: "ner" (this module: `batch_size`, `max_new_tokens`,
    `base_dtype`) or "extraction" (distill_ner.extraction.serving.log_kwargs: prompt format, indent, ...)."""
    settings = dict(settings or {})
    if flavour == "ner":
        return settings
    if flavour == "extraction":
        from distill_ner.extraction.serving import log_kwargs

        return log_kwargs(**settings)
    raise ValueError(f"unknown model flavour {flavour!r}; expected one of {', '.join(FLAVOURS)}")


# ------------------------------------------------------------------------------------------ using it


class NERPredictor:
    """A loaded pyfunc model with the package's call shape: predict(texts, types) -> [{"text", "entities"}]."""

    def __init__(self, model_uri: str):
        self.model_uri = model_uri
        self.pyfunc = mlflow.pyfunc.load_model(model_uri)

    def predict(self, texts: Sequence[str], types: Sequence[str] | str) -> list[dict[str, Any]]:
        types = parse_types(types)
        return list(self.pyfunc.predict([{"text": t, "types": types} for t in texts]))


def load_production(model_name: str = "distill-ner") -> NERPredictor:
    return NERPredictor(f"models:/{model_name}@production")


def predict(model_uri: str, texts: Sequence[str], types: Sequence[str] | str) -> list[dict[str, Any]]:
    return NERPredictor(model_uri).predict(texts, types)
