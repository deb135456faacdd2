"""Annotated passages -> UniversalNER conversations -> tokenised rows with exact loss masks.

One conversation per passage (RECIPE.md, "Training format"): the system prompt, `Text: {passage}` answered
by `I've read this text.`, then one question per type (positives and negatives, shuffled) answered by a
JSON list. Supervised passages carry `Dataset: {name}` in the passage turn ("Supervised mixing").

Rendering goes through the tokenizer's own chat template (ChatML's CHATML_TEMPLATE when it has none), and
inference renders its prompt with the same two functions (`render_text`, `encode_text`), so the prompt a
trained student sees at test time is token for token the prefix it was trained on.

How the loss mask is found (any template, no token ids assumed): the conversation is rendered once in
full; for each assistant message k the template is rendered again for messages[:k] with the generation
prompt and for messages[:k+1]. Where the template is prefix-stable, the generation prompt ends exactly
where the model starts writing at inference, so the target starts there (Llama-2's leading space after
`[/INST]` is part of what the model must generate); otherwise it starts at the message content. The target
ends after the first special token that the template writes after the content when the reply is the last
message (`<|im_end|>`, `</s>`, `<|eot_id|>`, `<end_of_turn>`), or after the non-blank template text there
when that holds no special token. Template glue after the end-of-turn token (ChatML's newline) is not
trained: generation stops at the end-of-turn token. Character spans become token labels through the
tokenizer's offset mapping (a token is trained when it starts inside a span); tokenizers without offsets
fall back to counting the tokens of the text before each span boundary.

That prefix method costs two renderings per turn, so it runs on a probe conversation once per tokenizer to
learn the template's turn layout, and each conversation is then matched against that layout in its one
full rendering, falling back to the prefix method where it does not match (see `_Encoder`).
"""

from __future__ import annotations

import json
import logging
import os
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from distill_ner.config import SFTConfig
from distill_ner.models import CHATML_TEMPLATE
from distill_ner.negatives import normalize_type, stable_rng
from distill_ner.records import AnnotatedPassage, AnnotationSet, Conversation, SFTDataset, SFTRow, Turn

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = "A virtual assistant answers questions from a user based on the provided text."
READ_REPLY = "I've read this text."
QUESTION_TEMPLATE = "What describes {type} in the text?"
TEXT_TEMPLATE = "Text: {passage}"
# RECIPE.md writes it `Dataset: {name} \n Text: {passage}`: a space on each side of the line break.
DATASET_TEXT_TEMPLATE = "Dataset: {name} \n Text: {passage}"
EMPTY_ANSWER = "[]"
IGNORE_INDEX = -100
PREVIEW_ROWS = 3

Message = dict[str, str]


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


def build_conversation(passage: AnnotatedPassage, seed: int, dataset: str | None = None) -> Conversation:
    """One conversation covering all of a passage's types; question order shuffled, opening turns first.

    The order depends on (seed, passage id) only, so a passage keeps its conversation when others change.
    """
    questions = _questions(passage)
    order = stable_rng(seed, "questions", passage.id).permutation(len(questions))
    turns = _opening_turns(passage.text, dataset)
    for i in order.tolist():
        entity_type, entities = questions[i]
        turns.append(Turn(role="user", content=question_turn(entity_type)))
        turns.append(Turn(role="assistant", content=answer_turn(entities)))
    return Conversation(id=passage.id, turns=turns, dataset=dataset)


def _as_messages(turns: Sequence[Turn]) -> list[Message]:
    return [{"role": turn.role, "content": turn.content} for turn in turns]


def render_messages(conversation: Conversation) -> list[Message]:
    """The conversation as chat-template messages."""
    return _as_messages(conversation.turns)


def query_messages(text: str, entity_type: str, dataset: str | None = None) -> list[Message]:
    """The inference prompt for one (text, type) query: the training conversation's opening and one question."""
    return _as_messages([*_opening_turns(text, dataset), Turn(role="user", content=question_turn(entity_type))])


# ------------------------------------------------------------------------- rendering (shared path)


def render_text(tokenizer: Any, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
    """Messages -> text through the tokenizer's chat template; ChatML when the tokenizer ships none.

    Templates that reject a system message (Gemma-2 raises "System role not supported") get the system
    prompt folded into the first user turn, as those models' own templates do when they accept one.
    Training and inference both come through here, so they fold it the same way.
    """
    from jinja2.exceptions import TemplateError

    kwargs = {} if getattr(tokenizer, "chat_template", None) else {"chat_template": CHATML_TEMPLATE}
    messages = list(messages)
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
        )
    except TemplateError:
        if len(messages) < 2 or messages[0]["role"] != "system" or messages[1]["role"] != "user":
            raise
    folded = [{"role": "user", "content": f"{messages[0]['content']}\n\n{messages[1]['content']}"}, *messages[2:]]
    return tokenizer.apply_chat_template(folded, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs)


