"""The UniversalNER metric (string match per query, micro-pooled) and a seqeval span metric.

The string metric follows the reference evaluation (universal-ner, src/eval/evaluate.py) rule for
rule, so our numbers are comparable with the paper's table:

- an answer counts only if the text *starts* with `[`: `re.match(r"\\[(.*?)\\]", text)`, i.e. match
  at position 0, non-greedy up to the first `]`. The reference compiles the pattern WITHOUT
  re.DOTALL, so `.` does not cross a newline: an answer whose first `]` comes after a line break
  parses as `[]`. We keep that (matching the reference beats being lenient). The reference strips
  the generated text before parsing (`get_response`); callers that pass raw generations should
  strip them too, since parse_answer itself does not.
- `json.loads` the match; any error gives `[]`.
- each item is normalised (lowercase, ASCII punctuation removed, whole words a/an/the removed,
  whitespace collapsed) and duplicates dropped after normalisation. Non-string items: the reference
  calls `.lower()` on them, which raises, and its blanket `except` turns the WHOLE answer into `[]`;
  we do the same rather than str() them. In an answer TEXT a nested list can never parse (the first
  `]` closes the inner list and cuts the JSON); in answers given as lists, a nested list becomes a
  tuple of normalised strings in the reference; we keep it as the JSON text of that tuple, which can
  never equal a normalised string (it holds punctuation) but equals the same tuple.
- gold answers go through the same parsing; correct = predicted item present in the gold items;
  precision = correct / (n_pred + 1e-10), recall = correct / (n_gold + 1e-10),
  f1 = 2 * p * r / (p + r + 1e-10), pooled over all queries of a dataset.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

from distill_ner.ner.data import NERSentence
from distill_ner.records import Scores

EPS = 1e-10

# no re.DOTALL on purpose: the reference's pattern does not use it (see module docstring)
_ANSWER_RE = re.compile(r"\[(.*?)\]")
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_PUNCT_TABLE = str.maketrans("", "", string.punctuation)

Answer = str | Sequence[Any]


def normalize(s: str) -> str:
    """Lowercase, drop ASCII punctuation, drop the words a/an/the, collapse whitespace (reference order)."""
    s = s.lower().translate(_PUNCT_TABLE)
    s = _ARTICLES_RE.sub(" ", s)
    return " ".join(s.split())


def _load_answer(text: str) -> Any:
    """The JSON value of the leading `[...]` of an answer, or None when there is none or it is invalid."""
    if not isinstance(text, str):
        return None
    match = _ANSWER_RE.match(text)
    try:
        return json.loads(match.group() if match else "[]")
    except ValueError:
        return None


def normalize_items(items: Sequence[Any]) -> list[str]:
    """Normalised, deduplicated items of a parsed answer; [] if any item is not a string (or a list
    of strings), as in the reference."""
    out: list[str] = []
    seen: set[str] = set()
    for item in items:
        if isinstance(item, str):
            key = normalize(item)
        elif isinstance(item, (list, tuple)) and all(isinstance(e, str) for e in item):
            key = json.dumps([normalize(e) for e in item], ensure_ascii=False)
        else:
            return []
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out


def parse_answer(text: str) -> list[str]:
    """Normalised items of a model answer under the reference's rules ([] when it does not parse)."""
    value = _load_answer(text)
    return normalize_items(value) if isinstance(value, list) else []


def extract_items(text: str) -> list[str]:
    """The raw (un-normalised) strings of an answer, for display and span mapping; [] where
    parse_answer would give [] or the answer holds anything but strings."""
    value = _load_answer(text)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return []
    return list(dict.fromkeys(value))


def _leading_list(text: str) -> list[Any] | None:
    """The answer's leading `[...]` as a list; None where there is none (which the metric scores as [])."""
    match = _ANSWER_RE.match(text) if isinstance(text, str) else None
    try:
        value = json.loads(match.group()) if match else None
    except ValueError:
        return None
    return value if isinstance(value, list) else None


def answered_empty(text: str) -> bool:
    """Whether an answer is the empty list (an abstention); an answer without a list is not."""
    return _leading_list(text) == []


