"""Grounded template filling: answers held, token by token, to a NuExtract template filled with spans of the text.

The language, for a template (a JSON skeleton whose values are `""`, `[]`, `[{object}]` or `{object}`) and an
indent (an int, or None for compact separators): exactly what the extraction recipe's `dump_json(filled, indent)`
writes (its training target: json.dumps, UTF-8 kept, separators `,` and `: `, or `,` and `:` when compact; a `/`
may also come as `\\/`) for an object with the template's keys in the template's order, where every `""` value
is `""` or a non-empty substring of the text, every `[]` a list (maybe empty, then written `[]`) of non-empty
substrings, and every `[{object}]` a list (maybe empty) of objects of the element's shape. Keys, punctuation,
newlines and indentation are forced; string content follows the text's suffix automaton with grounded.py's escapes
(`\\"`, `\\\\`, `\\/` only, so a text's control characters cannot be copied). The answer ends after the closing
`}`: then only stop ids.

How: the template and indent compile into a small program of nodes: literal text (keys and punctuation, adjacent
pieces merged), string slots, and branches where a list either closes or takes one more item (the two
alternatives differ in their first character, so stepping stays deterministic). List items loop back to their
branch, so a row's state is a flat tuple (node, offset in a literal, suffix-automaton node, escape pending, string
non-empty), no stack. Tokens are checked on their decoded text exactly as in grounded.py (GroundedVocab's texts
and character trie), and greedy decoding keeps the model's argmax wherever the constraint accepts it.

Length budget: a state's cost is the fewest tokens of the vocabulary that spell its cheapest completion (close the
string, close every open list, write the remaining keys empty; one token counted for the content character a
list item still needs, or for an escape's second character). A token is allowed only if the cost after it fits
in the tokens left after it. Along the cheapest completion's own spelling the cost drops by one per token, so a
row cut by max_new_tokens still ends as a complete, conforming filling. When max_new_tokens is below the cost of
the empty filling itself (`min_tokens`), no token is allowed: the engine falls back to the stop id and the answer
is empty (Extractor.fill says so in the filling's error).
"""

from __future__ import annotations

import functools
import json
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

from distill_ner.engine.grounded import (
    _ESCAPES,
    GroundedVocab,
    SuffixAutomaton,
    TextConstraint,
    _Trie,
    grounded_vocab,
)

_LIT, _BRANCH, _STR, _END = range(4)
# in a completion text: one content character of a list item, counted as one token (no token text matches it)
_ONE = "\x00"
_INF = 1 << 30

# (node, offset in a literal, suffix-automaton node, escape pending, string non-empty)
State = tuple[int, int, int, bool, bool]


