"""Grounded template filling (engine/grounded_template.py): the language without a model, then the tiny random
student decoding under it through Extractor.fill, the evaluation config and the CLI."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

import pytest

from distill_ner.engine.grounded import GroundedVocab
from distill_ner.engine.grounded_template import (
    TemplateConstraint,
    TemplateGrounding,
    template_constraints,
    template_program,
)
from distill_ner.extraction.config import ExtractionEvalConfig, ExtractionPromptConfig
from distill_ner.extraction.prompts import dump_json
from distill_ner.extraction.templates import conformance_errors, empty_fill, parse_json_object, string_leaves
from distill_ner.models import load_tokenizer

TEXT = 'Ann Lee paid $40 to "Acme" in Oslo \\ Bergen on 4 May.'
TEMPLATE: dict[str, Any] = {
    "name": "",
    "tags": [],
    "people": [{"who": "", "roles": []}],
    "meta": {"place": "", "dates": []},
}
FILLED: dict[str, Any] = {
    "name": "Ann Lee",
    "tags": ["$40", '"Acme"', "Oslo \\ Bergen"],  # the text's quotes and backslash, escaped in the JSON
    "people": [{"who": "Ann", "roles": []}, {"who": "", "roles": ["paid", "Ac"]}],
    "meta": {"place": "Oslo", "dates": ["4 May"]},
}
INDENTS = [None, 0, 2, 4]


class CharTokenizer:
    """A character-level vocabulary (printable ASCII, newline, a few merged tokens) with the methods token_texts
    reads: every answer can be spelled, and the cheapest spelling of a closing text is known by hand."""

    def __init__(self, extra: tuple[str, ...] = ()) -> None:
        self.pieces = ["<stop>", "\n", *(chr(c) for c in range(32, 127)), *extra]

    def __len__(self) -> int:
        return len(self.pieces)

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [self.pieces.index(c) for c in text]}

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(self.pieces[i] for i in ids if i != 0)

    def batch_decode(self, seqs: list[list[int]], skip_special_tokens: bool = True) -> list[str]:
        return [self.decode(s) for s in seqs]


@pytest.fixture(scope="module")
def char_vocab() -> GroundedVocab:
    return GroundedVocab(CharTokenizer(('",', '"\n', "    ", '": "', "Oslo")), [0])


@pytest.fixture(scope="module")
def vocab(tokenizer) -> GroundedVocab:
    return GroundedVocab(tokenizer, [tokenizer.convert_tokens_to_ids("<|im_end|>")])


def constraint(vocab: GroundedVocab, indent: int | None, template: dict[str, Any] = TEMPLATE, text: str = TEXT):
    return TemplateConstraint(TemplateGrounding(template_program(template, indent), vocab, text))


def check_filling(answer: str, template: dict[str, Any], text: str, indent: int | None) -> dict[str, Any]:
    """The answer is the training target's spelling of a conforming filling whose strings are all spans of `text`."""
    value = parse_json_object(answer)
    assert conformance_errors(value, template) == [], answer
    assert all(s in text for _, s in string_leaves(value)), (answer, text)
    assert dump_json(value, indent) == answer.replace("\\/", "/")  # the one spelling dump_json would write
    return value


# ----------------------------------------------------------------------------------------- the language


@pytest.mark.parametrize("indent", INDENTS)
def test_renderings_of_conforming_fillings_are_accepted(char_vocab: GroundedVocab, indent: int | None):
    c = constraint(char_vocab, indent)
    assert c.accepts(dump_json(empty_fill(TEMPLATE), indent))
    assert c.accepts(dump_json(FILLED, indent))
    assert c.accepts(dump_json({**FILLED, "people": [{"who": "Lee", "roles": ["May"]}]}, indent))
    # a slash may be written escaped, as grounded.py allows
    slashed = constraint(char_vocab, indent, {"route": ""}, "from Oslo/Bergen")
    assert slashed.accepts(dump_json({"route": "Oslo/Bergen"}, indent))
    assert slashed.accepts(dump_json({"route": "Oslo/Bergen"}, indent).replace("/", "\\/"))