def answer_parses(text: str) -> bool:
    """Whether an answer starts with a JSON list (what the metric reads; anything else it scores as [])."""
    return _leading_list(text) is not None


def grounding_rates(rows: Sequence[tuple[str, Sequence[str], str]]) -> dict[str, float]:
    """Over (sentence text, gold strings, raw answer) rows:

    - abstention_rate: share of the queries whose gold is [] that were answered [];
    - hallucination_rate: share of the predicted strings that are not a substring of their sentence;
    - unparseable_rate: share of the answers that do not start with a JSON list.
    A rate with nothing to count over is 0.
    """
    negatives = abstained = predicted = absent = unparseable = 0
    for text, gold, raw in rows:
        if not gold:
            negatives += 1
            abstained += answered_empty(raw)
        if not answer_parses(raw):
            unparseable += 1
        items = extract_items(raw)
        predicted += len(items)
        absent += sum(1 for item in items if item not in text)
    return {
        "abstention_rate": abstained / negatives if negatives else 0.0,
        "hallucination_rate": absent / predicted if predicted else 0.0,
        "unparseable_rate": unparseable / len(rows) if rows else 0.0,
    }


def _items(answer: Answer) -> list[str]:
    # a string is a raw answer to parse; a list is already extracted and only needs normalising
    if isinstance(answer, str):
        return parse_answer(answer)
    return normalize_items(answer)


def count_matches(prediction: Answer, gold: Answer) -> tuple[int, int, int]:
    """(correct, predicted, gold) item counts of one query."""
    pred_items = _items(prediction)
    gold_items = set(_items(gold))
    correct = sum(1 for item in pred_items if item in gold_items)
    return correct, len(pred_items), len(gold_items)


def scores_from_counts(correct: int, n_pred: int, n_gold: int, n_queries: int = 0, n_sentences: int = 0) -> Scores:
    precision = correct / (n_pred + EPS)
    recall = correct / (n_gold + EPS)
    f1 = 2 * precision * recall / (precision + recall + EPS)
    return Scores(precision=precision, recall=recall, f1=f1, n_queries=n_queries, n_sentences=n_sentences)


