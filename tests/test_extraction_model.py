"""The extraction recipe on the shared machinery: teacher stages through the shared cache (fake backend),
SFT rows with loss on the filling only, greedy filling with the tiny student, the pyfunc, the evaluation
report the registry gate reads, and the CLI parser."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from distill_ner.config import GateConfig, TeacherConfig
from distill_ner.extraction import evaluation, sft
from distill_ner.extraction.config import (
    ExtractionEvalConfig,
    ExtractionPromptConfig,
    ExtractionSFTConfig,
    TemplatesConfig,
)
from distill_ner.extraction.data import ExtractionExample, ExtractionSet
from distill_ner.extraction.inference import Filling
from distill_ner.extraction.prompts import dump_json
from distill_ner.records import Passage
from distill_ner.teacher.backends import Completion, TeacherError
from distill_ner.teacher.client import TeacherCacheMissError

ROOT = Path(__file__).resolve().parents[1]

PASSAGES = [
    Passage(id="p1", text="Invoice 12 from Acme Ltd to Bo Inc. Total $40."),
    Passage(id="p2", text="Ann Lee joined Nordic Labs in Oslo as CTO."),
    Passage(id="p3", text="Nothing useful here, the teacher will ramble."),
    Passage(id="p4", text="Meeting moved to Friday at noon in room 4."),
    Passage(id="p5", text="Paris hosts the fair; tickets cost €12."),
]


class FakeTeacher:
    """Answers NuExtract's two prompts; p3's template is prose, p4's filling invents a value, p5's breaks the shape."""

    def __init__(self) -> None:
        self.calls = 0

    def complete(self, messages: list[dict[str, str]], params: dict[str, Any]) -> Completion:
        self.calls += 1
        content = messages[-1]["content"]
        text = content.split("!!!START Context!!!\n\n", 1)[1].split("\n\n!!!END Context!!!", 1)[0]
        if "Goal: Generate an information extraction dataset." in content:
            if text.startswith("Nothing"):
                return Completion("I think the schema should describe the document.")
            # sample values the filter must blank
            return Completion('```json\n{"who": ["Acme"], "place": "somewhere", "details": {"amount": ""}}\n```')
        if text.startswith("Meeting"):
            return Completion('{"who": ["Zed"], "place": "room 4", "details": {"amount": ""}}')
        if text.startswith("Paris"):
            return Completion('{"who": [], "place": "Paris"}')
        if text.startswith("Invoice"):
            return Completion('{"who": ["Acme Ltd", "Bo Inc."], "place": "", "details": {"amount": "$40"}}')
        return Completion('Here: {"who": ["Ann Lee"], "place": "Oslo", "details": {"amount": ""}}')


def teacher_config(tmp_path: Path, **kw: Any) -> TeacherConfig:
    return TeacherConfig(model="fake-teacher", cache_path=str(tmp_path / "cache.sqlite"), concurrency=2, **kw)


class OutageTeacher(FakeTeacher):
    """FakeTeacher whose server fails every request about the passages named in `down` (no answer at all)."""

    def __init__(self, down: set[str]) -> None:
        super().__init__()
        self.down = down

    def complete(self, messages: list[dict[str, str]], params: dict[str, Any]) -> Completion:
        if any(PASSAGES[int(pid[1:]) - 1].text in messages[-1]["content"] for pid in self.down):
            self.calls += 1
            raise TeacherError("server_error", "HTTP 500", retryable=False)
        return super().complete(messages, params)


def test_requests_without_answer_are_retried_next_run_and_stop_the_run_above_the_threshold(tmp_path: Path, monkeypatch):
    """Transport failures (unlike answers the filters refused) are flagged, expire the step's ZenML cache so
    the next run asks again, and more than teacher.max_failed_fraction of them stop the run before training."""
    from distill_ner import run_checks
    from distill_ner.extraction import annotate
    from steps.extraction import _teacher

    expired: list[bool] = []
    monkeypatch.setattr(_teacher, "retry_failures_next_run", lambda: expired.append(True))
    config = teacher_config(tmp_path, max_retries=0, max_failed_fraction=0.25)

    outage = OutageTeacher({"p2"})
    templates = annotate.generate_templates(PASSAGES, config, TemplatesConfig(), backend=outage, progress=False)
    failed = annotate.request_failures(templates, "template")
    assert [(f.id, f.reason) for f in failed] == [("p2", "server_error")]
    # p3's refused template is a failure too, but not a request to send again
    assert [f.id for f in templates.failures if not f.request] == ["p3"]
    _teacher.check_teacher(templates, "template", len(PASSAGES), config)  # 1 of 5 = 20 % <= 25 %
    assert expired == [True]

    with pytest.raises(run_checks.TeacherFailuresError) as err:
        _teacher.check_teacher(
            templates, "template", len(PASSAGES), config.model_copy(update={"max_failed_fraction": 0.1})
        )
    assert "teacher openai:fake-teacher: 1 of 5 template requests failed (20.0%" in str(err.value)
    assert "server_error 1" in str(err.value) and "p2: server_error" in str(err.value)

    # the next run asks the teacher again for p2 only; the others come from the response cache
    healthy = FakeTeacher()
    again = annotate.generate_templates(PASSAGES, config, TemplatesConfig(), backend=healthy, progress=False)
    assert healthy.calls == 1 and annotate.request_failures(again, "template") == []
    expired.clear()
    _teacher.check_teacher(again, "template", len(PASSAGES), config)
    assert expired == [], "a result without failed requests stays cacheable"

    # the filling stage: its own failed requests, counted against the templates it was asked to fill
    filled = annotate.fill_templates(again, config, backend=OutageTeacher({"p1", "p2"}), progress=False)
    assert sorted(f.id for f in annotate.request_failures(filled, "filling")) == ["p1", "p2"]
    with pytest.raises(run_checks.TeacherFailuresError, match="2 of 4 filling requests failed"):
        _teacher.check_teacher(filled, "filling", len(again.examples), config)

    # every request failed: nothing left to train on, whatever the threshold
    down = annotate.generate_templates(
        PASSAGES,
        teacher_config(tmp_path / "down", max_retries=0),
        TemplatesConfig(),
        backend=OutageTeacher({f"p{i}" for i in range(1, 6)}),
        progress=False,
    )
    with pytest.raises(run_checks.TeacherFailuresError, match="all 5 template requests failed"):
        _teacher.check_teacher(down, "template", len(PASSAGES), config.model_copy(update={"max_failed_fraction": 1.0}))


def test_teacher_stages_filter_count_and_cache(tmp_path: Path):
    from distill_ner.extraction import annotate  # needs teacher.annotate.run_teacher / make_request

    fake = FakeTeacher()
    config = teacher_config(tmp_path)
    templates = annotate.generate_templates(PASSAGES, config, TemplatesConfig(), backend=fake, progress=False)
    assert [e.id for e in templates.examples] == ["p1", "p2", "p4", "p5"]
    assert templates.examples[0].template == {"who": [], "place": "", "details": {"amount": ""}}
    assert [(f.id, f.stage, f.reason) for f in templates.failures] == [("p3", "template", "unparseable")]
    assert templates.filter_counts["template.sample_values_blanked"] == 4

    filled = annotate.fill_templates(templates, config, backend=fake, progress=False)
    assert {e.id: e.filled for e in filled.examples} == {
        "p1": {"who": ["Acme Ltd", "Bo Inc."], "place": "", "details": {"amount": "$40"}},
        "p2": {"who": ["Ann Lee"], "place": "Oslo", "details": {"amount": ""}},
    }
    reasons = {(f.id, f.stage): f.reason for f in filled.failures}
    assert reasons == {
        ("p3", "template"): "unparseable",
        ("p4", "filling"): "not_in_text",
        ("p5", "filling"): "template_mismatch",
    }
    assert filled.filter_counts["filling.not_in_text"] == 1 and filled.filter_counts["filling.template_mismatch"] == 1
    assert filled.usage["template.cache_hits"] == 0 and filled.usage["filling.cache_hits"] == 0
    assert fake.calls == 5 + 4

    # a rerun is answered from the shared cache, offline too; a new passage offline is an error naming the cache
    offline = teacher_config(tmp_path, offline=True)
    again = annotate.fill_templates(
        annotate.generate_templates(PASSAGES, offline, TemplatesConfig(), progress=False), offline, progress=False
    )
    assert again.examples == filled.examples and again.usage["filling.cache_hits"] == 4
    with pytest.raises(TeacherCacheMissError, match="cache.sqlite"):
        annotate.generate_templates(
            [Passage(id="new", text="A new passage.")], offline, TemplatesConfig(), progress=False
        )


def test_sft_rows_train_only_on_the_filling(tiny_student: Path):
    from distill_ner.models import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_student))
    filled = {"who": ["Ann Lee"], "place": "Oslo", "details": {"amount": ""}}
    data = ExtractionSet(
        examples=[
            ExtractionExample(
                id="a",
                text="Ann Lee joined Nordic Labs in Oslo.",
                template={"who": [], "place": "", "details": {"amount": ""}},
                filled=filled,
            ),
            ExtractionExample(
                id="b", text="word " * 3000, template={"x": ""}, filled={"x": ""}
            ),  # too long: dropped, counted
        ]
    )
    for prompt in (ExtractionPromptConfig(), ExtractionPromptConfig(format="1.0", indent=None)):
        dataset = sft.build_extraction_sft(data, ExtractionSFTConfig(max_length=1024), prompt, tokenizer)
        assert dataset.stats["too_long"] == 1 and dataset.stats["examples"] == 1
        [row] = dataset.rows
        trained = [t for t, label in zip(row.input_ids, row.labels) if label != -100]
        assert all(label in (-100, tok) for tok, label in zip(row.input_ids, row.labels))
        # exactly the filled JSON and the end-of-turn token; nothing of the prompt or the template
        assert tokenizer.decode(trained) == dump_json(filled, prompt.indent) + "<|im_end|>"
        first = row.labels.index(next(label for label in row.labels if label != -100))
        end_of_prompt = "<|output|>" if prompt.format == "1.5" else "<|output|>\n"
        assert tokenizer.decode(row.input_ids[:first]).endswith(end_of_prompt + "<|im_end|>\n<|im_start|>assistant\n")


def test_dev_split_holds_out_examples_with_the_extractor_prompt(tiny_student: Path):
    from distill_ner.extraction.inference import Extractor
    from distill_ner.training.dev import dev_metric

    tokenizer = load_tokenizer_of(tiny_student)
    examples = [
        ExtractionExample(
            id=f"e{i}",
            text=f"Ann {i} lives in Oslo.",
            template={"who": "", "place": ""},
            filled={"who": f"Ann {i}", "place": "Oslo"},
        )
        for i in range(10)
    ]
    prompt = ExtractionPromptConfig()
    dataset = sft.build_extraction_sft(
        ExtractionSet(examples=examples), ExtractionSFTConfig(dev_fraction=0.2, seed=1), prompt, tokenizer
    )
    dev_ids = {q.group for q in dataset.dev_queries}
    assert len(dev_ids) == 2 and dataset.stats["dev_examples"] == 2 and dataset.dev_metric == "tree_score"
    assert not dev_ids & {c.id for c in dataset.conversations} and len(dataset.conversations) == 8
    assert {r.conversation_id for r in dataset.dev_rows} == dev_ids
    # a dev question is the prompt the Extractor renders at inference; its reference is the training answer
    extractor = Extractor.load(str(tiny_student), prompt, batch_size=2, max_new_tokens=4)
    by_id = {e.id: e for e in examples}
    for query in dataset.dev_queries:
        example = by_id[query.group]
        assert query.prompt_ids == extractor.prompt_ids(example.template, example.text)
        assert query.reference == dump_json(example.filled, prompt.indent)
    assert (
        dev_metric("tree_score")([q.reference for q in dataset.dev_queries], [q.reference for q in dataset.dev_queries])
        == 1.0
    )


def load_tokenizer_of(folder: Path):
    from distill_ner.models import load_tokenizer

    return load_tokenizer(str(folder))


def test_extractor_fills_with_the_tiny_student(tiny_student: Path):
    from distill_ner.extraction.inference import Extractor

    extractor = Extractor.load(str(tiny_student), batch_size=4, max_new_tokens=8)
    items = [({"a": ""}, "Ann met Bo."), ({"a": ""}, "Cy met Di."), ({"b": []}, "Ed left.")]
    fillings = extractor.fill(items)
    assert len(fillings) == 3 and all(isinstance(f, Filling) for f in fillings)
    # greedy: the same prompt alone gives the same answer as in a batch
    assert extractor.fill(items[1:2])[0].raw == fillings[1].raw
    prompt = extractor.engine.tokenizer.decode(extractor.prompt_ids({"a": ""}, "Ann met Bo."))
    assert prompt.endswith("### Text:\nAnn met Bo.\n\n<|output|><|im_end|>\n<|im_start|>assistant\n")


class GoldExtractor:
    """Answers the benchmark's gold for half the documents and nothing parseable for the others."""

    def __init__(self, docs: dict[str, dict[str, Any]]) -> None:
        self.docs = docs

    def fill(self, items, progress=False, max_new_tokens=None, grounded=False):
        out = []
        for i, (_, text) in enumerate(items):
            gold = self.docs[text]
            out.append(Filling(dump_json(gold), gold) if i % 2 == 0 else Filling("sorry", None, "no JSON object found"))
        return out