def _variants(indent: int | None) -> dict[str, str]:
    d = lambda value: dump_json(value, indent)  # noqa: E731
    good = d(FILLED)
    reordered = {"tags": FILLED["tags"], "name": FILLED["name"], "people": FILLED["people"], "meta": FILLED["meta"]}
    return {
        "not a substring": d({**FILLED, "name": "Bob Lee"}),
        "case differs": d({**FILLED, "name": "ann lee"}),
        "spans two places": d({**FILLED, "name": "Ann Oslo"}),
        "wrong key": d({("nom" if k == "name" else k): v for k, v in FILLED.items()}),
        "missing key": d({k: v for k, v in FILLED.items() if k != "tags"}),
        "extra key": d({**FILLED, "extra": ""}),
        "keys reordered": d(reordered),
        "nested key missing": d({**FILLED, "meta": {"place": "Oslo"}}),
        "empty list item": d({**FILLED, "tags": [""]}),
        "list where a string goes": d({**FILLED, "name": ["Ann"]}),
        "string where a list goes": d({**FILLED, "tags": "Ann"}),
        "object item malformed": d({**FILLED, "people": [{"who": "Ann"}]}),
        "list of strings in place of objects": d({**FILLED, "people": ["Ann"]}),
        "wrong indentation": dump_json(FILLED, 3),
        "other separators": json.dumps(FILLED, indent=indent, separators=(", ", ": ")),
        "text after the object": good + "\n",
        "blank before the object": " " + good,
        "unfinished": good[:-1],
        "unicode escape": good.replace("Ann Lee", "\\u0041nn Lee"),
        "raw newline in a string": good.replace("Ann Lee", "Ann\nLee"),
    }


@pytest.mark.parametrize("indent", [None, 4])
def test_everything_else_is_rejected(char_vocab: GroundedVocab, indent: int | None):
    c = constraint(char_vocab, indent)
    variants = _variants(indent)
    accepted = [name for name, answer in variants.items() if c.accepts(answer)]
    assert accepted == []
    # a control character of the text cannot be copied: JSON needs an escape that is not accepted
    tabbed = constraint(char_vocab, indent, {"a": ""}, "left\tright")
    assert tabbed.accepts(dump_json({"a": "left"}, indent))
    assert not tabbed.accepts(dump_json({"a": "left\tright"}, indent))
    assert not tabbed.accepts(dump_json({"a": "left"}, indent).replace("left", "left\tright"))


def test_allowed_ids_agree_with_allows_along_a_valid_answer(tokenizer, vocab: GroundedVocab):
    """Every token of a valid answer (the tokenizer's own spelling) passes `allows`, so a free answer that is in the
    language comes out unchanged; the trie walk finds exactly the ids `allows` accepts; stop only at the end."""
    stop = vocab.stop_ids[0]
    for indent in (None, 4):
        c = constraint(vocab, indent)
        answer = tokenizer(dump_json(FILLED, indent), add_special_tokens=False)["input_ids"]
        for step, token in enumerate([*answer, stop]):
            for remaining in (1, 12, 1000):
                allowed = set(c.allowed_ids(remaining))
                assert allowed == {i for i in range(len(tokenizer)) if c.allows(i, remaining)}, (indent, step)
            assert c.allows(token, 1000), (indent, step, vocab.texts[token])
            assert (stop in c.allowed_ids(1000)) == (step == len(answer))
            c.advance(token)
        assert c.complete


def test_a_rejected_token_cannot_be_advanced(vocab: GroundedVocab, tokenizer):
    c = constraint(vocab, 4)
    wrong = tokenizer("[", add_special_tokens=False)["input_ids"][0]
    assert not c.allows(wrong, 1000) and wrong not in c.allowed_ids(1000)
    with pytest.raises(ValueError, match="not allowed"):
        c.advance(wrong)