class TemplateProgram:
    """A template and indent compiled to nodes: the text-independent half of the constraint."""

    def __init__(self, template: dict[str, Any], indent: int | None) -> None:
        self.kind: list[int] = []
        self.text: list[str] = []  # a literal's text
        self.next: list[int] = []  # where a literal or string goes on
        self.alts: list[tuple[int, ...]] = []  # a branch's (take an item, close the list); both start with a literal
        self.required: list[bool] = []  # a string that must not be empty (a list item)
        self._indent = indent
        self._key_sep = ": " if indent is not None else ":"
        self.end = self._add(_END)
        self.start = self._object(template, 0, self.end)
        self.entry: list[State] = [(n, 0, 0, False, False) for n in range(len(self.kind))]
        self.first_chars = [tuple(self.text[a][0] for a in alts) for alts in self.alts]
        for chars in self.first_chars:
            assert len(set(chars)) == len(chars), "a branch's alternatives must differ in their first character"
        self._costs: weakref.WeakKeyDictionary[GroundedVocab, _Costs] = weakref.WeakKeyDictionary()

    # ------------------------------------------------------------------------------------------- compiling

    def _add(self, kind: int, text: str = "", nxt: int = -1, alts: tuple[int, ...] = (), required: bool = False) -> int:
        self.kind.append(kind)
        self.text.append(text)
        self.next.append(nxt)
        self.alts.append(alts)
        self.required.append(required)
        return len(self.kind) - 1

    def _lit(self, text: str, nxt: int) -> int:
        """`text` then node `nxt`, merged into one literal when `nxt` is one (a copy: `nxt` may be shared)."""
        if not text:
            return nxt
        if self.kind[nxt] == _LIT:
            return self._add(_LIT, text + self.text[nxt], self.next[nxt])
        return self._add(_LIT, text, nxt)

    def _newline(self, level: int) -> str:
        # json.dumps starts every member of a non-empty container on its own line, indented by level
        return "" if self._indent is None else "\n" + " " * (self._indent * level)

    def _object(self, template: Any, level: int, nxt: int) -> int:
        if not isinstance(template, dict) or not template:
            raise ValueError(f"a template object must be a non-empty JSON object, got {json.dumps(template)[:60]}")
        # built back to front, so every node knows where it goes on
        node = self._lit(self._newline(level) + "}", nxt)
        items = list(template.items())
        for i in reversed(range(len(items))):
            key, value = items[i]
            node = self._value(value, level + 1, node)
            head = ("{" if i == 0 else ",") + self._newline(level + 1)
            node = self._lit(head + json.dumps(key, ensure_ascii=False) + self._key_sep, node)
        return node

    def _value(self, value: Any, level: int, nxt: int) -> int:
        if value == "":
            return self._lit('"', self._add(_STR, nxt=nxt))
        if isinstance(value, dict):
            return self._object(value, level, nxt)
        if value == []:
            return self._list(None, level, nxt)
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
            return self._list(value[0], level, nxt)
        raise ValueError(f'a template value is "", [], [{{...}}] or {{...}}, got {json.dumps(value)[:60]}')

    def _list(self, element: dict[str, Any] | None, level: int, nxt: int) -> int:
        """`[]`, or `[` item (`,` item)* `]` with json.dumps's line breaks; items are strings or `element` objects."""
        after_item = self._add(_BRANCH)  # its alternatives need the item, which goes on to it: patched below
        if element is None:
            item = self._lit('"', self._add(_STR, nxt=after_item, required=True))
        else:
            item = self._object(element, level + 1, after_item)
        more = self._lit("," + self._newline(level + 1), item)
        self.alts[after_item] = (more, self._lit(self._newline(level) + "]", nxt))
        first = self._add(_BRANCH, alts=(self._lit(self._newline(level + 1), item), self._lit("]", nxt)))
        return self._lit("[", first)

    # ------------------------------------------------------------------------------------------ costs

    def costs(self, vocab: GroundedVocab) -> _Costs:
        """Per node, the fewest tokens spelling the cheapest completion from each position (once per vocabulary)."""
        costs = self._costs.get(vocab)
        if costs is None:
            costs = self._costs[vocab] = _Costs(self, vocab)
        return costs


