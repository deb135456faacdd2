"""GGUF export with llama.cpp's own converter, and the llamacpp backend against the transformers engine.

The export tests need the converter (fetched once from the llama-cpp-python source distribution on PyPI
into the repository's .cache/llama.cpp/); the backend tests need llama-cpp-python itself and skip cleanly without it.
The tiny model is the scrambled random Llama of test_inference (varied greedy answers per query).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
from test_inference import SENTENCES, queries, scrambled_tiny_model
from test_registry import mlflow_store, mlflow_template  # noqa: F401

from distill_ner.engine.gguf import export_gguf
from distill_ner.models import load_model, load_tokenizer
from distill_ner.ner.conversations import query_prompt_ids
from distill_ner.ner.inference import NEREngine as Engine
from tests.conftest import ROOT, run_cli

HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
needs_llama_cpp = pytest.mark.skipif(not HAS_LLAMA_CPP, reason="llama-cpp-python is not installed ([llamacpp] extra)")
CACHE = ROOT / ".cache/llama.cpp"
MAX_NEW = 10


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scrambled_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tiny_f16(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`distill-ner export` as a user runs it: f16 plus an Ollama Modelfile."""
    out = tmp_path_factory.mktemp("export") / "tiny-f16.gguf"
    done = run_cli(
        ["distill-ner", "export", "--model", str(tiny_dir), "--quant", "f16", "--out", str(out), "--ollama"],
        env=dict(os.environ),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["gguf"] == str(out) and summary["modelfile"] == str(out.with_suffix(".Modelfile"))
    return out


def gguf_fields(path: Path) -> dict:
    """Metadata and tensors of a GGUF file, read with gguf-py (the reader the project already depends on)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    fields = {
        name: field.contents() for name, field in reader.fields.items() if not name.startswith("tokenizer.ggml.tokens")
    }
    return {"fields": fields, "tensors": {t.name: t for t in reader.tensors}}


def test_export_keeps_chat_template_and_pre_tokenizer(tiny_f16: Path, tiny_dir: Path):
    meta = gguf_fields(tiny_f16)["fields"]
    tokenizer = load_tokenizer(str(tiny_dir))
    assert meta["general.architecture"] == "llama"
    assert meta["tokenizer.chat_template"] == tokenizer.chat_template
    # the tiny tokenizer is a bare byte-level BPE: GPT-2's split, which llama.cpp knows as "gpt-2"
    assert meta["tokenizer.ggml.pre"] == "gpt-2"
    assert meta["tokenizer.ggml.eos_token_id"] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    modelfile = tiny_f16.with_suffix(".Modelfile").read_text()
    assert modelfile.startswith(f"FROM ./{tiny_f16.name}\n")
    assert "<|im_start|>{{ .Role }}" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile


def test_export_merges_an_adapter(tiny_dir: Path, tmp_path: Path):
    """An adapter folder is merged into its base: the f32 GGUF holds the merged weights."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    peft_model = get_peft_model(load_model(str(tiny_dir)), LoraConfig(r=4, lora_alpha=8, target_modules=["v_proj"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    load_tokenizer(str(tiny_dir)).save_pretrained(adapter)
    merged = peft_model.merge_and_unload().model.layers[0].self_attn.v_proj.weight.detach().numpy()
    base = load_model(str(tiny_dir)).model.layers[0].self_attn.v_proj.weight.detach().numpy()

    out = export_gguf(str(adapter), tmp_path / "merged-f32.gguf", "f32", cache_dir=CACHE).gguf
    tensor = gguf_fields(out)["tensors"]["blk.0.attn_v.weight"]
    data = tensor.data.reshape(merged.shape)
    assert abs(data - merged).max() < 1e-6
    assert abs(data - base).max() > 1e-2, "the adapter must change the weights for this test to mean anything"


def test_export_rejects_bad_input(tmp_path: Path, tiny_dir: Path):
    with pytest.raises(ValueError, match="--quant"):
        export_gguf(str(tiny_dir), tmp_path / "x.gguf", "q3_x")
    with pytest.raises(ValueError, match=r"\.gguf"):
        export_gguf(str(tiny_dir), tmp_path / "x.bin", "f16")
    done = run_cli(
        ["distill-ner", "export", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "m.gguf")],
        env=dict(os.environ),
    )
    assert done.returncode != 0 and "missing" in done.stderr
    assert not list(tmp_path.glob("*.gguf*")), "nothing half-written is left"