@pytest.mark.parametrize("which", ["chars", "tiny"])
def test_budget_always_leaves_room_to_finish(which: str, char_vocab: GroundedVocab, vocab: GroundedVocab):
    """Whatever allowed token is taken, the filling is finished within the tokens given, as soon as they can
    hold the empty filling; below that nothing at all is allowed (the engine then stops the row at once)."""
    v = char_vocab if which == "chars" else vocab
    rng = random.Random(0)
    templates = [(TEMPLATE, TEXT), ({"a": [], "b": {"c": [{"d": []}]}}, "x y"), ({"k": ""}, "")]
    walks = nested = 0
    for indent in (None, 4):
        for template, text in templates:
            least = constraint(v, indent, template, text).min_tokens
            assert constraint(v, indent, template, text).allowed_ids(least - 1) == []
            for budget in (least, least + 1, least + 3, least + 8, least + 40, least + 200):
                for _ in range(8):
                    c = constraint(v, indent, template, text)
                    answer = ""
                    for remaining in range(budget, 0, -1):
                        allowed = c.allowed_ids(remaining)
                        assert allowed, (indent, budget, answer)
                        token = rng.choice(allowed)
                        c.advance(token)
                        if token in v.stop_ids:
                            break
                        answer += v.texts[token]
                    assert c.complete and c.accepts(answer), (indent, budget, answer)
                    value = check_filling(answer, template, text, indent)
                    nested += template is TEMPLATE and any(person["roles"] for person in value["people"])
                    walks += 1
    assert walks == 2 * 3 * 6 * 8
    assert nested > 0, "some walks fill a list inside a list of objects"


def test_char_vocab_cost_is_the_closing_text():
    """With one token per character (and `",` merged), the empty filling costs its own spelling."""
    v = GroundedVocab(CharTokenizer(('",',)), [0])
    for indent in INDENTS:
        c = constraint(v, indent, {"a": "", "b": []})
        text = dump_json({"a": "", "b": []}, indent)
        assert c.min_tokens == len(text) - text.count('",')


def test_bad_templates_are_refused(char_vocab: GroundedVocab):
    for bad in ({}, {"a": "x"}, {"a": [{"b": ""}, {"c": ""}]}, {"a": 1}, {"a": {}}):
        with pytest.raises(ValueError):
            template_program(bad, 4)


# ------------------------------------------------------------------------------------- the tiny student

ITEMS: list[tuple[dict[str, Any], str]] = [
    (TEMPLATE, TEXT),
    ({"vendor": "", "items": [{"name": "", "price": ""}]}, "Invoice 12 from Acme Ltd: 2 chairs at $40, 1 desk at $90."),
    ({"who": [], "where": ""}, "Ann Lee joined Nordic Labs in Oslo as CTO."),
    ({"event": {"what": "", "when": ""}, "places": []}, "The fair opens in Paris on Friday; tickets cost €12."),
    ({"who": [], "where": ""}, "Meeting moved to Friday at noon in room 4."),
]


@pytest.fixture(scope="module")
def scrambled(tiny_student: Path, one_thread):
    """The tiny random student with larger weights: at its init scale it says the same token whatever the
    prompt; with std 0.15 every row gets its own varied tokens (as tests/test_inference.py does)."""
    import torch

    from distill_ner.models import load_model

    model = load_model(str(tiny_student))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.15)
    model.eval()
    return model, load_tokenizer(str(tiny_student))


def extractor(scrambled, indent: int | None, max_new_tokens: int = 160):
    from distill_ner.engine import Engine
    from distill_ner.extraction.inference import Extractor

    model, tokenizer = scrambled
    engine = Engine.from_model(model, tokenizer, batch_size=4, max_new_tokens=max_new_tokens)
    return Extractor(engine, ExtractionPromptConfig(indent=indent))


@pytest.mark.parametrize("indent", [4, None])
def test_grounded_fillings_parse_conform_and_copy_the_text(scrambled, indent: int | None):
    ex = extractor(scrambled, indent)
    grounded = ex.fill(ITEMS, grounded=True)
    spans = 0
    for (template, text), filling in zip(ITEMS, grounded):
        assert filling.value is not None, filling.raw
        assert check_filling(filling.raw, template, text, indent) == filling.value
        spans += len(list(string_leaves(filling.value)))
    assert spans > 0, "the grounded answers copy something from the texts"
    # not vacuous: the random student's own answers are not even JSON objects
    free = ex.fill(ITEMS)
    assert all(f.value is None for f in free), [f.raw for f in free]


