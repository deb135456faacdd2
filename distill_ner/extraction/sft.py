"""Extraction examples -> one two-turn conversation each -> tokenised rows (loss on the filling only).

Conversation: user = the NuExtract prompt (template + text, prompts.student_prompt), assistant = the
filled JSON. Tokenisation is the shared `chat.tokenize_conversation`: rendered through the
student's chat template, labels only on the assistant turn and its end-of-turn token. An example longer
than `max_length` cannot be cut (the filling needs the whole text) and is dropped, counted.
"""

from __future__ import annotations

import logging
from typing import Any

from distill_ner.chat import IGNORE_INDEX, encode_text, preview_segments, render_text, tokenize_conversation
from distill_ner.extraction.config import ExtractionPromptConfig, ExtractionSFTConfig
from distill_ner.extraction.data import ExtractionExample, ExtractionSet
from distill_ner.extraction.prompts import dump_json, student_messages
from distill_ner.extraction.templates import string_leaves
from distill_ner.records import Conversation, DevQuery, SFTDataset, SFTRow, Turn
from distill_ner.rng import stable_rng

logger = logging.getLogger(__name__)

PREVIEW_ROWS = 3


def build_conversation(example: ExtractionExample, prompt: ExtractionPromptConfig) -> Conversation:
    if example.filled is None:
        raise ValueError(f"example {example.id}: no filling to train on")
    messages = student_messages(example.template, example.text, example.filled, fmt=prompt.format, indent=prompt.indent)
    return Conversation(id=example.id, turns=[Turn(role=m["role"], content=m["content"]) for m in messages])


def build_extraction_sft(
    data: ExtractionSet, config: ExtractionSFTConfig, prompt: ExtractionPromptConfig, tokenizer: Any
) -> SFTDataset:
    """Conversations in a seeded order, tokenised; same inputs and seed give the same dataset.
    `config.dev_fraction` of the examples are held out first as the dev split (rows and questions, no
    training row)."""
    order = stable_rng(config.seed, "order").permutation(len(data.examples)).tolist()
    examples = [data.examples[i] for i in order]
    n_dev = max(1, round(config.dev_fraction * len(examples))) if config.dev_fraction > 0 and len(examples) > 1 else 0
    # the seeded order is already random: its first n_dev examples are the dev split
    dev_examples, examples = examples[:n_dev], examples[n_dev:]
    conversations: list[Conversation] = []
    rows: list[SFTRow] = []
    too_long = 0
    for example in examples:
        conversation = build_conversation(example, prompt)
        conversation_rows = tokenize_conversation(conversation, tokenizer, config.max_length)
        if not conversation_rows:
            too_long += 1
            continue
        conversations.append(conversation)
        rows += conversation_rows
    if too_long:
        logger.warning(
            "%d extraction examples are longer than max_length=%d tokens and were dropped", too_long, config.max_length
        )
    kept = {c.id for c in conversations}
    used = [ex for ex in examples if ex.id in kept]
    tokens = sum(len(r.input_ids) for r in rows)
    stats = {
        "examples": len(used),
        "shortened": sum(ex.shortened for ex in used),
        "empty_fillings": sum(1 for ex in used if not any(True for _ in string_leaves(ex.filled))),
        "rows": len(rows),
        "tokens": tokens,
        "trained_tokens": sum(label != IGNORE_INDEX for r in rows for label in r.labels),
        "max_row_tokens": max((len(r.input_ids) for r in rows), default=0),
        "too_long": too_long,
    }
    dev_rows: list[SFTRow] = []
    dev_queries: list[DevQuery] = []
    for example in dev_examples:
        example_rows = tokenize_conversation(build_conversation(example, prompt), tokenizer, config.max_length)
        if not example_rows:
            continue
        dev_rows += example_rows
        messages = student_messages(example.template, example.text, fmt=prompt.format, indent=prompt.indent)
        dev_queries.append(
            DevQuery(
                group=example.id,
                prompt_ids=encode_text(tokenizer, render_text(tokenizer, messages, add_generation_prompt=True)),
                reference=dump_json(example.filled, prompt.indent),
            )
        )
    stats |= {"dev_examples": len(dev_queries), "dev_rows": len(dev_rows)}
    # the shared SFT view shows the first rows with their trained tokens highlighted
    preview = [preview_segments(r, tokenizer) for r in rows[:PREVIEW_ROWS]]
    return SFTDataset(
        conversations=conversations,
        rows=rows,
        tokenizer=tokenizer.name_or_path or "",
        stats=stats,
        preview=preview,
        dev_rows=dev_rows,
        dev_queries=dev_queries,
        dev_metric="tree_score" if dev_queries else "",
    )