class _Costs:
    """Spelling costs of the cheapest completion, for every position of the program, in one pass.

    The cheapest completion follows one successor per node (a branch's closing alternative), so positions form a
    tree towards the end, and the cost at a position is the best over the tokens that spell the text from there
    on: a shortest-path DP, filled from the end outwards. Each position is walked only as far as a token reaches.
    """

    def __init__(self, program: TemplateProgram, vocab: GroundedVocab) -> None:
        p = program
        n_nodes = len(p.kind)
        # a node's own part of the completion, and the node the completion goes on to
        segment = [""] * n_nodes
        succ = [-1] * n_nodes
        for n in range(n_nodes):
            if p.kind[n] == _LIT:
                segment[n], succ[n] = p.text[n], p.next[n]
            elif p.kind[n] == _STR:
                segment[n], succ[n] = (_ONE if p.required[n] else "") + '"', p.next[n]
            elif p.kind[n] == _BRANCH:
                succ[n] = p.alts[n][1]
        # nodes nearer the end first
        distance = [-1] * n_nodes
        distance[p.end] = 0
        for n in range(n_nodes):
            path = []
            while distance[n] < 0:
                path.append(n)
                n = succ[n]
            for d, m in enumerate(reversed(path), distance[n] + 1):
                distance[m] = d
        self.at: list[list[int]] = [[] for _ in range(n_nodes)]  # cost at each offset of the node's segment
        self.entry = [0] * n_nodes  # cost on entering the node
        root = vocab.root

        def chars_from(n: int, k: int) -> Iterator[tuple[str, int]]:
            """The completion's characters from position (n, k), each with the cost of the position after it."""
            while n != p.end:
                seg, costs = segment[n], self.at[n]
                for j in range(k, len(seg)):
                    yield seg[j], (costs[j + 1] if j + 1 < len(seg) else self.entry[succ[n]])
                n, k = succ[n], 0

        for n in sorted(range(n_nodes), key=distance.__getitem__):
            if n == p.end:
                continue
            seg = segment[n]
            costs = self.at[n] = [_INF] * len(seg)
            for k in reversed(range(len(seg))):
                best, trie = _INF, root
                for ch, after in chars_from(n, k):
                    if ch == _ONE:
                        if trie is root:
                            best = 1 + after
                        break
                    trie = trie.children.get(ch)  # type: ignore[assignment]
                    if trie is None:
                        break
                    if trie.ids:
                        best = min(best, 1 + after)
                costs[k] = best
            self.entry[n] = costs[0] if seg else self.entry[succ[n]]
        self.str_quote = {n: int(p.required[n]) for n in range(n_nodes) if p.kind[n] == _STR}
        finite = [c for costs in self.at for c in costs if c < _INF]
        # no state costs more than this (an escape or a list item's first character adds one): with a budget at
        # least this large, the budget rejects nothing and the allowed set depends on the state alone
        self.max_cost = max(finite, default=0) + 1
        if self.entry[p.start] >= _INF:
            raise ValueError("the vocabulary cannot spell the template's empty filling: grounded decoding needs it")


@functools.lru_cache(maxsize=256)
def _program(template_json: str, indent: int | None) -> TemplateProgram:
    return TemplateProgram(json.loads(template_json), indent)


def template_program(template: dict[str, Any], indent: int | None) -> TemplateProgram:
    """The compiled program of (template, indent), built once per process (key order is part of the key)."""
    return _program(json.dumps(template, ensure_ascii=False), indent)


class TemplateGrounding:
    """One (template, text) pair under one vocabulary: the step function, costs and allowed-set cache that every
    row decoding that pair shares."""

    def __init__(self, program: TemplateProgram, vocab: GroundedVocab, text: str | SuffixAutomaton) -> None:
        self.program = program
        self.vocab = vocab
        self.sam = text if isinstance(text, SuffixAutomaton) else SuffixAutomaton(text)
        self.costs = program.costs(vocab)
        self.allowed_cache: dict[State, list[int]] = {}

        def one_token(ch: str) -> bool:
            child = vocab.root.children.get(ch)
            return child is not None and bool(child.ids)

        # a list item may open only where one token can write its first character (the cost counts one), and an
        # escape only where one token can finish it: otherwise the budget could promise what cannot be spelled
        self.can_open = any(ch >= " " and ch not in '"\\' and one_token(ch) for ch in self.sam.next[0])
        self.escapes = {e: d for e, d in _ESCAPES.items() if one_token(e)}

    def step(self, state: State, ch: str) -> State | None:
        node, offset, at, escaped, filled = state
        p = self.program
        kind = p.kind[node]
        if kind == _LIT:
            text = p.text[node]
            if ch != text[offset]:
                return None
            if offset + 1 < len(text):
                return (node, offset + 1, 0, False, False)
            nxt = p.next[node]
            if p.kind[nxt] == _STR and p.required[nxt] and not self.can_open:
                return None
            return p.entry[nxt]
        if kind == _STR:
            if escaped:
                decoded = _ESCAPES.get(ch)
                if decoded is None:
                    return None
                nxt = self.sam.step(at, decoded)
                return None if nxt < 0 else (node, 0, nxt, False, True)
            if ch == '"':
                return p.entry[p.next[node]] if filled or not p.required[node] else None
            if ch == "\\":
                # only where an escape can go on, so the row never reaches a dead end
                if any(self.sam.step(at, d) >= 0 for d in self.escapes.values()):
                    return (node, 0, at, True, filled)
                return None
            if ch < " ":
                return None  # a raw control character is not valid JSON
            nxt = self.sam.step(at, ch)
            return None if nxt < 0 else (node, 0, nxt, False, True)
        if kind == _BRANCH:
            for alt in p.alts[node]:
                state_after = self.step(p.entry[alt], ch)
                if state_after is not None:
                    return state_after
        return None  # nothing follows the closing brace

    def chars(self, state: State) -> Iterator[str]:
        """Characters that may step from `state` (a superset: `step` decides), to prune the trie walk."""
        node, offset, at, escaped, _ = state
        p = self.program
        kind = p.kind[node]
        if kind == _LIT:
            yield p.text[node][offset]
        elif kind == _BRANCH:
            yield from p.first_chars[node]
        elif kind == _STR:
            if escaped:
                yield from _ESCAPES
            else:
                yield '"'
                yield "\\"
                # the text's own quote and backslash are written escaped: as raw characters they mean the above
                yield from (ch for ch in self.sam.next[at] if ch not in '"\\')

    def cost(self, state: State) -> int:
        """Tokens still needed to finish the filling from `state`."""
        node, offset, _, escaped, filled = state
        kind = self.program.kind[node]
        if kind == _LIT:
            return self.costs.at[node][offset]
        if kind == _STR:
            quote = self.costs.str_quote[node]
            if escaped or (quote and not filled):
                return 1 + self.costs.at[node][quote]
            return self.costs.at[node][quote]
        return self.costs.entry[node]


