"""The extraction recipe's configuration: `parameters.config` of configs/extract_*.yaml, one schema per stage.

The stages this recipe shares with UniversalNER take the very same schemas (CorpusConfig, TeacherConfig,
StudentConfig, TrainConfig, GateConfig); only what is specific to template extraction is defined here.
`teacher.prompt` is not read by this pipeline: its two prompts are NuExtract's (extraction/prompts.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

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

    few_shot: str = Field("", description="block that replaces `*<few-shot examples>*` in the generation prompt; empty: zero-shot")
    max_depth: int = Field(MAX_DEPTH, gt=0, description="deepest template accepted (objects along a path)")


class ExtractionNegativesConfig(StrictModel):
    fraction: float = Field(0.5, ge=0, le=1, description="share of examples whose text is shortened")
    min_drop: float = Field(0.3, gt=0, lt=1, description="smallest share of sentences removed")
    max_drop: float = Field(0.6, gt=0, lt=1, description="largest share of sentences removed")
    seed: int = 0

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
    seed: int = 0


class ExtractionEvalConfig(StrictModel):
    benchmark: str = Field(DEFAULT_BENCHMARK, description="JSONL of {id, kind, text, template, gold}")
    kinds: list[str] | None = Field(None, description="document kinds to score (default: all)")
    max_per_kind: int | None = Field(None, gt=0, description="seeded subset of documents per kind")
    leaf_metric: Literal["edit", "exact"] = Field("edit", description="leaf similarity the gate reads as f1")
    max_new_tokens: int = Field(512, gt=0)
    batch_size: int = Field(8, gt=0)
    seed: int = 0

    @field_validator("benchmark")
    @classmethod
    def _exists(cls, v: str, info: ValidationInfo) -> str:
        return require_path(v, "eval.benchmark", info)


class DistillExtractionConfig(StrictModel):
    """Everything `distill_extraction` needs; `parameters.config` in the YAML."""

    corpus: CorpusConfig
    teacher: TeacherConfig
    templates: TemplatesConfig = TemplatesConfig()
    negatives: ExtractionNegativesConfig = ExtractionNegativesConfig()
    prompt: ExtractionPromptConfig = ExtractionPromptConfig()
    sft: ExtractionSFTConfig = ExtractionSFTConfig()
    student: StudentConfig
    train: TrainConfig = TrainConfig()
    eval: ExtractionEvalConfig
    gate: GateConfig = GateConfig(model_name="distill-extract")