def uniner_scores(predictions: Sequence[Answer], golds: Sequence[Answer], n_sentences: int = 0) -> Scores:
    """Micro P/R/F1 over queries. Each prediction / gold is a raw answer text (parsed like the
    reference) or a list of strings (normalised and deduplicated)."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions but {len(golds)} gold answers")
    correct = n_pred = n_gold = 0
    for prediction, gold in zip(predictions, golds):
        c, p, g = count_matches(prediction, gold)
        correct += c
        n_pred += p
        n_gold += g
    return scores_from_counts(correct, n_pred, n_gold, len(predictions), n_sentences)


def average(per_dataset: Mapping[str, Scores]) -> Scores:
    """Macro average over datasets (how the paper's "Avg" column is formed); counts are summed.
    Span scores are averaged only when every dataset has them."""
    if not per_dataset:
        return Scores(precision=0.0, recall=0.0, f1=0.0)
    values = list(per_dataset.values())
    n = len(values)

    def mean(attr: str) -> float | None:
        got = [getattr(s, attr) for s in values]
        return None if any(v is None for v in got) else sum(got) / n

    return Scores(
        precision=sum(s.precision for s in values) / n,
        recall=sum(s.recall for s in values) / n,
        f1=sum(s.f1 for s in values) / n,
        n_queries=sum(s.n_queries for s in values),
        n_sentences=sum(s.n_sentences for s in values),
        span_precision=mean("span_precision"),
        span_recall=mean("span_recall"),
        span_f1=mean("span_f1"),
    )


# ---------------------------------------------------------------------------------------------
# Span metric: strings mapped back onto tokens, then seqeval strict IOB2


def _find_span(tokens_lower: list[str], mention: str, used: list[bool]) -> tuple[int, int] | None:
    """First occurrence of `mention` as a token sub-sequence not overlapping a tagged token.

    Case-insensitive. Falls back to matching with whitespace removed, so "Smith's" still finds
    the tokens ["Smith", "'s"] of a pre-tokenised sentence.
    """
    words = mention.lower().split()
    if not words:
        return None
    k, n = len(words), len(tokens_lower)
    for i in range(n - k + 1):
        if tokens_lower[i : i + k] == words and not any(used[i : i + k]):
            return i, i + k
    compact = "".join(words)
    for i in range(n):
        joined = ""
        for j in range(i, n):
            if used[j]:
                break
            joined += tokens_lower[j]
            if joined == compact:
                return i, j + 1
            if not compact.startswith(joined):
                break
    return None


def strings_to_tags(tokens: Sequence[str], mentions: Mapping[str, Sequence[str]]) -> tuple[list[str], int]:
    """IOB2 tags placing each (type -> strings) mention at its first unused occurrence, and the number
    of strings that could not be placed (not in the sentence, or overlapping an earlier one)."""
    lower = [t.lower() for t in tokens]
    used = [False] * len(tokens)
    tags = ["O"] * len(tokens)
    missed = 0
    for typ, strings in mentions.items():
        for mention in strings:
            span = _find_span(lower, mention, used)
            if span is None:
                missed += 1
                continue
            start, end = span
            tags[start] = f"B-{typ}"
            for i in range(start + 1, end):
                tags[i] = f"I-{typ}"
            for i in range(start, end):
                used[i] = True
    return tags, missed


def _span_sequences(
    sentences: Sequence[NERSentence], predictions: Mapping[tuple[str, str], Answer]
) -> tuple[list[list[str]], list[list[str]]]:
    by_sentence: dict[str, dict[str, Answer]] = {}
    for (sentence_id, typ), answer in predictions.items():
        by_sentence.setdefault(sentence_id, {})[typ] = answer
    y_true: list[list[str]] = []
    y_pred: list[list[str]] = []
    for sentence in sentences:
        tokens = sentence.tokens if sentence.tokens is not None else sentence.text.split()
        if sentence.tags is not None:
            gold_tags = list(sentence.tags)
        else:  # UniNER files have no token-level gold: place gold strings the same way as predictions
            gold_tags, _ = strings_to_tags(tokens, sentence.gold)
        answers = by_sentence.get(sentence.id, {})
        # the sentence's own types first, so the placement order matches the gold side
        ordered = [t for t in sentence.gold if t in answers] + sorted(t for t in answers if t not in sentence.gold)
        mentions = {t: extract_items(answers[t]) if isinstance(answers[t], str) else list(answers[t]) for t in ordered}
        pred_tags, _ = strings_to_tags(tokens, mentions)
        y_true.append(gold_tags)
        y_pred.append(pred_tags)
    return y_true, y_pred


def span_scores(
    sentences: Sequence[NERSentence], predictions: Mapping[tuple[str, str], Answer]
) -> tuple[float, float, float]:
    """seqeval strict IOB2 micro (precision, recall, f1) of predicted strings placed on the tokens.

    `predictions` maps (sentence id, type) to the predicted strings (or a raw answer text). Strings
    absent from the sentence cannot become tags and so do not count here (the string metric counts
    them).
    """
    from seqeval.metrics import f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    y_true, y_pred = _span_sequences(sentences, predictions)
    kwargs: dict[str, Any] = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    return (
        float(precision_score(y_true, y_pred, **kwargs)),
        float(recall_score(y_true, y_pred, **kwargs)),
        float(f1_score(y_true, y_pred, **kwargs)),
    )


def span_report(
    sentences: Sequence[NERSentence], predictions: Mapping[tuple[str, str], Answer], digits: int = 4
) -> str:
    """seqeval's per-type classification report (strict IOB2) for the same placement as span_scores."""
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    y_true, y_pred = _span_sequences(sentences, predictions)
    return str(classification_report(y_true, y_pred, digits=digits, mode="strict", scheme=IOB2, zero_division=0))


def dev_f1(predictions: Sequence[str], references: Sequence[str]) -> float:
    """The trainer's dev metric (training.dev.DEV_METRICS["uniner_f1"]): micro F1 of raw answers against
    the reference answers, as the benchmarks score them."""
    return uniner_scores(predictions, references).f1
