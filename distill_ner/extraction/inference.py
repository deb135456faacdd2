"""Fill templates with a trained student: greedy decoding through the shared inference Engine.

The prompt is rendered exactly as in training (prompts.student_messages through the chat template, with
the generation prompt), turned into token ids with the shared `encode_text`, and decoded by
`Engine.generate_ids`, which batches prompts and runs a shared token prefix once per group. Prompts
with the same template are grouped: they share everything up to the text.

`grounded=True` holds every answer, token by token, to the JSON rendering of its template filled with
substrings of its text, written as in training (`engine.grounded_template`): keys, punctuation and indentation
forced, every value `""`, a span, or a list of spans/objects; the answer ends after the closing `}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from distill_ner.chat import encode_text, render_text
from distill_ner.engine import Engine, group_indices
from distill_ner.engine.grounded_template import template_constraints
from distill_ner.extraction.config import ExtractionPromptConfig
from distill_ner.extraction.prompts import dump_json, student_messages
from distill_ner.extraction.templates import parse_json_object


@dataclass
class Filling:
    raw: str  # what the model wrote
    value: dict[str, Any] | None  # the first JSON object in it; None when there is none
    error: str = ""


def parse_filling(raw: str) -> Filling:
    """The student's answer as written: its JSON object, scored whatever its shape (the metric judges that)."""
    try:
        return Filling(raw, parse_json_object(raw, strict=False))
    except ValueError as exc:
        return Filling(raw, None, str(exc))


class Extractor:
    """A student that fills templates, over a shared Engine (`Extractor.load` builds one from a model reference)."""

    def __init__(self, engine: Engine, prompt: ExtractionPromptConfig | None = None) -> None:
        self.engine = engine
        self.prompt = prompt or ExtractionPromptConfig()

    @classmethod
    def load(cls, model_ref: str, prompt: ExtractionPromptConfig | None = None, **engine_kwargs: Any) -> "Extractor":
        """From a local folder, adapter or models:/ URI; `engine_kwargs` go to Engine (batch_size, max_new_tokens, ...)."""
        return cls(Engine(model_ref, **engine_kwargs), prompt)

    def prompt_ids(self, template: dict[str, Any], text: str, examples: Sequence[dict[str, Any]] = ()) -> list[int]:
        tokenizer = self.engine.tokenizer
        messages = student_messages(
            template, text, fmt=self.prompt.format, examples=examples, indent=self.prompt.indent
        )
        return encode_text(tokenizer, render_text(tokenizer, messages, add_generation_prompt=True))

    def fill(
        self,
        items: Sequence[tuple[dict[str, Any], str]],
        *,
        examples: Sequence[dict[str, Any]] = (),
        progress: bool = False,
        max_new_tokens: int | None = None,
        grounded: bool = False,
    ) -> list[Filling]:
        """Greedy fillings of (template, text) pairs, in order; `grounded`: held to the template filled with spans
        of the text (module doc), off: the model's own answers."""
        prompts = [self.prompt_ids(template, text, examples) for template, text in items]
        groups = group_indices(dump_json(template, None) for template, _ in items)  # same template, same prefix
        constraints = None
        if grounded:
            engine = self.engine
            constraints = template_constraints(engine.tokenizer, engine.stop_ids, items, self.prompt.indent)
        generations = self.engine.generate_ids(
            prompts, groups, progress=progress, max_new_tokens=max_new_tokens, constraints=constraints
        )
        fillings = [parse_filling(g.text.strip()) for g in generations]
        limit = max_new_tokens or self.engine.max_new_tokens
        for filling, constraint in zip(fillings, constraints or ()):
            if constraint.min_tokens > limit and not filling.raw:
                # the constraint allowed no token at all, so the row stopped at once: say why it is empty
                filling.error = (
                    f"max_new_tokens {limit} cannot hold even the empty filling of this template "
                    f"({constraint.min_tokens} tokens): grounded decoding wrote nothing"
                )
        return fillings
