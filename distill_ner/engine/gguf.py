"""The student as a GGUF file, for llama.cpp, llama-cpp-python, Ollama and LM Studio.

    distill-ner export --model models:/distill-ner@production --format gguf --quant q4_k_m --ollama

The conversion is llama.cpp's own `convert_hf_to_gguf.py` (with the `gguf-py` it ships), taken from the
llama-cpp-python source distribution on PyPI of the version installed here (or a pinned one when
llama-cpp-python is absent), so the converter and the runtime that loads its output come from the same
llama.cpp commit. It is downloaded once with pip and kept in the user's cache folder,
`~/.cache/distill-ner/llama.cpp/<version>/` (`paths.user_cache_dir`), so every working directory reuses it.

* A LoRA adapter is merged into its base first (peft merge_and_unload); a full model folder is converted
  as it is. The HF folder's chat template (chat_template.jinja / tokenizer_config.json) goes into the
  GGUF as `tokenizer.chat_template`, so llama.cpp and Ollama render prompts as training did.
* f32, f16 and q8_0 are written by the converter itself; q4_k_m is quantised from an f32 GGUF by
  llama.cpp's quantizer (`llama_cpp.llama_model_quantize`, which needs llama-cpp-python).
* A tokenizer whose pre-tokenizer llama.cpp does not recognise by its hash fails conversion, with one
  exception made here: a bare byte-level BPE pre-tokenizer (HF's `ByteLevel` with its default regex, as
  in the project's tiny test model) is GPT-2's split, which llama.cpp knows as "gpt-2".
* `ollama=True` writes an Ollama Modelfile beside the file (greedy, the project's stop tokens).
* When the model came from the MLflow registry (models:/name@alias, models:/name/version, runs:/...),
  the file is logged as an artifact (`gguf/`) of the run that produced that model.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill_ner.backends import QUANTS
from distill_ner.paths import building

logger = logging.getLogger(__name__)

CONVERTER_OUTTYPES = {"f32", "f16", "q8_0"}  # written by convert_hf_to_gguf.py directly
# the llama-cpp-python release whose converter is used when llama-cpp-python itself is not installed
LLAMA_CPP_PYTHON_VERSION = "0.3.36"


def default_converter_cache() -> Path:
    from distill_ner.paths import user_cache_dir

    return user_cache_dir() / "llama.cpp"


ARTIFACT_DIR = "gguf"

# Runs llama.cpp's converter unchanged, except for one fallback for the BPE pre-tokenizer (see the module
# docstring). argv: converter folder, then the converter's own arguments.
_CONVERT_RUNNER = r"""
import json, runpy, sys
from pathlib import Path
root = Path(sys.argv[1])
sys.argv = [str(root / "convert_hf_to_gguf.py"), *sys.argv[2:]]
sys.path[:0] = [str(root), str(root / "gguf-py")]
from conversion.base import TextModel
recognised = TextModel.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    try:
        return recognised(self, tokenizer)
    except NotImplementedError:
        spec = json.loads((self.dir_model / "tokenizer.json").read_text(encoding="utf-8")).get("pre_tokenizer") or {}
        if spec.get("type") == "ByteLevel" and spec.get("use_regex", True):
            return "gpt-2"
        raise
TextModel.get_vocab_base_pre = get_vocab_base_pre
runpy.run_path(sys.argv[0], run_name="__main__")
"""


class ExportError(RuntimeError):
    """The export could not be done; the message says which input or tool is at fault."""


@dataclass
class ExportResult:
    gguf: Path
    quant: str
    modelfile: Path | None = None
    logged_to_run: str | None = None  # MLflow run id the file was logged to


# ------------------------------------------------------------------------------------- converter


def llama_cpp_python_version() -> str | None:
    """The installed llama-cpp-python's version, or None where it is not installed."""
    from importlib import metadata

    try:
        return metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        return None


def converter_dir(cache_dir: str | Path | None = None, version: str | None = None) -> Path:
    """A folder with llama.cpp's convert_hf_to_gguf.py, conversion/ and gguf-py/, fetched once.

    LLAMA_CPP_CONVERTER_DIR points at a llama.cpp checkout to use instead (no download).
    """
    override = os.environ.get("LLAMA_CPP_CONVERTER_DIR")
    if override:
        root = Path(override)
        if not (root / "convert_hf_to_gguf.py").is_file():
            raise ExportError(f"LLAMA_CPP_CONVERTER_DIR={override}: no convert_hf_to_gguf.py there")
        return root
    version = version or llama_cpp_python_version() or LLAMA_CPP_PYTHON_VERSION
    dest = Path(cache_dir if cache_dir is not None else default_converter_cache()) / version
    with building(dest):
        if not (dest / "convert_hf_to_gguf.py").is_file():
            _fetch_converter(dest, version)
    return dest