def test_evaluation_report_feeds_the_registry_gate():
    from distill_ner import registry
    from distill_ner.extraction.data import load_examples

    config = ExtractionEvalConfig(kinds=["invoice", "news_event"], max_per_kind=2)
    docs = {d.text: d.filled for d in load_examples(config.benchmark)}
    report = evaluation.evaluate_extraction(
        "stub", config, ExtractionPromptConfig(), extractor=GoldExtractor(docs), progress=False
    )
    assert set(report.primary) == {"invoice", "news_event"} and report.coverage == {"invoice": 2, "news_event": 2}
    assert (report.metric, report.unit, report.per_dataset) == ("tree score", "documents", {})
    assert report.stats["valid_json"] == 0.5 and report.stats["tree_score"] == pytest.approx(0.5)
    assert len(report.predictions) == 4 and report.predictions[0].type == ""
    assert report.predictions[0].gold == report.predictions[0].predicted != []
    # the same subset every time (seeded)
    again = evaluation.evaluate_extraction(
        "stub", config, ExtractionPromptConfig(), extractor=GoldExtractor(docs), progress=False
    )
    assert [p.id for p in again.predictions] == [p.id for p in report.predictions]
    primary, coverage = registry.metrics_from_report(report)
    passed, reasons = registry.decide(
        primary, None, GateConfig(min_f1=0.4), coverage, metric=report.metric, unit=report.unit
    )
    assert passed, reasons
    assert reasons[0].startswith("pass: floor: avg tree score ")
    failed, reasons = registry.decide(
        primary, {"invoice": 0.5}, GateConfig(), coverage, {"invoice": 2}, metric=report.metric, unit=report.unit
    )
    assert not failed and "missing" in reasons[-1]
    assert evaluation.report_metrics(report)["extract.avg_tree_score"] == pytest.approx(report.average)
    with pytest.raises(ValueError, match="not in"):
        evaluation.select_documents(load_examples(config.benchmark), ExtractionEvalConfig(kinds=["poems"]))


