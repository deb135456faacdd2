"""Annotated passages -> UniversalNER conversations -> tokenised rows with exact loss masks.

One conversation per passage (RECIPE.md, "Training format"): the system prompt, `Text: {passage}` answered
by `I've read this text.`, then one question per type (positives and negatives, shuffled) answered by a
JSON list. Supervised passages carry `Dataset: {name}` in the passage turn ("Supervised mixing").

Rendering, tokenisation and loss masks are the shared `distill_ner.chat` path; inference renders its
prompt through the same functions, so the prompt a trained student sees at test time is token for token
the prefix it was trained on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from distill_ner.chat import (
    IGNORE_INDEX,
    ChatEncoder,
    Message,
    as_messages,
    conversation_rows,
    encode_text,
    preview_segments,
    render_text,
)
from distill_ner.ner.config import SFTConfig
from distill_ner.ner.negatives import normalize_type
from distill_ner.records import (
    AnnotatedPassage,
    AnnotationSet,
    Conversation,
    DevQuery,
    SFTDataset,
    SFTRow,
    Turn,
)
from distill_ner.rng import stable_rng

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = "A virtual assistant answers questions from a user based on the provided text."
READ_REPLY = "I've read this text."
QUESTION_TEMPLATE = "What describes {type} in the text?"
TEXT_TEMPLATE = "Text: {passage}"
# RECIPE.md writes it `Dataset: {name} \n Text: {passage}`: a space on each side of the line break.
DATASET_TEXT_TEMPLATE = "Dataset: {name} \n Text: {passage}"
EMPTY_ANSWER = "[]"
PREVIEW_ROWS = 3


# ----------------------------------------------------------------------------------------- turns


def passage_turn(text: str, dataset: str | None = None) -> str:
    """The first user turn; the dataset line only for human-annotated data (left out at zero-shot inference)."""
    if dataset is None:
        return TEXT_TEMPLATE.format(passage=text)
    return DATASET_TEXT_TEMPLATE.format(name=dataset, passage=text)


def question_turn(entity_type: str) -> str:
    return QUESTION_TEMPLATE.format(type=entity_type)


def answer_turn(entities: Sequence[str]) -> str:
    # ensure_ascii=False: the student copies "Łódź" from the passage rather than learning \u escapes;
    # json.loads at evaluation reads both spellings the same.
    return json.dumps(list(entities), ensure_ascii=False)


def _opening_turns(text: str, dataset: str | None) -> list[Turn]:
    return [
        Turn(role="system", content=SYSTEM_PROMPT),
        Turn(role="user", content=passage_turn(text, dataset)),
        Turn(role="assistant", content=READ_REPLY),
    ]


def _questions(passage: AnnotatedPassage) -> list[tuple[str, list[str]]]:
    """(type, entity strings) per type: positives in order of first mention, then negatives with [].

    Types are grouped by their normalised form so that "Person" and "person" do not become two questions
    with different answers; the first spelling seen is the one asked about. Entity strings keep the order
    of first occurrence, duplicates dropped. A negative that is also a positive type is skipped.
    """
    groups: dict[str, tuple[str, list[str]]] = {}
    for entity in passage.entities:
        key = normalize_type(entity.type)
        if not key:
            continue
        _, texts = groups.setdefault(key, (entity.type.strip(), []))
        if entity.text not in texts:
            texts.append(entity.text)
    for negative in passage.negatives:
        key = normalize_type(negative)
        if key and key not in groups:
            groups[key] = (negative.strip(), [])
    return list(groups.values())


def build_conversation(
    passage: AnnotatedPassage, seed: int, dataset: str | None = None, negatives_position: str = "shuffled"
) -> Conversation:
    """One conversation covering all of a passage's types; question order shuffled, opening turns first.

    `negatives_position`: "shuffled" mixes negative questions (answer []) among the positives (UniNER);
    "last" / "first" shuffle each kind on its own and put the negatives after / before the positives.
    The order depends on (seed, passage id) only, so a passage keeps its conversation when others change.
    """
    questions = _questions(passage)
    rng = stable_rng(seed, "questions", passage.id)
    if negatives_position == "shuffled":
        order = rng.permutation(len(questions)).tolist()
    elif negatives_position in ("last", "first"):
        positives = [i for i, (_, entities) in enumerate(questions) if entities]
        negatives = [i for i, (_, entities) in enumerate(questions) if not entities]
        positives = [positives[j] for j in rng.permutation(len(positives)).tolist()]
        negatives = [negatives[j] for j in rng.permutation(len(negatives)).tolist()]
        order = positives + negatives if negatives_position == "last" else negatives + positives
    else:
        raise ValueError(f"negatives_position must be shuffled, last or first, not {negatives_position!r}")
    turns = _opening_turns(passage.text, dataset)
    for i in order:
        entity_type, entities = questions[i]
        turns.append(Turn(role="user", content=question_turn(entity_type)))
        turns.append(Turn(role="assistant", content=answer_turn(entities)))
    return Conversation(id=passage.id, turns=turns, dataset=dataset)


def query_messages(text: str, entity_type: str, dataset: str | None = None) -> list[Message]:
    """The inference prompt for one (text, type) query: the training conversation's opening and one question."""
    return as_messages([*_opening_turns(text, dataset), Turn(role="user", content=question_turn(entity_type))])


# ------------------------------------------------------------------------- rendering (shared path)


