"""Grounded decoding: answers constrained, token by token, to a JSON list of substrings of a passage.

The language is `[` (`"s"` (`, "s"`)*)? `]`, where every `s` is a non-empty substring of the passage once
its JSON escapes are read (only `\\"`, `\\\\` and `\\/` are accepted; a passage's control characters
and `]` cannot be copied: the UniNER metric's parser would stop at that `]`), with at most one blank
around the brackets and commas, and the answer ends right after the `]`. Under it a student can neither invent a span nor break the list format.
Once a string repeats an earlier one the list must close after it: a weak student otherwise loops on one
span until max_new_tokens (the demo student did on 2 of 72 questions, 256 tokens each).

Why text, not token ids: the student spells a span with whatever tokens it likes (` Paris`, `Par`+`is`,
`"Paris` ...), which are not the passage's own tokenisation. So the check runs on decoded text: every
vocabulary id's text is computed once per tokenizer and stored in a character trie, and a row's state is a
small character automaton (where in the list it is; inside a string, the node of the passage's suffix
automaton that the span read so far reaches). A token is allowed iff its characters all step through the
automaton. The allowed set is walked over the trie only where the unconstrained argmax is rejected; where
it is accepted it is taken as is, so greedy decoding under the constraint is the argmax over allowed tokens
and answers the model already wrote within the language come out unchanged.

Length budget: a token is allowed only if the list can still be closed (`"]`, `]` ...) within the tokens
left, counted with the vocabulary's own cheapest spelling of the closing text, so an answer cut by
max_new_tokens is still a complete list.

This is a hand-written automaton rather than outlines / xgrammar / lm-format-enforcer: the JSON part is a
six-state grammar, the substring rule is the whole difficulty and none of those libraries offers it (a
regex of all substrings of a passage is quadratic in its length), and a plain Python check costs nothing
to install (those libraries pull in compiled extensions and pin torch/transformers versions).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

# automaton phases
_BEGIN, _OPEN, _STR, _AFTER_STR, _AFTER_COMMA, _DONE = range(6)
_ESCAPES = {'"': '"', "\\": "\\", "/": "/"}


class SuffixAutomaton:
    """Every substring of `text` as a path from state 0 (`step` returns -1 off the language)."""

    def __init__(self, text: str) -> None:
        # allowed-id sets per (vocabulary, automaton state), shared by every question about this passage
        self.allowed_cache: dict[tuple[int, int, int, bool, int, bool], list[int]] = {}
        self.next: list[dict[str, int]] = [{}]
        link, length = [-1], [0]
        last = 0
        for ch in text:
            cur = len(self.next)
            self.next.append({})
            length.append(length[last] + 1)
            link.append(0)
            p = last
            while p != -1 and ch not in self.next[p]:
                self.next[p][ch] = cur
                p = link[p]
            if p != -1:
                q = self.next[p][ch]
                if length[p] + 1 == length[q]:
                    link[cur] = q
                else:
                    clone = len(self.next)
                    self.next.append(dict(self.next[q]))
                    length.append(length[p] + 1)
                    link.append(link[q])
                    while p != -1 and self.next[p].get(ch) == q:
                        self.next[p][ch] = clone
                        p = link[p]
                    link[q] = link[cur] = clone
            last = cur

    def step(self, state: int, ch: str) -> int:
        return self.next[state].get(ch, -1)

    def __contains__(self, s: str) -> bool:
        state = 0
        for ch in s:
            state = self.step(state, ch)
            if state < 0:
                return False
        return True


class _Trie:
    __slots__ = ("children", "ids")

    def __init__(self) -> None:
        self.children: dict[str, _Trie] = {}
        self.ids: list[int] = []


class GroundedVocab:
    """Per-tokenizer tables: each id's text, a character trie of them, the cost of the closing texts.

    Ids whose text is empty (special tokens) or holds U+FFFD (a byte that is only part of a character)
    are never allowed, except the stop ids, which are allowed exactly when the list is complete.
    """

    def __init__(self, tokenizer: Any, stop_ids: Sequence[int]) -> None:
        self.stop_ids = list(dict.fromkeys(int(i) for i in stop_ids))
        self.texts = token_texts(tokenizer)
        self.root = _Trie()
        for token_id, text in enumerate(self.texts):
            if not text or "\ufffd" in text or token_id in self.stop_ids:
                continue
            node = self.root
            for ch in text:
                child = node.children.get(ch)
                if child is None:
                    child = node.children[ch] = _Trie()
                node = child
            node.ids.append(token_id)
        # fewest tokens that spell each closing text; a content character is assumed to take one token
        close_string = self._spelling_cost('"]')
        self.close_cost = {
            _BEGIN: self._spelling_cost("[]"),
            _OPEN: self._spelling_cost("]"),
            _AFTER_STR: self._spelling_cost("]"),
            _AFTER_COMMA: self._spelling_cost('"') + 1 + close_string,
            _DONE: 0,
        }
        self.close_string = close_string
        self.max_close_cost = max([*self.close_cost.values(), close_string + 1])

    def _spelling_cost(self, s: str) -> int:
        best = [0] + [len(s) + 1] * len(s)
        for i in range(len(s)):
            node = self.root
            for j in range(i, len(s)):
                node = node.children.get(s[j])  # type: ignore[assignment]
                if node is None:
                    break
                if node.ids:
                    best[j + 1] = min(best[j + 1], best[i] + 1)
        if best[-1] > len(s):
            raise ValueError(f"the vocabulary cannot spell {s!r}: grounded decoding needs it")
        return best[-1]


def token_texts(tokenizer: Any) -> list[str]:
    """The text each id adds when appended to a decoded answer.

    Decoding an id alone drops the leading blank some tokenizers (SentencePiece) attach to word starts, so
    each id is decoded after an anchor token and the anchor's own text is cut off.
    """
    n = len(tokenizer)
    anchor = tokenizer("a", add_special_tokens=False)["input_ids"][:1]
    if anchor:
        base = tokenizer.decode(anchor, skip_special_tokens=True)
        pairs = tokenizer.batch_decode([anchor + [i] for i in range(n)], skip_special_tokens=True)
        texts = [p[len(base) :] if p.startswith(base) else p for p in pairs]
    else:
        texts = tokenizer.batch_decode([[i] for i in range(n)], skip_special_tokens=True)
    return texts


_VOCABS: dict[tuple[int, tuple[int, ...]], GroundedVocab] = {}
_VOCABS_LOCK = threading.Lock()


def grounded_vocab(tokenizer: Any, stop_ids: Sequence[int]) -> GroundedVocab:
    """GroundedVocab built once per (tokenizer object, stop ids) in this process."""
    key = (id(tokenizer), tuple(stop_ids))
    with _VOCABS_LOCK:
        vocab = _VOCABS.get(key)
        if vocab is None:
            vocab = _VOCABS[key] = GroundedVocab(tokenizer, stop_ids)
        return vocab


class TextConstraint:
    """A row constraint over decoded text (the engine's RowConstraint): a token is allowed iff its characters all
    step through a character automaton and the answer can still be finished within the tokens left after it.

    Subclasses give the automaton: `_step` (None: off the language), `_cost` (tokens still needed to finish),
    `_final`, the fresh state `initial`, and optionally `_children` (which trie branches can match at all) and
    `_cache_slot` (where the allowed set of a state is kept while the budget cannot bind). The token walk, the
    allowed set over the vocabulary trie and the bookkeeping are the same for every grounded language.
    """

    vocab: GroundedVocab
    initial: Any
    state: Any

    def _step(self, state: Any, ch: str) -> Any: ...

    def _cost(self, state: Any) -> int: ...

    def _final(self, state: Any) -> bool: ...

    def _children(self, trie: _Trie, state: Any) -> Iterable[tuple[str, _Trie]]:
        return trie.children.items()

    def _cache_slot(self, budget: int) -> tuple[dict[Any, list[int]], Any] | None:
        return None

    def _walk(self, text: str, state: Any = None) -> Any:
        state = self.state if state is None else state
        for ch in text:
            state = self._step(state, ch)
            if state is None:
                return None
        return state

    @property
    def complete(self) -> bool:
        return self._final(self.state)

    def allows(self, token_id: int, remaining: int) -> bool:
        """Whether `token_id` may come next with `remaining` tokens left (this one included)."""
        if token_id in self.vocab.stop_ids:
            return self.complete
        if not 0 <= token_id < len(self.vocab.texts):
            return False
        text = self.vocab.texts[token_id]
        if not text or "\ufffd" in text:
            return False
        state = self._walk(text)
        return state is not None and self._cost(state) <= remaining - 1

    def allowed_ids(self, remaining: int) -> list[int]:
        """Every id that `allows` accepts now (the stop ids once the answer is complete)."""
        if self.complete:
            return list(self.vocab.stop_ids)
        budget = remaining - 1
        slot = self._cache_slot(budget)
        if slot is not None:
            cached = slot[0].get(slot[1])
            if cached is not None:
                return cached
        out: list[int] = []
        stack = [(self.vocab.root, self.state)]
        while stack:
            trie, state = stack.pop()
            for ch, child in self._children(trie, state):
                nxt = self._step(state, ch)
                if nxt is None:
                    continue
                if child.ids and self._cost(nxt) <= budget:
                    out.extend(child.ids)
                if child.children:
                    stack.append((child, nxt))
        if slot is not None:
            slot[0][slot[1]] = out
        return out

    def advance(self, token_id: int) -> None:
        """Record the token the row emitted (stop ids end the row and change nothing)."""
        if token_id in self.vocab.stop_ids:
            return
        state = self._walk(self.vocab.texts[token_id])
        if state is None:
            raise ValueError(f"token {token_id} ({self.vocab.texts[token_id]!r}) is not allowed here")
        self.state = state

    def accepts(self, text: str) -> bool:
        """Whether a whole answer text is in the language (from a fresh state)."""
        state = self._walk(text, self.initial)
        return state is not None and self._final(state)


class SubstringListConstraint(TextConstraint):
    """The row constraint the engine consults: one answer, a JSON list of substrings of one passage.

    State: (phase, suffix-automaton node, escape pending, blanks seen in this gap, chars in the string).
    """

    def __init__(self, vocab: GroundedVocab, passage: str | SuffixAutomaton) -> None:
        self.vocab = vocab
        self.sam = passage if isinstance(passage, SuffixAutomaton) else SuffixAutomaton(passage)
        self.initial = (_BEGIN, 0, False, 0, 0)
        self.state: tuple[int, int, bool, int, int] = self.initial
        # a string may open only where the passage has a character it can start with
        self.can_open = any(ch >= " " and ch != "]" for ch in self.sam.next[0])
        # Once a string repeats an earlier one, the list ends after it (at most one more string, where one
        # token already opened it): a weak student otherwise loops on one span (`["San", "San", ...`) until
        # max_new_tokens, each loop costing a whole answer's decoding time and nothing in the answer.
        self.items: set[str] = set()
        self.current: list[str] = []
        self.must_end = False

    def advance(self, token_id: int) -> None:
        before = self.state
        super().advance(token_id)
        if token_id in self.vocab.stop_ids:
            return
        state, repeated = before, False
        for ch in self.vocab.texts[token_id]:
            nxt = self._step(state, ch, check_end=False)
            if state[0] == _STR and nxt[0] == _STR and (state[2] or ch != "\\"):
                self.current.append(_ESCAPES[ch] if state[2] else ch)
            elif state[0] == _STR and nxt[0] == _AFTER_STR:
                item = "".join(self.current)
                repeated = repeated or item in self.items
                self.items.add(item)
                self.current = []
            state = nxt
        self.must_end = self.must_end or repeated

    # ---------------------------------------------------------------------------- the automaton

    def _step(
        self, state: tuple[int, int, bool, int, int], ch: str, check_end: bool = True
    ) -> tuple[int, int, bool, int, int] | None:
        phase, node, escaped, blanks, length = state
        if phase == _STR:
            if escaped:
                decoded = _ESCAPES.get(ch)
                if decoded is None:
                    return None
                nxt = self.sam.step(node, decoded)
                return None if nxt < 0 else (_STR, nxt, False, 0, length + 1)
            if ch == '"':
                return (_AFTER_STR, 0, False, 0, 0) if length > 0 else None
            if ch == "\\":
                # only where some escape can go on, so the row never reaches a dead end
                if any(self.sam.step(node, d) >= 0 for d in _ESCAPES.values()):
                    return (_STR, node, True, 0, length)
                return None
            if ch < " " or ch == "]":
                # a raw control character is not valid JSON; a `]` would end the UniNER metric's
                # non-greedy `\[(.*?)\]` match inside the string and lose the whole answer
                return None
            nxt = self.sam.step(node, ch)
            return None if nxt < 0 else (_STR, nxt, False, 0, length + 1)
        if ch == " ":
            # one blank per gap (two before the list: a template's leading space, then the model's)
            limit = 2 if phase == _BEGIN else (0 if phase == _DONE else 1)
            return (phase, 0, False, blanks + 1, 0) if blanks < limit else None
        if phase == _BEGIN:
            if ch == "\n" and blanks < 2:
                return (_BEGIN, 0, False, blanks + 1, 0)
            return (_OPEN, 0, False, 0, 0) if ch == "[" else None
        if phase == _OPEN:
            if ch == '"':
                return (_STR, 0, False, 0, 0) if self.can_open else None
            return (_DONE, 0, False, 0, 0) if ch == "]" else None
        if phase == _AFTER_STR:
            if ch == ",":
                return None if (self.must_end and check_end) else (_AFTER_COMMA, 0, False, 0, 0)
            return (_DONE, 0, False, 0, 0) if ch == "]" else None
        if phase == _AFTER_COMMA:
            return (_STR, 0, False, 0, 0) if ch == '"' else None
        return None  # nothing follows the closing bracket

    def _cost(self, state: tuple[int, int, bool, int, int]) -> int:
        """Tokens still needed to close the list from `state`."""
        phase, _, escaped, _, length = state
        if phase == _STR:
            return self.vocab.close_string + (1 if escaped or length == 0 else 0)
        return self.vocab.close_cost[phase]

    def _final(self, state: tuple[int, int, bool, int, int]) -> bool:
        return state[0] == _DONE

    def _cache_slot(self, budget: int) -> tuple[dict[Any, list[int]], Any] | None:
        # with room for any closing text the set depends on the state alone: kept once per passage
        if budget < self.vocab.max_close_cost:
            return None
        phase, node, escaped, blanks, length = self.state
        return self.sam.allowed_cache, (id(self.vocab), phase, node, escaped, blanks, length > 0, self.must_end)


def grounded_constraints(
    tokenizer: Any, stop_ids: Sequence[int], passages: Sequence[str]
) -> list[SubstringListConstraint]:
    """One fresh constraint per passage (one suffix automaton per distinct passage text)."""
    vocab = grounded_vocab(tokenizer, stop_ids)
    automata = {p: SuffixAutomaton(p) for p in dict.fromkeys(passages)}
    return [SubstringListConstraint(vocab, automata[p]) for p in passages]