def test_pyfunc_fills_rows(tiny_student: Path):
    from distill_ner.extraction.config import ExtractionServing
    from distill_ner.extraction.serving import ExtractionModel, to_rows

    model = ExtractionModel()
    model.load_context(SimpleNamespace(artifacts={"model": str(tiny_student)}, model_config={"max_new_tokens": 6}))
    rows = [
        {"text": "Ann  met\nBo.", "template": json.dumps({"who": []})},
        {"text": "Cy left.", "template": {"who": []}},
    ]
    out = model.predict(None, rows)
    assert [r["text"] for r in out] == ["Ann met Bo.", "Cy left."] and all("raw" in r and "filled" in r for r in out)
    with pytest.raises(ValueError, match="template leaf"):
        to_rows([{"text": "x", "template": {"who": "Ann"}}])
    settings = ExtractionServing()
    assert set(settings.pyfunc_config()) == {"backend", "prompt_format", "indent", "batch_size", "max_new_tokens"}
    assert settings.python_model().name == "pyfunc_extraction.py"  # logged from code, never pickled


def test_cli_parser():
    from distill_ner.extraction.cli import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["extract", "--template", "t.json", "--indent", "none", "doc.txt"])
    assert (args.model, args.template, args.file, args.indent, args.prompt_format) == (
        "models:/distill-extract@production",
        "t.json",
        "doc.txt",
        None,
        "1.5",
    )
    assert args.func.__name__ == "cmd_extract"