def encode_text(tokenizer: Any, text: str) -> list[int]:
    # No added special tokens: the template writes BOS itself where the model expects one (this is also
    # what apply_chat_template(tokenize=True) does), so nothing is doubled.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def query_prompt_ids(tokenizer: Any, text: str, entity_type: str, dataset: str | None = None) -> list[int]:
    """Token ids of the zero-shot prompt, ending with the template's generation prompt."""
    messages = query_messages(text, entity_type, dataset)
    return encode_text(tokenizer, render_text(tokenizer, messages, add_generation_prompt=True))


# ------------------------------------------------------------------------------------ loss masks


@dataclass
class _Encoded:
    ids: list[int]
    labels: list[int]
    # token index just past each assistant turn's target, in message order
    turn_ends: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class _TurnLayout:
    """How a template lays out one assistant turn, learnt from a probe conversation.

    `before`: the text between the preceding user message's content and the reply's content;
    `lead`: its tail that is part of the target (Llama-2's space); `marker`: the end-of-turn text.
    """

    before: str
    lead: str
    marker: str


class _Encoder:
    """Renders and tokenises conversations for one tokenizer, labelling the assistant turns.

    The exact method (`_spans_by_prefixes`) renders two prefixes per assistant turn, O(turns²) template
    work per conversation (SmolLM2, 10 questions, 2-core machine: 27 ms a conversation, over 20 minutes for
    50k passages, against 3 ms with the layout below). So it runs once on a probe conversation to learn each template's turn layout (first reply, later replies), and every
    conversation is then located in its single full rendering by searching for
    `user content + layout.before + reply + layout.marker`, turn after turn. Any mismatch (a template that
    lays turns out differently in that conversation, or rewrites contents) falls back to the exact method for
    that conversation; tests check both methods agree on every template they cover.
    """

    PROBE = (
        {"role": "system", "content": "Probe system prompt."},
        {"role": "user", "content": "Probe first question?"},
        {"role": "assistant", "content": "Probe first reply."},
        {"role": "user", "content": "Probe second question?"},
        {"role": "assistant", "content": "Probe second reply."},
    )

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        specials = set(getattr(tokenizer, "all_special_tokens", []) or [])
        for token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
            if getattr(token, "special", False):
                specials.add(str(token))
        self.specials = sorted(s for s in specials if s)
        self.offsets_supported = True
        self.layouts = self._learn_layouts()

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
        return render_text(self.tokenizer, messages, add_generation_prompt)

    def _end_of_turn(self, after_content: str) -> int:
        """Length of the end-of-turn marker at the start of `after_content` (see the module docstring)."""
        # the special token that starts first; on a tie (one special a prefix of another) the longer one
        found = [(i, -len(s)) for s in self.specials if (i := after_content.find(s)) >= 0]
        if found:
            start, minus_length = min(found)
            return start - minus_length
        return len(after_content.rstrip())

    def _spans_by_prefixes(self, full: str, messages: Sequence[Message]) -> list[tuple[int, int]]:
        """The exact method: each assistant turn located by rendering the conversation up to it."""
        spans: list[tuple[int, int]] = []
        cursor = 0
        for k, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            content = message["content"].strip()  # templates commonly .strip()/trim the content
            prompt = self.render(messages[:k], add_generation_prompt=True)
            prompt_is_prefix = full.startswith(prompt) and len(prompt) >= cursor
            if prompt_is_prefix:
                search_from = len(prompt)
            else:
                # a template whose generation prompt is not a prefix of the history (e.g. one that adds an
                # empty reasoning block only when generating): search after the rendered history instead
                history = self.render(messages[:k])
                search_from = max(cursor, len(history)) if full.startswith(history) else cursor
            c0 = full.find(content, search_from)
            if c0 < 0:
                raise ValueError(f"chat template altered assistant turn {k}: {content[:80]!r} not found in the rendering")
            start = search_from if prompt_is_prefix and not full[search_from:c0].strip() else c0
            c1 = c0 + len(content)
            through = full if k + 1 == len(messages) else self.render(messages[: k + 1])
            tail = through[through.rfind(content) + len(content) :]
            # what the template writes after the reply, bounded by what the full rendering really has there
            common = os.path.commonprefix([tail, full[c1 : c1 + len(tail)]])
            end = c1 + self._end_of_turn(common)
            spans.append((start, end))
            cursor = end
        return spans

    def _learn_layouts(self) -> tuple[_TurnLayout, _TurnLayout] | None:
        """(first reply, later replies) layouts from the probe; None when the template defeats the probe."""
        try:
            full = self.render(self.PROBE)
            spans = self._spans_by_prefixes(full, self.PROBE)
        except Exception as error:  # a template that rejects the probe only loses the fast path
            logger.info("chat template probe failed (%s); using prefix rendering for every conversation", error)
            return None
        layouts = []
        for (start, end), k in zip(spans, (2, 4)):
            question, reply = self.PROBE[k - 1]["content"], self.PROBE[k]["content"]
            c0 = full.find(reply, start)
            q1 = full.rfind(question, 0, c0) + len(question)
            if c0 < 0 or q1 < len(question) or not q1 <= start <= c0 <= c0 + len(reply) <= end:
                return None
            layouts.append(_TurnLayout(before=full[q1:c0], lead=full[start:c0], marker=full[c0 + len(reply) : end]))
        return layouts[0], layouts[1]

    def _spans_by_layout(self, full: str, messages: Sequence[Message]) -> list[tuple[int, int]] | None:
        if self.layouts is None:
            return None
        spans: list[tuple[int, int]] = []
        cursor = 0
        for k, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            if k == 0 or messages[k - 1]["role"] != "user":
                return None
            layout = self.layouts[0 if not spans else 1]
            question, reply = messages[k - 1]["content"].strip(), message["content"].strip()
            q0 = full.find(question, cursor)
            if q0 < 0:
                return None
            q1 = q0 + len(question)
            at = full.find(layout.before + reply + layout.marker, q1)
            # only whitespace may separate them: a passage's trailing blank that the template kept
            if at < 0 or full[q1:at].strip():
                return None
            c0 = at + len(layout.before)
            end = c0 + len(reply) + len(layout.marker)
            spans.append((c0 - len(layout.lead), end))
            cursor = end
        return spans

    def assistant_spans(self, messages: Sequence[Message]) -> tuple[str, list[tuple[int, int]]]:
        """The full rendering and the character span of each assistant turn's target in it."""
        full = self.render(messages)
        spans = self._spans_by_layout(full, messages)
        return full, spans if spans is not None else self._spans_by_prefixes(full, messages)

    def _tokenize(self, text: str) -> tuple[list[int], Callable[[int], int]]:
        """Token ids of `text` and a function: char position -> index of the first token starting at or after it."""
        if self.offsets_supported:
            try:
                enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
                starts = [start for start, _ in enc["offset_mapping"]]
                return list(enc["input_ids"]), lambda pos: bisect_left(starts, pos)
            except (NotImplementedError, ValueError, TypeError, KeyError):
                self.offsets_supported = False
        # Prefix counting: right at turn boundaries the text before a boundary tokenises to a prefix of the
        # whole (boundaries sit next to special tokens or template whitespace).
        return encode_text(self.tokenizer, text), lambda pos: len(encode_text(self.tokenizer, text[:pos]))

    def encode(self, messages: Sequence[Message], train_from: int = 0) -> _Encoded:
        """Token ids and labels; assistant turns before the `train_from`-th are context, not targets."""
        full, spans = self.assistant_spans(messages)
        ids, index = self._tokenize(full)
        labels = [IGNORE_INDEX] * len(ids)
        turn_ends = []
        for n, (start, end) in enumerate(spans):
            lo, hi = index(start), index(end)
            if n >= train_from:
                labels[lo:hi] = ids[lo:hi]
            turn_ends.append(hi)
        return _Encoded(ids=ids, labels=labels, turn_ends=turn_ends)


