"""The UniversalNER recipe's configs: negatives, SFT (with supervised sets), evaluation, and the
`distill_ner` / `evaluate_ner` pipelines' single `config` parameter built from them and the core stages."""

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
    check_model_ref,
    require_path,
)



class NegativesConfig(StrictModel):
    strategy: Literal["frequency", "uniform", "none"] = "frequency"
    per_passage: int = Field(4, ge=0, description="negative types added to each passage")
    seed: int = 0


class SupervisedSource(StrictModel):
    """A human-annotated NER dataset mixed in with its name in the first user turn."""

    name: str
    path: str | None = None
    hf_dataset: str | None = None
    format: Literal["bio", "conll", "uniner"] = "bio"
    split: str = "train"
    label_map: str | None = Field(None, description="label-map name in the registry or a JSON file")
    max_examples: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_source(self, info: ValidationInfo) -> "SupervisedSource":
        if (self.path is None) == (self.hf_dataset is None):
            raise ValueError(f"sft.supervised[{self.name}]: give exactly one of `path` or `hf_dataset`")
        if self.path is not None:
            require_path(self.path, f"sft.supervised[{self.name}].path", info)
        return self


class SFTConfig(StrictModel):
    max_length: int = Field(1024, gt=16)
    seed: int = 0
    supervised: list[SupervisedSource] = Field(default_factory=list)
    supervised_ratio: float = Field(
        1.0, ge=0, description="supervised conversations per teacher conversation, at most"
    )


class EvalConfig(StrictModel):
    benchmarks: list[str] = Field(..., description="benchmark names from the registry, or UniNER JSON paths")
    max_sentences: int | None = Field(None, gt=0, description="seeded subset of sentences per benchmark")
    max_new_tokens: int = Field(256, gt=0)
    batch_size: int = Field(16, gt=0)
    backend: Literal["transformers", "vllm"] = "transformers"
    seed: int = 0


class DistillConfig(StrictModel):
    """Everything `distill_ner` needs; `parameters.config` in the YAML."""

    corpus: CorpusConfig
    teacher: TeacherConfig
    negatives: NegativesConfig = NegativesConfig()
    sft: SFTConfig = SFTConfig()
    student: StudentConfig
    train: TrainConfig = TrainConfig()
    eval: EvalConfig
    gate: GateConfig = GateConfig()


class EvaluateNERConfig(StrictModel):
    """Everything `evaluate_ner` needs: any model scored on the benchmarks, e.g. a base model next to a student."""

    model: str = Field(..., description="hub id, local folder (model or adapter) or models:/name@alias")
    eval: EvalConfig

    @field_validator("model")
    @classmethod
    def _model_exists(cls, v: str, info: ValidationInfo) -> str:
        return check_model_ref(v, "model", info)
