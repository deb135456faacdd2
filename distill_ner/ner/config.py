"""The UniversalNER recipe's configs: negatives, SFT (with supervised sets), evaluation, and the
`distill_ner` / `evaluate_ner` pipelines' single `config` parameter built from them and the core stages."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from distill_ner.backends import Backend, Quant
from distill_ner.config import (
    CorpusConfig,
    GateConfig,
    StrictModel,
    StudentConfig,
    TeacherConfig,
    TrainConfig,
    check_model_ref,
    require_path,
)


class NegativesConfig(StrictModel):
    strategy: Literal["frequency", "uniform", "none"] = Field(
        "frequency", description="how negative types are drawn: by type frequency, uniformly, or none"
    )
    per_passage: int = Field(4, ge=0, description="negative types added to each passage")
    ratio: float | None = Field(
        None,
        ge=0,
        description="instead of per_passage: this many negatives per positive type of the passage "
        "(rounded, at least 1 when > 0)",
    )
    seed: int = Field(0, description="seed of every random choice of this stage")


class SupervisedSource(StrictModel):
    """A human-annotated NER dataset mixed in with its name in the first user turn."""

    name: str = Field(..., description="dataset name, written in the first user turn of its conversations")
    path: str | None = Field(None, description="local file or folder of the dataset")
    hf_dataset: str | None = Field(None, description="HF dataset hub id or local dataset folder")
    format: Literal["bio", "conll", "uniner"] = Field(
        "bio", description="annotation format: BIO tags, CoNLL columns or UniNER conversations"
    )
    split: str = Field("train", description="dataset split to read")
    label_map: str | None = Field(None, description="label-map name in the registry or a JSON file")
    max_examples: int | None = Field(None, gt=0, description="use at most this many examples (seeded)")

    @model_validator(mode="after")
    def _one_source(self, info: ValidationInfo) -> "SupervisedSource":
        if (self.path is None) == (self.hf_dataset is None):
            raise ValueError(f"sft.supervised[{self.name}]: give exactly one of `path` or `hf_dataset`")
        if self.path is not None:
            require_path(self.path, f"sft.supervised[{self.name}].path", info)
        return self


class SFTConfig(StrictModel):
    max_length: int = Field(1024, gt=16, description="rows longer than this many tokens are split or dropped")
    seed: int = Field(0, description="seed of every random choice of this stage")
    supervised: list[SupervisedSource] = Field(
        default_factory=list, description="human-annotated NER datasets mixed into the teacher data"
    )
    supervised_ratio: float = Field(1.0, ge=0, description="supervised conversations per teacher conversation, at most")
    negatives_position: Literal["shuffled", "last", "first"] = Field(
        "shuffled",
        description="where negative questions go: shuffled among the positives (UniNER), after or before them",
    )
    train_read_reply: bool = Field(
        True, description="loss on the `I've read this text.` reply too (UniNER: every assistant turn is a target)"
    )
    dev_fraction: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="share of the teacher-annotated passages held out (seeded) as the dev split, never trained on; "
        "the trainer scores it every train.eval_every steps (0: no dev split)",
    )


class EvalConfig(StrictModel):
    benchmarks: list[str] = Field(
        ..., description="benchmark names from the registry, suite names (uniner_zero_shot), or UniNER JSON paths"
    )
    max_sentences: int | None = Field(None, gt=0, description="seeded subset of sentences per benchmark")
    max_new_tokens: int = Field(256, gt=0, description="answer length limit per query (UniNER's 256)")
    batch_size: int = Field(16, gt=0, description="queries decoded together")
    backend: Backend = Field(
        "auto",
        description="inference engine: transformers (CPU/GPU), vLLM (GPU), llama.cpp (CPU, GGUF) or auto "
        "(llama.cpp on a CPU where llama-cpp-python is installed, else transformers)",
    )
    gguf_quant: Quant = Field(
        "f16", description="llamacpp backend: the GGUF type an HF model is converted to (a .gguf model is run as it is)"
    )
    seed: int = Field(0, description="seed of every random choice of this stage")
    grounded: bool = Field(
        False, description="decode every answer as a JSON list of spans of its sentence (off: the paper's setting)"
    )
    grounded_also: bool = Field(
        False, description="also score a grounded pass, logged next to the main one as eval.grounded.*"
    )


class DistillConfig(StrictModel):
    """Everything `distill_ner` needs; `parameters.config` in the YAML."""

    corpus: CorpusConfig = Field(..., description="the corpus stage")
    teacher: TeacherConfig = Field(..., description="the teacher stage")
    negatives: NegativesConfig = Field(NegativesConfig(), description="negative types (known absent, answer [])")
    sft: SFTConfig = Field(SFTConfig(), description="building the SFT conversations")
    student: StudentConfig = Field(..., description="the student model")
    train: TrainConfig = Field(TrainConfig(), description="fine-tuning")
    eval: EvalConfig = Field(..., description="the benchmarks scored before the gate")
    gate: GateConfig = Field(GateConfig(), description="the promotion gate of the registry")


class EvaluateNERConfig(StrictModel):
    """Everything `evaluate_ner` needs: any model scored on the benchmarks, e.g. a base model next to a student."""

    model: str = Field(..., description="hub id, local folder (model or adapter) or models:/name@alias")
    eval: EvalConfig = Field(..., description="the benchmarks scored before the gate")

    @field_validator("model")
    @classmethod
    def _model_exists(cls, v: str, info: ValidationInfo) -> str:
        return check_model_ref(v, "model", info)


class NERServing(StrictModel):
    """How the NER student is served (the `Flavour` of distill_ner.serving): decoding, output, limits and
    batching. Logged as the pyfunc's model_config; `distill-ner serve` options (or MLflow's
    MLFLOW_PYFUNC_INFERENCE_CONFIG) override them where the model is loaded."""

    flavour: Literal["ner"] = Field("ner", description="which recipe's pyfunc serves the model")
    batch_size: int = Field(16, gt=0, description="(sentence, type) questions decoded together by the engine")
    max_new_tokens: int = Field(256, gt=0, description="answer length limit (UniNER's 256)")
    base_dtype: str | None = Field(None, description="dtype of the bundled local base, e.g. float16; None: as trained")
    grounded: bool = Field(True, description="answers only with spans of the text; False: free decoding (UniNER's)")
    output: Literal["spans", "grouped"] = Field(
        "spans",
        description="spans: one {text, type, start, end, score} per mention; grouped: {type: [strings]} (UniNER)",
    )
    max_text_chars: int = Field(200_000, gt=0, description="characters per text, refused above (400)")
    max_rows: int = Field(256, gt=0, description="rows per request, refused above (400)")
    max_types: int = Field(100, gt=0, description="entity types per row, refused above (400): each is a question")
    max_segment_chars: int = Field(1000, gt=0, description="a sentence longer than this is cut at spaces")
    request_timeout_s: float = Field(
        60.0, gt=0, description="a request's time limit; its questions not yet decoded by then are dropped"
    )
    max_batch: int = Field(64, gt=0, description="questions of concurrent requests decoded in one batch at most")
    batch_wait_ms: float = Field(10.0, ge=0, description="how long a question waits for others to batch with")

    def python_model(self) -> Path:
        return Path(__file__).resolve().parent / "pyfunc.py"

    def signature(self) -> Any:
        return ner_signature()

    def input_example(self) -> Any:
        return INPUT_EXAMPLE

    def pyfunc_config(self) -> dict[str, Any]:
        return {"backend": "auto", "surface_forms": True, **self.model_dump(exclude={"flavour", "base_dtype"})}


INPUT_EXAMPLE = [{"text": "Marie Curie was born in Warsaw.", "types": ["person", "location"]}]


def ner_signature() -> Any:
    """text + types in; text + entities out (a list of mentions, or type -> strings with output=grouped);
    per-request params: output, decoding, threshold (mentions scored below it are dropped)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, DataType, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        # `types` is a list of strings or one comma-separated string: AnyType accepts both
        inputs=Schema([ColSpec(DataType.string, "text"), ColSpec(AnyType(), "types")]),
        outputs=Schema([ColSpec(DataType.string, "text"), ColSpec(AnyType(), "entities")]),
        params=ParamSchema(
            [
                # "" = the served model's own setting (NERServing.output / NERServing.grounded)
                ParamSpec("output", DataType.string, ""),
                ParamSpec("decoding", DataType.string, ""),
                ParamSpec("threshold", DataType.double, 0.0),
            ]
        ),
    )
