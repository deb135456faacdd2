"""Chat rendering and assistant-only loss masks, shared by every recipe.

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
full rendering, falling back to the prefix method where it does not match (see `ChatEncoder`).
"""

from __future__ import annotations

import logging
import os
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from distill_ner.models import CHATML_TEMPLATE
from distill_ner.records import Conversation, SFTRow, Turn

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label of tokens that carry no loss (PyTorch's cross-entropy default)

Message = dict[str, str]


def as_messages(turns: Sequence[Turn]) -> list[Message]:
    """Turns as chat-template messages."""
    return [{"role": turn.role, "content": turn.content} for turn in turns]


# ---------------------------------------------------------------------------------------- rendering


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


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    """The special token(s) the chat template writes right after an assistant reply.

    Found by rendering a probe conversation with a reply in the middle (where templates write it as they
    do in training data) and reading the first special token after that reply (ChatML's `<|im_end|>`,
    Llama-3's `<|eot_id|>`, Gemma's `<end_of_turn>`, Llama-2's `</s>`), so no template is hard-coded.
    Empty when the template writes no special token there.
    """
    reply = "Probe reply."
    messages = [
        {"role": "system", "content": "Probe system prompt."},
        {"role": "user", "content": "Probe question?"},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "Probe second question?"},
    ]
    rendered = render_text(tokenizer, messages, add_generation_prompt=True)
    at = rendered.find(reply)
    if at < 0:
        return []
    tail = rendered[at + len(reply) :]
    specials = set(getattr(tokenizer, "all_special_ids", []) or [])
    for token_id, added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(added, "special", False):
            specials.add(int(token_id))
    for token_id in tokenizer(tail, add_special_tokens=False)["input_ids"]:
        if token_id in specials:
            return [int(token_id)]
    return []


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


class ChatEncoder:
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
                raise ValueError(
                    f"chat template altered assistant turn {k}: {content[:80]!r} not found in the rendering"
                )
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


def split_units(messages: list[Message]) -> tuple[list[Message], list[list[Message]]]:
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


def conversation_rows(
    conversation: Conversation, encoder: ChatEncoder, max_length: int, train_opening: bool = True
) -> tuple[list[SFTRow], int]:
    """Rows of at most max_length tokens, and the number of question/answer units dropped.

    `train_opening` False: the first assistant reply (e.g. UniNER's `I've read this text.`) is context only.

    A conversation that fits is one row. Otherwise it is cut between question/answer units; each row
    repeats the opening (every message up to the first assistant reply) because an answer means nothing without its
    passage. Only the first row trains on that first reply, so every assistant turn is a target exactly once.
    A unit that does not fit even alone after the opening is dropped (counted; a conversation without
    questions that does not fit counts as one).
    """
    messages = as_messages(conversation.turns)

    def row(n: int, enc: _Encoded) -> SFTRow:
        return SFTRow(
            id=f"{conversation.id}#{n}", conversation_id=conversation.id, input_ids=enc.ids, labels=enc.labels
        )

    first = 0 if train_opening else 1
    whole = encoder.encode(messages, train_from=first)
    if len(whole.ids) <= max_length:
        return [row(0, whole)], 0
    opening, units = split_units(messages)
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
            enc = encoder.encode(chunk, train_from=first if not rows else 1)
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
    rows, _ = conversation_rows(conversation, ChatEncoder(tokenizer), max_length)
    return rows


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