def test_grounded_is_greedy_over_the_allowed_tokens(scrambled):
    """Grounded ids equal the free ids up to the first free token the constraint rejects; there the grounded
    token is the argmax over the allowed ones (checked with a plain forward pass)."""
    import torch

    NEW = 120  # room for every item's empty filling (the largest takes 91 tokens of the tiny vocabulary)
    ex = extractor(scrambled, 4, max_new_tokens=NEW)
    engine = ex.engine
    prompts = [ex.prompt_ids(template, text) for template, text in ITEMS]
    free = engine.generate_ids(prompts, progress=False)
    grounded = engine.generate_ids(
        prompts, progress=False, constraints=template_constraints(engine.tokenizer, engine.stop_ids, ITEMS, 4)
    )
    stop = engine.stop_ids[0]
    checked = 0
    for prompt, item, f, g in zip(prompts, ITEMS, free, grounded):
        c = template_constraints(engine.tokenizer, engine.stop_ids, [item], 4)[0]
        f_ids = f.token_ids + ([stop] if f.stopped else [])
        g_ids = g.token_ids + ([stop] if g.stopped else [])
        k = 0
        while k < len(f_ids) and c.allows(f_ids[k], NEW - k):
            c.advance(f_ids[k])
            k += 1
        assert g_ids[:k] == f_ids[:k]
        if k == len(f_ids):
            assert g_ids == f_ids
            continue
        allowed = sorted(c.allowed_ids(NEW - k))
        with torch.inference_mode():
            logits = engine.model(torch.tensor([prompt + g_ids[:k]])).logits[0, -1]
        assert g_ids[k] != f_ids[k] and g_ids[k] == allowed[int(logits[allowed].argmax())]
        checked += 1
    assert checked > 0


def test_grounded_fillings_finish_within_a_small_budget(scrambled):
    ex = extractor(scrambled, 4)
    tokenizer, stop_ids = ex.engine.tokenizer, ex.engine.stop_ids
    least = [c.min_tokens for c in template_constraints(tokenizer, stop_ids, ITEMS, 4)]
    for extra in (0, 2, 7):
        for (template, text), filling in zip(ITEMS, ex.fill(ITEMS, grounded=True, max_new_tokens=max(least) + extra)):
            check_filling(filling.raw, template, text, 4)
    # a budget below an item's empty filling: that row writes nothing and says why; the others still finish
    short = sorted(least)[len(least) // 2]
    for (template, text), need, filling in zip(ITEMS, least, ex.fill(ITEMS, grounded=True, max_new_tokens=short)):
        if need > short:
            assert filling.raw == "" and filling.value is None and "cannot hold" in filling.error
        else:
            check_filling(filling.raw, template, text, 4)


# ------------------------------------------------------------------------------------ evaluation and CLI


class RecordingExtractor:
    def __init__(self) -> None:
        self.grounded: list[bool] = []

    def fill(self, items, progress=False, max_new_tokens=None, grounded=False):
        from distill_ner.extraction.inference import Filling

        self.grounded.append(grounded)
        return [Filling("{}", {}) for _ in items]


def test_evaluation_passes_grounded_through():
    from distill_ner.extraction import evaluation

    for grounded in (False, True):
        stub = RecordingExtractor()
        config = ExtractionEvalConfig(kinds=["invoice"], max_per_kind=1, grounded=grounded)
        evaluation.evaluate_extraction("stub", config, ExtractionPromptConfig(), extractor=stub, progress=False)
        assert stub.grounded == [grounded]


def test_cli_extract_grounded(tiny_student: Path, tmp_path: Path, capsys):
    """The random tiny student writes no JSON of its own (test_extraction_model); grounded it prints the template
    filled with spans of the text."""
    from distill_ner.extraction.cli import add_commands

    (tmp_path / "t.json").write_text('{"who": [], "where": ""}')
    (tmp_path / "doc.txt").write_text("Ann met Bo in Oslo.")
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["extract", "--model", str(tiny_student), "--template", str(tmp_path / "t.json"), "--grounded"]
        + ["--max-new-tokens", "40", str(tmp_path / "doc.txt")]
    )
    assert args.grounded
    args.func(args)
    printed = json.loads(capsys.readouterr().out)
    assert conformance_errors(printed, {"who": [], "where": ""}) == []
    assert all(s in "Ann met Bo in Oslo." for _, s in string_leaves(printed))