def _fetch_converter(dest: Path, version: str) -> None:
    with tempfile.TemporaryDirectory(prefix="llama_cpp_sdist_") as tmp:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-q",
                f"llama-cpp-python=={version}",
                "-d",
                tmp,
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise ExportError(
                f"could not download the llama-cpp-python {version} source distribution (which ships llama.cpp's "
                f"converter): {done.stderr.strip()[-500:]}\nSet LLAMA_CPP_CONVERTER_DIR to a llama.cpp checkout instead."
            )
        sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        partial = dest.with_name(dest.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        wanted = re.compile(r"^[^/]+/vendor/llama\.cpp/(convert_hf_to_gguf\.py|conversion/.*|gguf-py/.*|LICENSE)$")
        # tarfile's extraction filters exist from Python 3.10.12 / 3.11.4 on; before, the names kept here are
        # relative by the pattern, and any with a ".." part is skipped
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                match = wanted.match(member.name)
                if match and (member.isfile() or member.isdir()) and ".." not in Path(match.group(1)).parts:
                    member.name = match.group(1)
                    tar.extract(member, partial, **safe)
        shutil.rmtree(dest, ignore_errors=True)
        partial.rename(dest)  # only a complete converter ever appears under the final name


def convert_hf_folder(
    model_dir: str | Path, out: str | Path, outtype: str, cache_dir: str | Path | None = None
) -> Path:
    """llama.cpp's converter on a full HF model folder (not an adapter): `outtype` f32, f16 or q8_0."""
    if outtype not in CONVERTER_OUTTYPES:
        raise ValueError(f"the converter writes {sorted(CONVERTER_OUTTYPES)}, not {outtype!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    root = converter_dir(cache_dir)
    partial = out.with_name(out.name + ".partial")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _CONVERT_RUNNER,
            str(root),
            str(model_dir),
            "--outfile",
            str(partial),
            "--outtype",
            outtype,
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise ExportError(f"convert_hf_to_gguf.py failed on {model_dir}:\n{done.stderr.strip()[-2000:]}")
    partial.replace(out)
    return out


def quantize(src: str | Path, out: str | Path, quant: str, threads: int | None = None) -> Path:
    """llama.cpp's quantizer (through llama-cpp-python) from an f32/f16 GGUF to `quant` (e.g. q4_k_m)."""
    from distill_ner.engine.llamacpp import import_llama_cpp

    llama_cpp = import_llama_cpp()
    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant.upper()}", None)
    if ftype is None:
        raise ValueError(f"llama.cpp has no quantisation type {quant!r}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads or os.cpu_count() or 1
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    status = llama_cpp.llama_model_quantize(str(src).encode(), str(partial).encode(), params)
    if status != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise ExportError(f"llama_model_quantize({src} -> {quant}) failed with status {status}")
    partial.replace(out)
    return out


# ----------------------------------------------------------------------------------------- export


def _registry_run_id(ref: str) -> str | None:
    """The MLflow run that produced a registry/run model URI, or None for other references."""
    if ref.startswith("runs:/"):
        return ref[len("runs:/") :].split("/", 1)[0]
    if not ref.startswith("models:/"):
        return None
    from mlflow import MlflowClient

    client = MlflowClient()
    name_part = ref[len("models:/") :].strip("/")
    if "@" in name_part:
        name, alias = name_part.split("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    else:
        name, _, number = name_part.rpartition("/")
        if not name:
            raise ExportError(f"{ref}: expected models:/name@alias or models:/name/version")
        version = client.get_model_version(name, number)
    return version.run_id


def full_model_folder(local: str, workdir: Path) -> str:
    """A folder with the full (merged) model and its tokenizer: `local` itself, or an adapter merged into
    its base under `workdir` (a registered adapter's bundled base is used where it has one)."""
    from distill_ner.models import is_adapter

    if not is_adapter(local):
        return local
    from distill_ner.engine.common import save_merged_adapter
    from distill_ner.serving import bundled_adapter_view

    adapter = bundled_adapter_view(Path(local), workdir / "adapter") or Path(local)
    return str(save_merged_adapter(str(adapter), workdir / "merged"))


def default_output(ref: str, quant: str) -> Path:
    """exports/<model name>-<quant>.gguf, the name taken from the reference."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", ref.split("://")[-1].rstrip("/").split("/")[-1] or "model").strip("-.")
    return Path("exports") / f"{stem or 'model'}-{quant}.gguf"


def export_gguf(
    ref: str,
    out: str | Path | None = None,
    quant: str = "f16",
    *,
    ollama: bool = False,
    log_to_registry: bool = True,
    cache_dir: str | Path | None = None,
) -> ExportResult:
    """Write `ref` (hub id, folder, adapter folder or MLflow model URI) as one GGUF file at `quant`."""
    from distill_ner.models import resolve_reference

    if quant not in QUANTS:
        raise ValueError(f"--quant {quant!r}: choose one of {', '.join(QUANTS)}")
    out = Path(out) if out is not None else default_output(ref, quant)
    if out.suffix != ".gguf":
        raise ValueError(f"--out {out}: the file name must end in .gguf")
    if quant not in CONVERTER_OUTTYPES:
        from distill_ner.engine.llamacpp import import_llama_cpp

        import_llama_cpp()  # fail before merging and converting when the quantizer is missing
    run_id = _registry_run_id(ref) if log_to_registry else None
    local = resolve_reference(ref)
    if not Path(local).exists():
        raise ExportError(f"--model {ref}: not a local folder, file or registered model (the hub is not used here)")
    with tempfile.TemporaryDirectory(prefix="distill_ner_export_") as tmp:
        folder = full_model_folder(local, Path(tmp))
        if quant in CONVERTER_OUTTYPES:
            convert_hf_folder(folder, out, quant, cache_dir)
        else:
            intermediate = convert_hf_folder(folder, Path(tmp) / "model-f32.gguf", "f32", cache_dir)
            quantize(intermediate, out, quant)
        modelfile = write_modelfile(out, folder) if ollama else None
    logger.info("wrote %s (%.1f MiB)", out, out.stat().st_size / 2**20)
    if run_id is not None:
        from mlflow import MlflowClient

        MlflowClient().log_artifact(run_id, str(out), artifact_path=ARTIFACT_DIR)
        if modelfile is not None:
            MlflowClient().log_artifact(run_id, str(modelfile), artifact_path=ARTIFACT_DIR)
    return ExportResult(gguf=out, quant=quant, modelfile=modelfile, logged_to_run=run_id)


# ----------------------------------------------------------------------------------------- Ollama

# Ollama's Go template for ChatML: written only where the model's own template renders the project's
# prompts exactly as ChatML does (checked in write_modelfile); elsewhere Ollama reads the GGUF's template.
_OLLAMA_CHATML = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
)


def write_modelfile(gguf: Path, model_dir: str, max_new_tokens: int = 256) -> Path:
    """An Ollama Modelfile beside `gguf`: greedy, the project's stop tokens, the prompt template."""
    from distill_ner.chat import render_text
    from distill_ner.engine.common import _generation_config, stop_token_ids
    from distill_ner.models import CHATML_TEMPLATE, load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    stops = [tokenizer.decode([i]) for i in stop_token_ids(tokenizer, generation_config=_generation_config(model_dir))]
    # every role and a finished assistant turn, as the recipes' multi-turn prompts have them
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "q"},
    ]
    own = render_text(tokenizer, messages, add_generation_prompt=True)
    import jinja2

    chatml = jinja2.Environment().from_string(CHATML_TEMPLATE).render(messages=messages, add_generation_prompt=True)
    lines = [f"FROM ./{gguf.name}"]
    if own == chatml:
        lines.append(f'TEMPLATE """{_OLLAMA_CHATML}"""')
    lines += ["PARAMETER temperature 0", "PARAMETER top_k 1", f"PARAMETER num_predict {max_new_tokens}"]
    lines += [f"PARAMETER stop {json.dumps(s)}" for s in dict.fromkeys(stops) if s]
    path = gguf.with_suffix(".Modelfile")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def cached_gguf(ref_local: str, quant: str = "f16", cache_dir: str | Path | None = None) -> Path:
    """`ref_local` (a local full model or adapter folder) as a GGUF converted once per content under the
    user's cache folder: what the llamacpp backend runs when it is given an HF folder instead of a .gguf file."""
    import hashlib

    from distill_ner.fingerprint import fingerprint_paths

    version = llama_cpp_python_version() or LLAMA_CPP_PYTHON_VERSION
    key = hashlib.sha256(
        f"{Path(ref_local).resolve()}\x00{fingerprint_paths([ref_local])}\x00{quant}\x00{version}".encode()
    ).hexdigest()[:16]
    from distill_ner.paths import user_cache_dir

    dest = user_cache_dir() / "gguf" / key / f"model-{quant}.gguf"
    if dest.is_file():
        return dest
    return export_gguf(ref_local, dest, quant, log_to_registry=False, cache_dir=cache_dir).gguf


def as_jsonable(result: ExportResult) -> dict[str, Any]:
    return {
        "gguf": str(result.gguf),
        "quant": result.quant,
        "size_mib": round(result.gguf.stat().st_size / 2**20, 1),
        "modelfile": str(result.modelfile) if result.modelfile else None,
        "logged_to_run": result.logged_to_run,
    }