class TemplateConstraint(TextConstraint):
    """The row constraint the engine consults: one answer, the template filled with spans of one text."""

    def __init__(self, grounding: TemplateGrounding) -> None:
        self.grounding = grounding
        self.vocab = grounding.vocab
        self.initial = grounding.program.entry[grounding.program.start]
        self.state: State = self.initial

    @property
    def min_tokens(self) -> int:
        """Tokens the empty filling takes; with fewer, no token is allowed (with any usual vocabulary, where no
        single token spells a filled object more cheaply) and the row stops at once."""
        return self.grounding.cost(self.initial)

    def _step(self, state: State, ch: str) -> State | None:
        return self.grounding.step(state, ch)

    def _cost(self, state: State) -> int:
        return self.grounding.cost(state)

    def _final(self, state: State) -> bool:
        return state[0] == self.grounding.program.end

    def _children(self, trie: _Trie, state: State) -> Iterator[tuple[str, _Trie]]:
        # only the few characters the state can take, not every branch of the trie
        for ch in self.grounding.chars(state):
            child = trie.children.get(ch)
            if child is not None:
                yield ch, child

    def _cache_slot(self, budget: int) -> tuple[dict[Any, list[int]], Any] | None:
        # with room for the cheapest completion the set depends on the state alone: kept once per (template, text)
        g = self.grounding
        return (g.allowed_cache, self.state) if budget >= g.costs.max_cost else None


def template_constraints(
    tokenizer: Any, stop_ids: Sequence[int], items: Sequence[tuple[dict[str, Any], str]], indent: int | None
) -> list[TemplateConstraint]:
    """One fresh constraint per (template, text) item; rows of the same pair share their automaton and caches."""
    vocab = grounded_vocab(tokenizer, stop_ids)
    automata: dict[str, SuffixAutomaton] = {}
    groundings: dict[tuple[int, str], TemplateGrounding] = {}
    out = []
    for template, text in items:
        program = template_program(template, indent)
        key = (id(program), text)
        grounding = groundings.get(key)
        if grounding is None:
            sam = automata.get(text)
            if sam is None:
                sam = automata[text] = SuffixAutomaton(text)
            grounding = groundings[key] = TemplateGrounding(program, vocab, sam)
        out.append(TemplateConstraint(grounding))
    return out