def _split_units(messages: list[Message]) -> tuple[list[Message], list[list[Message]]]:
    """(opening up to the first assistant turn, then units each ending with an assistant turn)."""
    first = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), len(messages) - 1)
    opening, units, current = messages[: first + 1], [], []
    for message in messages[first + 1 :]:
        current.append(message)
        if message["role"] == "assistant":
            units.append(current)
            current = []
    if current:  # trailing non-assistant messages ride with the last unit
        if units:
            units[-1].extend(current)
        else:
            units.append(current)
    return opening, units


def _conversation_rows(conversation: Conversation, encoder: _Encoder, max_length: int) -> tuple[list[SFTRow], int]:
    """Rows of at most max_length tokens, and the number of question/answer units dropped.

    A conversation that fits is one row. Otherwise it is cut between question/answer units; each row
    repeats the opening (system, passage turn, READ_REPLY) because an answer means nothing without its
    passage. Only the first row trains on READ_REPLY, so every assistant turn is a target exactly once.
    A unit that does not fit even alone after the opening is dropped (counted; a conversation without
    questions that does not fit counts as one).
    """
    messages = render_messages(conversation)

    def row(n: int, enc: _Encoded) -> SFTRow:
        return SFTRow(id=f"{conversation.id}#{n}", conversation_id=conversation.id, input_ids=enc.ids, labels=enc.labels)

    whole = encoder.encode(messages)
    if len(whole.ids) <= max_length:
        return [row(0, whole)], 0
    opening, units = _split_units(messages)
    if not units:
        return [], 1
    # Token cost of each unit, read off the whole rendering; only a first guess, as templates need not
    # be additive, so every chunk is re-encoded and checked below.
    costs = [b - a for a, b in zip(whole.turn_ends, whole.turn_ends[1:])]
    base = whole.turn_ends[0] + (len(whole.ids) - whole.turn_ends[-1])

    rows: list[SFTRow] = []
    dropped = 0
    i = 0
    while i < len(units):
        j, estimate = i, base
        while j < len(units) and estimate + costs[j] <= max_length:
            estimate += costs[j]
            j += 1
        j = max(j, i + 1)  # the estimate may be pessimistic; a single unit is always tried for real
        while True:
            chunk = opening + [m for unit in units[i:j] for m in unit]
            enc = encoder.encode(chunk, train_from=0 if not rows else 1)
            if len(enc.ids) <= max_length:
                rows.append(row(len(rows), enc))
                break
            if j - i == 1:
                dropped += 1
                break
            j -= 1
        i = j
    return rows, dropped


