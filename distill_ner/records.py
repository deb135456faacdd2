"""Typed records for every artifact that flows through the pipelines, defined once.

Data flows one way: PassageSet -> AnnotationSet -> SFTDataset -> (model folder) -> EvalReport
-> PromotionDecision. Each record is plain pydantic so it round-trips through JSON without pickle.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator


class Passage(BaseModel):
    """A short piece of text (at most N student tokens) sampled from a corpus."""

    id: str
    text: str
    source: str = ""


class PassageSet(BaseModel):
    passages: list[Passage]
    # counts by stage of the sampling (documents read, duplicates removed, ...)
    stats: dict[str, int] = Field(default_factory=dict)


class Entity(BaseModel):
    text: str
    type: str


class AnnotatedPassage(BaseModel):
    id: str
    text: str
    entities: list[Entity] = Field(default_factory=list)
    # types known to be absent from the passage; their answer is [] (filled by negative sampling)
    negatives: list[str] = Field(default_factory=list)


class AnnotationFailure(BaseModel):
    passage_id: str
    reason: str
    detail: str = ""


class AnnotationSet(BaseModel):
    passages: list[AnnotatedPassage]
    failures: list[AnnotationFailure] = Field(default_factory=list)
    # how many entities (or whole answers) each filter removed, by reason
    filter_counts: dict[str, int] = Field(default_factory=dict)
    # normalised type -> number of mentions over the whole set
    type_counts: dict[str, int] = Field(default_factory=dict)
    # teacher usage: requests, cache hits, prompt/completion tokens, estimated cost
    usage: dict[str, float] = Field(default_factory=dict)
    teacher: str = ""


class Turn(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class Conversation(BaseModel):
    id: str
    turns: list[Turn]
    # name of the human-annotated dataset it came from (None for teacher-annotated passages)
    dataset: str | None = None


class SFTRow(BaseModel):
    """One tokenised training example; labels are -100 where no loss is taken."""

    id: str
    conversation_id: str
    input_ids: list[int]
    labels: list[int]


class DevQuery(BaseModel):
    """One held-out question, answered greedily during training and scored by the dataset's `dev_metric`."""

    group: str  # the passage (or example) it asks about: its questions share a prompt prefix when decoded
    prompt_ids: list[int]  # rendered exactly as at inference, ending with the generation prompt
    reference: str  # the gold answer as the assistant turn writes it (a JSON list, a filled template)


class SFTDataset(BaseModel):
    conversations: list[Conversation]
    rows: list[SFTRow]
    tokenizer: str = ""
    stats: dict[str, float] = Field(default_factory=dict)
    # a few rows as (text piece, trained-on) segments, for the artifact's HTML view
    preview: list[list[tuple[str, bool]]] = Field(default_factory=list)
    # the dev split: passages held out before any training row was built (never trained on), as rows for
    # the teacher-forced dev loss and as questions for the dev metric (distill_ner.training.dev)
    dev_rows: list[SFTRow] = Field(default_factory=list)
    dev_queries: list[DevQuery] = Field(default_factory=list)
    dev_metric: str = ""  # a name in distill_ner.training.dev.DEV_METRICS; "" where there is no dev split


class Scores(BaseModel):
    precision: float
    recall: float
    f1: float
    n_queries: int = 0
    n_sentences: int = 0
    # seqeval strict span-level scores, where the benchmark has token-level gold
    span_precision: float | None = None
    span_recall: float | None = None
    span_f1: float | None = None


class Prediction(BaseModel):
    dataset: str
    id: str
    text: str
    # the entity type asked for (NER); empty where a query has no type (a whole document)
    type: str = ""
    gold: list[str]
    predicted: list[str]
    raw: str = ""


class EvalReport(BaseModel):
    """A model scored on named datasets (benchmarks, document kinds). The gate reads `primary` (the value of
    `metric` per dataset) and `coverage` (how many `unit`s were scored per dataset), whatever the recipe."""

    model: str
    metric: str = Field("F1", description="name of the primary metric, as reasons and views print it")
    unit: str = Field("sentences", description="what `coverage` counts: sentences, documents, ...")
    primary: dict[str, float] = Field(default_factory=dict, description="dataset -> primary metric")
    # items actually scored per dataset, so a gate can compare like with like
    coverage: dict[str, int] = Field(default_factory=dict)
    # the NER recipe's precision/recall/F1 detail per benchmark (empty for recipes that score otherwise)
    per_dataset: dict[str, Scores] = Field(default_factory=dict)
    # other named numbers per dataset (e.g. extraction's leaf precision and recall)
    details: dict[str, dict[str, float]] = Field(default_factory=dict)
    predictions: list[Prediction] = Field(default_factory=list)
    stats: dict[str, float] = Field(default_factory=dict)
    # the inference backend that decoded the answers (`auto` resolved); empty where not recorded
    backend: str = ""
    # the same benchmarks decoded again with grounded decoding (eval.grounded_also), scored the same way
    grounded: EvalReport | None = None

    @model_validator(mode="after")
    def _primary_from_f1(self) -> "EvalReport":
        # reports written before `primary` existed carried their primary metric as per_dataset F1
        if not self.primary and self.per_dataset:
            self.primary = {name: float(s.f1) for name, s in self.per_dataset.items()}
        return self

    @property
    def average(self) -> float:
        """The primary metric averaged over datasets (0 for an empty report)."""
        return sum(self.primary.values()) / len(self.primary) if self.primary else 0.0

    @property
    def average_f1(self) -> float:
        if not self.per_dataset:
            return 0.0
        return sum(s.f1 for s in self.per_dataset.values()) / len(self.per_dataset)


class PromotionDecision(BaseModel):
    model_name: str
    version: str
    promoted: bool
    reasons: list[str]
    candidate: dict[str, float]
    production_before: dict[str, float] | None = None
    production_version_before: str | None = None