def query_prompt_ids(tokenizer: Any, text: str, entity_type: str, dataset: str | None = None) -> list[int]:
    """Token ids of the zero-shot prompt, ending with the template's generation prompt."""
    messages = query_messages(text, entity_type, dataset)
    return encode_text(tokenizer, render_text(tokenizer, messages, add_generation_prompt=True))


def _select_supervised(
    supervised: Sequence[tuple[str, Sequence[AnnotatedPassage]]], cap: int, seed: int
) -> list[tuple[str, AnnotatedPassage]]:
    """At most `cap` (dataset, passage) pairs, drawn uniformly from all sources pooled (seeded)."""
    pool = [(name, passage) for name, passages in supervised for passage in passages]
    if len(pool) <= cap:
        return pool
    picks = stable_rng(seed, "supervised").choice(len(pool), size=cap, replace=False)
    return [pool[i] for i in sorted(picks.tolist())]


def split_dev(
    passages: Sequence[AnnotatedPassage], fraction: float, seed: int
) -> tuple[list[AnnotatedPassage], list[AnnotatedPassage]]:
    """(train, dev): round(fraction × n) passages (at least one when fraction > 0), drawn by seed; each
    side keeps the input order. Drawn by passage, so no passage has questions on both sides."""
    n_dev = max(1, round(fraction * len(passages))) if fraction > 0 and len(passages) > 1 else 0
    if not n_dev:
        return list(passages), []
    picked = set(stable_rng(seed, "dev").choice(len(passages), size=n_dev, replace=False).tolist())
    return (
        [p for i, p in enumerate(passages) if i not in picked],
        [p for i, p in enumerate(passages) if i in picked],
    )


def dev_queries(passages: Sequence[AnnotatedPassage], tokenizer: Any, seed: int) -> list[DevQuery]:
    """One question per type of each dev passage (positives and its sampled negatives), asked as the
    benchmarks ask them (no dataset line), its reference the answer the assistant turn would give.
    Passages in a seeded order, so a cap on the number of queries takes whole passages at random."""
    order = stable_rng(seed, "dev-order").permutation(len(passages)).tolist()
    queries = []
    for i in order:
        passage = passages[i]
        for entity_type, entities in _questions(passage):
            queries.append(
                DevQuery(
                    group=passage.id,
                    prompt_ids=query_prompt_ids(tokenizer, passage.text, entity_type),
                    reference=answer_turn(entities),
                )
            )
    return queries


def build_sft_dataset(
    annotations: AnnotationSet,
    config: SFTConfig,
    tokenizer: Any,
    supervised: Sequence[tuple[str, Sequence[AnnotatedPassage]]] = (),
) -> SFTDataset:
    """Conversations for every teacher passage plus at most supervised_ratio × as many supervised ones,
    shuffled (seeded) and tokenised. Same inputs and seed give a byte-identical dataset.

    `config.dev_fraction` of the teacher passages are held out first (split_dev): they give the dev rows
    (teacher-forced dev loss) and dev queries (dev F1), and no training row."""
    position = config.negatives_position
    train_passages, dev_passages = split_dev(annotations.passages, config.dev_fraction, config.seed)
    conversations = [build_conversation(p, config.seed, negatives_position=position) for p in train_passages]
    cap = int(config.supervised_ratio * len(conversations))
    chosen = _select_supervised(supervised, cap, config.seed)
    conversations += [
        build_conversation(p, config.seed, dataset=name, negatives_position=position) for name, p in chosen
    ]
    order = stable_rng(config.seed, "order").permutation(len(conversations)).tolist()
    conversations = [conversations[i] for i in order]

    encoder = ChatEncoder(tokenizer)
    rows: list[SFTRow] = []
    truncations = 0
    for conversation in conversations:
        new_rows, dropped = conversation_rows(conversation, encoder, config.max_length, config.train_read_reply)
        rows += new_rows
        truncations += dropped

    # questions are the user turns after the passage turn; each is answered by the turn that follows
    answers = [t.content for c in conversations for t in c.turns[3:] if t.role == "assistant"]
    negative_questions = sum(a == EMPTY_ANSWER for a in answers)
    tokens = sum(len(r.input_ids) for r in rows)
    trained = sum(label != IGNORE_INDEX for r in rows for label in r.labels)
    stats = {
        "conversations": len(conversations),
        "questions": len(answers),
        "negative_questions": negative_questions,
        "negatives_share": negative_questions / len(answers) if answers else 0.0,
        "rows": len(rows),
        "tokens": tokens,
        "trained_tokens": trained,
        "truncations": truncations,
        "supervised_conversations": len(chosen),
    }
    dev_rows: list[SFTRow] = []
    for passage in dev_passages:
        conversation = build_conversation(passage, config.seed, negatives_position=position)
        dev_rows += conversation_rows(conversation, encoder, config.max_length, config.train_read_reply)[0]
    queries = dev_queries(dev_passages, tokenizer, config.seed)
    stats |= {
        "dev_passages": len(dev_passages),
        "dev_rows": len(dev_rows),
        "dev_questions": len(queries),
        "dev_negative_questions": sum(q.reference == EMPTY_ANSWER for q in queries),
    }
    if truncations:
        logger.warning(
            "%d question/answer pairs did not fit in max_length=%d and were dropped", truncations, config.max_length
        )
    return SFTDataset(
        conversations=conversations,
        rows=rows,
        tokenizer=str(getattr(tokenizer, "name_or_path", "") or ""),
        stats=stats,
        preview=[preview_segments(r, tokenizer) for r in rows[:PREVIEW_ROWS]],
        dev_rows=dev_rows,
        dev_queries=queries,
        dev_metric="uniner_f1" if queries else "",
    )