def tokenize_conversation(conversation: Conversation, tokenizer: Any, max_length: int) -> list[SFTRow]:
    """Tokenised rows (unpadded) with labels = IGNORE_INDEX on everything but assistant targets."""
    rows, _ = _conversation_rows(conversation, _Encoder(tokenizer), max_length)
    return rows


# --------------------------------------------------------------------------------------- dataset


def preview_segments(row: SFTRow, tokenizer: Any) -> list[tuple[str, bool]]:
    """(decoded text, trained) segments over runs of equally-flagged tokens, for the artifact's view."""
    segments: list[tuple[str, bool]] = []
    start = 0
    for i in range(1, len(row.input_ids) + 1):
        if i == len(row.input_ids) or (row.labels[i] != IGNORE_INDEX) != (row.labels[start] != IGNORE_INDEX):
            text = tokenizer.decode(row.input_ids[start:i], skip_special_tokens=False)
            segments.append((text, row.labels[start] != IGNORE_INDEX))
            start = i
    return segments



def _select_supervised(
    supervised: Sequence[tuple[str, Sequence[AnnotatedPassage]]], cap: int, seed: int
) -> list[tuple[str, AnnotatedPassage]]:
    """At most `cap` (dataset, passage) pairs, drawn uniformly from all sources pooled (seeded)."""
    pool = [(name, passage) for name, passages in supervised for passage in passages]
    if len(pool) <= cap:
        return pool
    picks = stable_rng(seed, "supervised").choice(len(pool), size=cap, replace=False)
    return [pool[i] for i in sorted(picks.tolist())]


def build_sft_dataset(
    annotations: AnnotationSet,
    config: SFTConfig,
    tokenizer: Any,
    supervised: Sequence[tuple[str, Sequence[AnnotatedPassage]]] = (),
) -> SFTDataset:
    """Conversations for every teacher passage plus at most supervised_ratio × as many supervised ones,
    shuffled (seeded) and tokenised. Same inputs and seed give a byte-identical dataset."""
    conversations = [build_conversation(p, config.seed) for p in annotations.passages]
    cap = int(config.supervised_ratio * len(conversations))
    chosen = _select_supervised(supervised, cap, config.seed)
    conversations += [build_conversation(p, config.seed, dataset=name) for name, p in chosen]
    order = stable_rng(config.seed, "order").permutation(len(conversations)).tolist()
    conversations = [conversations[i] for i in order]

    encoder = _Encoder(tokenizer)
    rows: list[SFTRow] = []
    truncations = 0
    for conversation in conversations:
        conversation_rows, dropped = _conversation_rows(conversation, encoder, config.max_length)
        rows += conversation_rows
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
    if truncations:
        logger.warning("%d question/answer pairs did not fit in max_length=%d and were dropped", truncations, config.max_length)
    return SFTDataset(
        conversations=conversations,
        rows=rows,
        tokenizer=str(getattr(tokenizer, "name_or_path", "") or ""),
        stats=stats,
        preview=[preview_segments(r, tokenizer) for r in rows[:PREVIEW_ROWS]],
    )