def test_cli_extract_end_to_end(tiny_student: Path, tmp_path: Path, capsys):
    from distill_ner.extraction.cli import add_commands

    (tmp_path / "t.json").write_text('{"who": []}')
    (tmp_path / "doc.txt").write_text("Ann met Bo.")
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "extract",
            "--model",
            str(tiny_student),
            "--template",
            str(tmp_path / "t.json"),
            "--max-new-tokens",
            "4",
            str(tmp_path / "doc.txt"),
        ]
    )
    # a random tiny model writes no JSON: the command says so and exits 1 (a trained one prints the JSON)
    with pytest.raises(SystemExit) as exit_info:
        args.func(args)
    assert exit_info.value.code == 1
    assert "holds no JSON object" in capsys.readouterr().err


def test_evaluation_takes_the_backend_like_ner(tiny_student) -> None:
    """`eval.backend` reaches the engine and the report names what ran (`auto` resolved)."""
    config = ExtractionEvalConfig(kinds=["invoice"], max_per_kind=1, max_new_tokens=4, backend="transformers")
    report = evaluation.evaluate_extraction(str(tiny_student), config, ExtractionPromptConfig(), progress=False)
    assert report.backend == "transformers" and len(report.predictions) == 1
    with pytest.raises(ValueError, match="backend"):
        ExtractionEvalConfig(backend="onnx")