def test_export_from_registry_logs_the_file(tiny_dir: Path, tmp_path: Path, mlflow_store):  # noqa: F811
    """models:/name@alias: the GGUF is logged as an artifact of the run that produced that version."""
    import mlflow
    from mlflow import MlflowClient

    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(tiny_dir), artifact_path="model")
    client = MlflowClient()
    client.create_registered_model("tiny-gguf")
    version = client.create_model_version("tiny-gguf", f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias("tiny-gguf", "production", version.version)

    result = export_gguf("models:/tiny-gguf@production", tmp_path / "prod-f16.gguf", "f16", cache_dir=CACHE)
    assert result.logged_to_run == run.info.run_id
    logged = [a.path for a in client.list_artifacts(run.info.run_id, "gguf")]
    assert logged == ["gguf/prod-f16.gguf"]


# ------------------------------------------------------------------------------ llama.cpp backend


@pytest.mark.skipif(HAS_LLAMA_CPP, reason="llama-cpp-python is installed")
def test_llamacpp_missing_is_a_clear_error(tiny_dir: Path):
    with pytest.raises(ImportError, match=r"llamacpp.*backend='transformers'"):
        Engine(str(tiny_dir), backend="llamacpp")


@pytest.fixture(scope="module")
def transformers_answers(tiny_dir: Path):
    model = load_model(str(tiny_dir))
    engine = Engine.from_model(model, load_tokenizer(str(tiny_dir)), batch_size=16, max_new_tokens=MAX_NEW)
    return [g.token_ids for g in engine.generate(queries(), progress=False)]


@needs_llama_cpp
@pytest.mark.parametrize("batch_size", [1, 4, 16])
def test_llamacpp_f16_gives_the_engines_greedy_answers(
    tiny_f16: Path, tiny_dir: Path, transformers_answers, batch_size: int
):
    """Same prompt ids, same stop tokens, greedy: the f16 GGUF answers as the fp32 engine does. Batch 4 and 16
    run several sentences' questions at once, batch 1 one question at a time."""
    engine = Engine(str(tiny_f16), backend="llamacpp", batch_size=batch_size, max_new_tokens=MAX_NEW, threads=1)
    hf_tokenizer = load_tokenizer(str(tiny_dir))
    # the .gguf path tokenises with the tokenizer transformers reads from the GGUF: the very same ids
    assert [engine.prompt_ids(t, e) for t, e in queries()] == [
        query_prompt_ids(hf_tokenizer, t, e) for t, e in queries()
    ]
    got = [g.token_ids for g in engine.generate(queries(), progress=False)]
    same = sum(a == b for a, b in zip(got, transformers_answers))
    assert same == len(got), f"{same}/{len(got)} identical"


@needs_llama_cpp
def test_llamacpp_runs_an_hf_folder_and_stops(tiny_dir: Path, transformers_answers):
    """An HF folder is converted once (cached) and tokenised with its own tokenizer; rows stop on a stop id."""
    reference = Engine(str(tiny_dir), max_new_tokens=MAX_NEW, device="cpu")
    # a frequent early token as an extra stop id, so that rows end at different steps
    first = [ids[1] for ids in transformers_answers if len(ids) > 1]
    stop = max(set(first), key=first.count)
    engine = Engine(str(tiny_dir), backend="llamacpp", batch_size=8, max_new_tokens=MAX_NEW, threads=1)
    for e in (engine, reference):
        e.stop_ids.append(stop)
    engine._llama.stop_ids.add(stop)
    reference._tf.stop_ids.append(stop)
    got = engine.generate(queries(), progress=False)
    want = reference.generate(queries(), progress=False)
    assert [(g.token_ids, g.stopped) for g in got] == [(w.token_ids, w.stopped) for w in want]
    assert any(g.stopped for g in got) and not all(g.stopped for g in got)
    assert engine.last_stats.merges > 0, "rows that stopped early were given to waiting questions"


@needs_llama_cpp
def test_llamacpp_grounded_answers_are_the_engines(tiny_f16: Path, tiny_dir: Path):
    """Grounded decoding on llama.cpp applies the transformers backend's rule (argmax, else the best allowed
    token): the same grounded answers, every one a JSON list of spans of its sentence."""
    from distill_ner.ner.metrics import extract_items

    qs = queries()
    model = load_model(str(tiny_dir))
    reference = Engine.from_model(model, load_tokenizer(str(tiny_dir)), batch_size=8, max_new_tokens=MAX_NEW)
    engine = Engine(str(tiny_f16), backend="llamacpp", batch_size=8, max_new_tokens=MAX_NEW, threads=1)
    want = reference.answer(qs, progress=False, grounded=True)
    got = engine.answer(qs, progress=False, grounded=True)
    assert got == want
    free = engine.answer(qs, progress=False)
    assert got != free, "the scrambled model's free answers break the constraint somewhere"
    for (text, _), answer in zip(qs, got):
        assert answer.startswith("[") and all(span in text for span in extract_items(answer))


@needs_llama_cpp
def test_auto_backend_runs_llamacpp_on_cpu(tiny_dir: Path, transformers_answers):
    engine = Engine(str(tiny_dir), backend="auto", batch_size=8, max_new_tokens=MAX_NEW, device="cpu", threads=1)
    assert engine.backend == "llamacpp"
    assert [g.token_ids for g in engine.generate(queries(), progress=False)] == transformers_answers


@needs_llama_cpp
def test_q4_k_m_quantises_and_answers(tiny_f16: Path, tiny_dir: Path, tmp_path: Path):
    out = export_gguf(str(tiny_dir), tmp_path / "tiny-q4_k_m.gguf", "q4_k_m", cache_dir=CACHE).gguf
    assert gguf_fields(out)["fields"]["general.file_type"] == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    engine = Engine(str(out), backend="llamacpp", batch_size=4, max_new_tokens=MAX_NEW, threads=1)
    answers = engine.generate(queries()[:8], progress=False)
    assert all(len(g.token_ids) == MAX_NEW or g.stopped for g in answers)


@needs_llama_cpp
def test_predict_cli_on_the_exported_file(tiny_f16: Path):
    env = dict(os.environ)
    done = run_cli(
        ["distill-ner", "predict", "--model", str(tiny_f16), "--types", "person,location", "--grouped", SENTENCES[0]],
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(done.stdout.strip())
    assert row["text"] == SENTENCES[0] and list(row["entities"]) == ["person", "location"]


@pytest.mark.slow
def test_demo_student_exports_and_answers_like_the_engine(smollm2_student: Path, tmp_path: Path):
    """The real demo student (SmolLM2-135M-Instruct, its known "smollm" pre-tokenizer and ChatML template)
    converts at f16; where llama-cpp-python is installed its greedy answers start as the engine's do."""
    out = export_gguf(str(smollm2_student), tmp_path / "smollm2-f16.gguf", "f16", cache_dir=CACHE).gguf
    meta = gguf_fields(out)["fields"]
    assert meta["tokenizer.ggml.pre"] == "smollm"
    assert meta["tokenizer.chat_template"] == load_tokenizer(str(smollm2_student)).chat_template
    if not HAS_LLAMA_CPP:
        pytest.skip("llama-cpp-python is not installed: conversion checked, answers not compared")
    qs = [(SENTENCES[0], t) for t in ("person", "location", "organization")]
    engine = Engine(str(smollm2_student), max_new_tokens=24, device="cpu", batch_size=4)
    llama = Engine(str(out), backend="llamacpp", max_new_tokens=24, batch_size=4, threads=1)
    ours, theirs = engine.generate(qs, progress=False), llama.generate(qs, progress=False)
    # f16 weights round the logits: on this model a later token can flip where two candidates are close
    # (seen: the 4th token of the second answer), so every answer must agree on its first tokens
    assert [g.token_ids[:3] for g in theirs] == [g.token_ids[:3] for g in ours]


def test_the_converter_cache_is_the_users_whatever_the_working_directory(tmp_path, monkeypatch) -> None:
    from distill_ner.engine.gguf import default_converter_cache

    monkeypatch.delenv("DISTILL_NER_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    assert default_converter_cache() == tmp_path / "xdg" / "distill-ner" / "llama.cpp"
    monkeypatch.setenv("DISTILL_NER_CACHE", str(tmp_path / "mine"))
    assert default_converter_cache() == tmp_path / "mine" / "llama.cpp"
