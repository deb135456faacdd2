"""The extraction recipe's configuration: `parameters.config` of configs/extract_*.yaml, one schema per stage.

The stages this recipe shares with UniversalNER take the very same schemas (CorpusConfig, TeacherConfig,
StudentConfig, TrainConfig, GateConfig); only what is specific to template extraction is defined here.
`teacher.prompt` is not read by this pipeline: its two prompts are NuExtract's (extraction/prompts.py).
"""

from __future__ import annotations

import json
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
    require_path,
)
from distill_ner.extraction.templates import MAX_DEPTH

DEFAULT_BENCHMARK = "data/extraction/benchmark.jsonl"


class TemplatesConfig(StrictModel):
    """Template generation and the checks on both teacher answers."""

    few_shot: str = Field(
        "", description="block that replaces `*<few-shot examples>*` in the generation prompt; empty: zero-shot"
    )
    max_depth: int = Field(MAX_DEPTH, gt=0, description="deepest template accepted (objects along a path)")


class ExtractionNegativesConfig(StrictModel):
    fraction: float = Field(0.5, ge=0, le=1, description="share of examples whose text is shortened")
    min_drop: float = Field(0.3, gt=0, lt=1, description="smallest share of sentences removed")
    max_drop: float = Field(0.6, gt=0, lt=1, description="largest share of sentences removed")
    seed: int = Field(0, description="seed of every random choice of this stage")

    @model_validator(mode="after")
    def _ordered(self) -> "ExtractionNegativesConfig":
        if self.min_drop > self.max_drop:
            raise ValueError("negatives: min_drop must be <= max_drop")
        return self


class ExtractionPromptConfig(StrictModel):
    """How the student reads a template and text; training and evaluation must use the same."""

    format: Literal["1.5", "1.0"] = Field("1.5", description="NuExtract prompt format")
    indent: int | None = Field(4, ge=0, description="JSON indent of template and output (NuMind: 4); null: compact")


class ExtractionSFTConfig(StrictModel):
    max_length: int = Field(1024, gt=16, description="examples longer than this (in tokens) are dropped, counted")
    seed: int = Field(0, description="seed of every random choice of this stage")
    dev_fraction: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="share of the examples held out (seeded) as the dev split, never trained on; the trainer "
        "scores their fillings with the tree score every train.eval_every steps (0: no dev split)",
    )


class ExtractionEvalConfig(StrictModel):
    benchmark: str = Field(DEFAULT_BENCHMARK, description="JSONL of {id, kind, text, template, gold}")
    kinds: list[str] | None = Field(None, description="document kinds to score (default: all)")
    max_per_kind: int | None = Field(None, gt=0, description="seeded subset of documents per kind")
    leaf_metric: Literal["edit", "exact"] = Field(
        "edit", description="leaf similarity of the tree score (the primary metric the gate reads)"
    )
    max_new_tokens: int = Field(512, gt=0, description="answer length limit per document")
    batch_size: int = Field(8, gt=0, description="documents decoded together")
    backend: Backend = Field(
        "auto",
        description="inference engine: transformers (CPU/GPU), vLLM (GPU), llama.cpp (CPU, GGUF) or auto "
        "(llama.cpp on a CPU where llama-cpp-python is installed, else transformers)",
    )
    gguf_quant: Quant = Field(
        "f16", description="llamacpp backend: the GGUF type an HF model is converted to (a .gguf model is run as it is)"
    )
    grounded: bool = Field(
        False,
        description="grounded decoding: answers held to the template's JSON rendering, every value a span of the text",
    )
    seed: int = Field(0, description="seed of every random choice of this stage")

    @field_validator("benchmark")
    @classmethod
    def _exists(cls, v: str, info: ValidationInfo) -> str:
        return require_path(v, "eval.benchmark", info)


class DistillExtractionConfig(StrictModel):
    """Everything `distill_extraction` needs; `parameters.config` in the YAML."""

    corpus: CorpusConfig = Field(..., description="the corpus stage")
    teacher: TeacherConfig = Field(..., description="the teacher stage")
    templates: TemplatesConfig = Field(
        TemplatesConfig(), description="template generation and the checks on the teacher's answers"
    )
    negatives: ExtractionNegativesConfig = Field(
        ExtractionNegativesConfig(), description="shortened texts whose vanished values are blanked"
    )
    prompt: ExtractionPromptConfig = Field(
        ExtractionPromptConfig(), description="the NuExtract prompt the student is trained and served with"
    )
    sft: ExtractionSFTConfig = Field(ExtractionSFTConfig(), description="building the SFT conversations")
    student: StudentConfig = Field(..., description="the student model")
    train: TrainConfig = Field(TrainConfig(), description="fine-tuning")
    eval: ExtractionEvalConfig = Field(..., description="the extraction benchmark scored before the gate")
    gate: GateConfig = Field(GateConfig(model_name="distill-extract"), description="the promotion gate of the registry")


class ExtractionServing(StrictModel):
    """How the extraction student is served (the `Flavour` of distill_ner.serving); prompt settings must
    match training."""

    flavour: Literal["extraction"] = Field("extraction", description="which recipe's pyfunc serves the model")
    prompt_format: Literal["1.5", "1.0"] = Field("1.5", description="NuExtract prompt version used in training")
    indent: int | None = Field(4, description="JSON indent used in training (None: compact)")
    batch_size: int = Field(8, gt=0, description="rows decoded together")
    max_new_tokens: int = Field(512, gt=0, description="answer length limit")
    base_dtype: str | None = Field(None, description="dtype of the bundled local base, e.g. float16; None: as trained")

    def python_model(self) -> Path:
        return Path(__file__).resolve().parent / "pyfunc_extraction.py"

    def signature(self) -> Any:
        return signature()

    def input_example(self) -> Any:
        return INPUT_EXAMPLE

    def pyfunc_config(self) -> dict[str, Any]:
        return {
            "backend": "auto",
            "prompt_format": self.prompt_format,
            "indent": self.indent,
            "batch_size": self.batch_size,
            "max_new_tokens": self.max_new_tokens,
        }


INPUT_EXAMPLE = [
    {
        "text": "Invoice INV-7 from Birch Supplies, due 4 March 2025.",
        "template": json.dumps({"invoice_number": "", "vendor": "", "due_date": ""}),
    }
]


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, DataType, Schema

    return ModelSignature(
        # `template` is a JSON object or its JSON text: AnyType accepts both
        inputs=Schema([ColSpec(DataType.string, "text"), ColSpec(AnyType(), "template")]),
        outputs=Schema(
            [ColSpec(DataType.string, "text"), ColSpec(AnyType(), "filled"), ColSpec(DataType.string, "raw")]
        ),
    )
