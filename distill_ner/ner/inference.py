"""UniNER questions through the shared engine: (text, type) queries in, raw answers or entities out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from distill_ner.engine import Engine, Generation, group_indices
from distill_ner.ner.conversations import query_prompt_ids
from distill_ner.ner.metrics import extract_items, parse_answer

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


class Predictor:
    """Open NER for serving: texts and the types to look for in, entities per type out."""

    def __init__(
        self,
        model_ref: str | None = None,
        *,
        engine: NEREngine | None = None,
        surface_forms: bool = False,
        grounded: bool = False,
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

    def predict(
        self, texts: Sequence[str], types: Sequence[str], dataset: str | None = None, progress: bool = False
    ) -> list[dict[str, list[str]]]:
        """For each text, type -> deduplicated entities (every requested type present, [] when none)."""
        types = list(dict.fromkeys(types))
        queries = [(text, t) for text in texts for t in types]
        answers = self.engine.answer(queries, dataset=dataset, progress=progress, grounded=self.grounded)
        parse = extract_items if self.surface_forms else parse_answer
        out: list[dict[str, list[str]]] = []
        for i in range(len(texts)):
            row = answers[i * len(types) : (i + 1) * len(types)]
            out.append({t: list(dict.fromkeys(parse(a))) for t, a in zip(types, row)})
        return out
