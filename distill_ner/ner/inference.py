"""UniNER questions through the shared engine: (text, type) queries in, raw answers or entities out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from distill_ner.engine import Engine, Generation, group_indices
from distill_ner.ner.conversations import query_prompt_ids
from distill_ner.ner.mentions import DEFAULT_MAX_SEGMENT_CHARS, Mention, locate, merge, scored_items, segments
from distill_ner.ner.metrics import parse_answer

Query = tuple[str, str]  # (text, entity type)


class NEREngine(Engine):
    """Greedy answers of a student to UniNER questions; `answer()` returns raw texts in query order."""

    def prompt_ids(self, text: str, entity_type: str, dataset: str | None = None) -> list[int]:
        return query_prompt_ids(self.tokenizer, text, entity_type, dataset)

    def generate(
        self,
        queries: Sequence[Query],
        dataset: str | None = None,
        progress: bool = True,
        max_new_tokens: int | None = None,
        grounded: bool = False,
    ) -> list[Generation]:
        """Token-level results (ids without the stop token, stopped flag, decoded text) in query order.

        `grounded`: every answer is held to a JSON list of substrings of its text (`engine.grounded`);
        off, answers are the model's own (the UniNER evaluation, comparable with the paper)."""
        prompts = [self.prompt_ids(text, entity_type, dataset) for text, entity_type in queries]
        groups = group_indices(text for text, _ in queries)  # one sentence's questions share their prefix
        constraints = self.grounded_constraints([text for text, _ in queries]) if grounded else None
        return self.generate_ids(
            prompts, groups, progress=progress, max_new_tokens=max_new_tokens, constraints=constraints
        )

    def answer(
        self,
        queries: Sequence[Query],
        dataset: str | None = None,
        progress: bool = True,
        max_new_tokens: int | None = None,
        grounded: bool = False,
    ) -> list[str]:
        """Raw answers in query order, stripped like the reference's `get_response` (special tokens
        removed by decoding). `dataset` adds the `Dataset:` line; leave it None for zero-shot."""
        return [g.text.strip() for g in self.generate(queries, dataset, progress, max_new_tokens, grounded)]


Generate = Callable[[list[Query], bool], list[Generation]]  # (queries, grounded) -> one result per query


@dataclass
class TextEntities:
    """What one text yields: its mentions (offsets, scores) and the answered strings grouped by type."""

    mentions: list[Mention]
    grouped: dict[str, list[str]]


class Predictor:
    """Open NER for serving: texts of any length and the types to look for in, entities out.

    Each text is cut into sentences (`ner.mentions.segments`), every (sentence, type) question is asked
    once (a sentence repeated in a text or across texts is asked once), and the answers come back as
    mentions in the text's coordinates with scores, and grouped by type. Grounded decoding is the default:
    every answered string is then a span of its sentence."""

    def __init__(
        self,
        model_ref: str | None = None,
        *,
        engine: NEREngine | None = None,
        surface_forms: bool = False,
        grounded: bool = True,
        max_segment_chars: int = DEFAULT_MAX_SEGMENT_CHARS,
        **engine_kwargs: Any,
    ) -> None:
        if (model_ref is None) == (engine is None):
            raise ValueError("give exactly one of model_ref or engine")
        self.engine = engine if engine is not None else NEREngine(model_ref, **engine_kwargs)  # type: ignore[arg-type]
        # False: the normalised strings the UniNER metric scores (parse_answer); True: the strings as the
        # model wrote them (same parsing rules, no lowercasing/punctuation removal)
        self.surface_forms = surface_forms
        # True: every entity is a span of its text and every answer parses (grounded decoding)
        self.grounded = grounded
        self.max_segment_chars = max_segment_chars

    def generate(self, queries: list[Query], grounded: bool) -> list[Generation]:
        """The engine's answers to the queries (what a server's batcher calls from its worker thread)."""
        return self.engine.generate(queries, progress=False, grounded=grounded)

    def queries(self, texts: Sequence[str], types: Sequence[str]) -> tuple[list[Query], list[list[tuple[int, int]]]]:
        """The distinct (sentence, type) questions the texts need, and each text's sentence ranges."""
        ranges = [segments(text, self.max_segment_chars) for text in texts]
        unique: dict[Query, None] = {}
        for text, spans in zip(texts, ranges):
            for start, end in spans:
                for entity_type in types:
                    unique.setdefault((text[start:end], entity_type), None)
        return list(unique), ranges

    def extract(
        self,
        texts: Sequence[str],
        types: Sequence[str],
        *,
        grounded: bool | None = None,
        threshold: float = 0.0,
        generate: Generate | None = None,
    ) -> list[TextEntities]:
        """Per text: mentions (every occurrence, `text[start:end] == mention.text`, score >= threshold, in
        text order) and the answered strings by type. `generate` replaces `self.generate` (a batcher)."""
        types = list(dict.fromkeys(types))
        grounded = self.grounded if grounded is None else grounded
        queries, ranges = self.queries(texts, types)
        generations = (generate or self.generate)(queries, grounded)
        tokenizer = self.engine.tokenizer
        scored = {q: scored_items(g, tokenizer) for q, g in zip(queries, generations, strict=True)}
        answers = {q: g.text.strip() for q, g in zip(queries, generations)}
        out = []
        for text, spans in zip(texts, ranges):
            found: list[Mention] = []
            grouped: dict[str, dict[str, None]] = {t: {} for t in types}
            for start, end in spans:
                sentence = text[start:end]
                for entity_type in types:
                    items = scored[(sentence, entity_type)]
                    found += locate(text, start, end, entity_type, items, threshold)
                    if self.surface_forms:
                        strings = [item for item, score in items if score >= threshold]
                    else:  # the metric's normalised strings (scores are the surface forms')
                        strings = parse_answer(answers[(sentence, entity_type)])
                    grouped[entity_type].update(dict.fromkeys(strings))
            out.append(TextEntities(mentions=merge(found), grouped={t: list(v) for t, v in grouped.items()}))
        return out

    def predict(self, texts: Sequence[str], types: Sequence[str]) -> list[dict[str, list[str]]]:
        """For each text, type -> deduplicated entities (every requested type present, [] when none)."""
        return [found.grouped for found in self.extract(texts, types)]
