"""evaluate_model on small benchmark files written here: its numbers are uniner_scores of its own raw answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distill_ner.engine import EngineStats
from distill_ner.models import load_model, load_tokenizer, make_tiny_model
from distill_ner.ner.benchmarks import load_benchmark
from distill_ner.ner.config import EvalConfig, EvaluateNERConfig
from distill_ner.ner.evaluation import (
    PREDICTIONS_TABLE,
    benchmark_queries,
    evaluate_model,
    log_to_mlflow,
    predictions_table,
    report_metrics,
)
from distill_ner.ner.inference import NEREngine
from distill_ner.ner.metrics import parse_answer, uniner_scores

SENTENCES = {
    "Marie Curie was born in Warsaw .": {"person": ["Marie Curie"], "location": ["Warsaw"], "organization": []},
    "She worked at the University of Paris in Paris .": {
        "person": [],
        "location": ["Paris"],
        "organization": ["University of Paris"],
    },
    "Python was written by Guido van Rossum .": {"person": ["Guido van Rossum"], "location": [], "organization": []},
}


def write_uniner(path: Path, sentences: dict[str, dict[str, list[str]]]) -> Path:
    """The UniNER test-file format: one entry per (sentence, type) query."""
    entries = []
    for text, gold in sentences.items():
        for entity_type, entities in gold.items():
            entries.append(
                {
                    "id": f"q{len(entries)}",
                    "conversations": [
                        {"from": "human", "value": f"Text: {text}"},
                        {"from": "gpt", "value": "I've read this text."},
                        {"from": "human", "value": f"What describes {entity_type} in the text?"},
                        {"from": "gpt", "value": json.dumps(entities)},
                    ],
                }
            )
    path.write_text(json.dumps(entries, indent=1))
    return path


def write_conll(dir: Path) -> Path:
    """A token-level benchmark (CoNLL file + spec) so that span scores are computed."""
    conll = dir / "mini.conll"
    conll.write_text(
        "Marie B-PER\nCurie I-PER\nwas O\nborn O\nin O\nWarsaw B-LOC\n. O\n\n"
        "She O\nworked O\nat O\nSiemens B-ORG\nin O\nMunich B-LOC\n. O\n"
    )
    spec = dir / "mini_conll.yaml"
    spec.write_text(f"name: mini_conll\nformat: conll\npath: {conll}\nlabel_map: conll2003\n")
    return spec


class ScriptedEngine:
    """Answers from a table (text, type) -> answer: evaluation logic without a model."""

    backend = "scripted"

    def __init__(self, answers: dict[tuple[str, str], str]) -> None:
        self.answers = answers
        self.last_stats = EngineStats()
        self.calls: list[list[tuple[str, str]]] = []

    def answer(self, queries, dataset=None, progress=True, max_new_tokens=None, grounded=False) -> list[str]:
        assert dataset is None, "evaluation is zero-shot: no dataset line"
        self.calls.append(list(queries))
        self.grounded_calls = getattr(self, "grounded_calls", []) + [grounded]
        self.last_stats = EngineStats(queries=len(queries), generated_tokens=3 * len(queries), seconds=0.5)
        return [self.answers.get(q, "[]") for q in queries]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory: pytest.TempPathFactory) -> NEREngine:
    path = make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    model = load_model(str(path))
    with torch.no_grad():  # varied garbage instead of one repeated token (see test_inference)
        generator = torch.Generator().manual_seed(0)
        for param in model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.15)
    return NEREngine.from_model(model, load_tokenizer(str(path)), batch_size=4, max_new_tokens=8, name=str(path))


def test_report_equals_uniner_scores_of_raw_answers(tiny_engine: NEREngine, tmp_path: Path):
    bench = write_uniner(tmp_path / "mini.json", SENTENCES)
    config = EvalConfig(benchmarks=[str(bench)], max_new_tokens=8, batch_size=4)
    report = evaluate_model("tiny", config, engine=tiny_engine)

    benchmark = load_benchmark(str(bench))
    queries = benchmark_queries(benchmark)
    assert len(report.predictions) == len(queries) == 9
    raw = [p.raw for p in report.predictions]
    # the same engine run again gives the same answers (greedy), and the report's numbers are theirs
    again = tiny_engine.answer([(benchmark.sentences[i].text, t) for i, t, _ in queries], progress=False)
    assert raw == again
    expected = uniner_scores(raw, [g for _, _, g in queries], n_sentences=3)
    assert report.per_dataset["mini"] == expected
    assert report.coverage == {"mini": 3}
    assert [p.predicted for p in report.predictions] == [parse_answer(a) for a in raw]
    assert {"seconds", "queries_per_s", "generated_tokens_per_s", "mini.seconds"} <= set(report.stats)
    assert report.stats["queries"] == 9


def test_grounded_also_scores_a_second_grounded_pass(tiny_engine: NEREngine, tmp_path: Path):
    """eval.grounded_also: the same queries decoded grounded, scored the same way, logged as eval.grounded.*;
    the main pass (the paper-comparable numbers) is the plain one."""
    bench = write_uniner(tmp_path / "mini.json", SENTENCES)
    plain = evaluate_model("tiny", EvalConfig(benchmarks=[str(bench)], max_new_tokens=8), engine=tiny_engine)
    config = EvalConfig(benchmarks=[str(bench)], max_new_tokens=8, grounded_also=True)
    report = evaluate_model("tiny", config, engine=tiny_engine)
    assert report.per_dataset == plain.per_dataset and report.grounded is not None
    grounded = report.grounded
    texts = {p.text for p in grounded.predictions}
    assert len(grounded.predictions) == 9 and len(texts) == 3
    raw = [p.raw for p in grounded.predictions]
    assert grounded.per_dataset["mini"] == uniner_scores(raw, [p.gold for p in grounded.predictions], n_sentences=3)
    metrics = report_metrics(report)
    for key in ("f1", "abstention_rate", "hallucination_rate", "unparseable_rate"):
        assert f"eval.mini.{key}" in metrics and f"eval.grounded.mini.{key}" in metrics
    assert "eval.grounded.avg_f1" in metrics and "eval.grounded.queries_per_s" in metrics
    assert metrics["eval.grounded.mini.hallucination_rate"] == 0.0
    assert metrics["eval.grounded.mini.unparseable_rate"] == 0.0
    assert metrics["eval.mini.unparseable_rate"] > 0, "the random model's free answers do not parse"
    scripted = ScriptedEngine({})
    evaluate_model("s", EvalConfig(benchmarks=[str(bench)], grounded=True, grounded_also=True), engine=scripted)  # type: ignore[arg-type]
    assert scripted.grounded_calls == [True], "a grounded main pass is not run twice"


def test_rates_of_scripted_answers(tmp_path: Path):
    """abstention: negative queries answered []; hallucination: predicted strings not in the sentence."""
    bench = write_uniner(tmp_path / "mini.json", SENTENCES)
    curie, paris, python = SENTENCES
    answers = {
        (curie, "organization"): "[]",  # negative, abstains
        (paris, "person"): '["Marie"]',  # negative, names a string absent from the sentence
        (python, "location"): "no idea",  # negative, unparseable
        (curie, "person"): '["Marie Curie", "Curie Marie"]',  # one of two strings invented
    }
    report = evaluate_model("s", EvalConfig(benchmarks=[str(bench)]), engine=ScriptedEngine(answers))  # type: ignore[arg-type]
    metrics = report_metrics(report)
    # negatives: curie/organization, paris/person, python/location, python/organization (answered [] by default)
    assert metrics["eval.mini.abstention_rate"] == pytest.approx(2 / 4)
    assert metrics["eval.mini.hallucination_rate"] == pytest.approx(2 / 3)
    assert metrics["eval.mini.unparseable_rate"] == pytest.approx(1 / 9)


def test_scores_of_scripted_answers(tmp_path: Path):
    """Known answers give known numbers: 3 predicted items, 2 right, 5 gold items."""
    bench = write_uniner(tmp_path / "mini.json", SENTENCES)
    texts = list(SENTENCES)
    engine = ScriptedEngine(
        {
            (texts[0], "person"): '["Marie Curie"]',  # right
            (texts[0], "location"): '["the Warsaw", "Berlin"]',  # right after normalising, and a wrong one
            (texts[1], "location"): "Paris is a location.",  # prose: parses as []
        }
    )
    report = evaluate_model("scripted", EvalConfig(benchmarks=[str(bench)]), engine=engine)  # type: ignore[arg-type]
    scores = report.per_dataset["mini"]
    assert scores.precision == pytest.approx(2 / 3)
    assert scores.recall == pytest.approx(2 / 5)
    assert scores.f1 == pytest.approx(2 * (2 / 3) * (2 / 5) / (2 / 3 + 2 / 5))
    assert (scores.n_queries, scores.n_sentences) == (9, 3)
    assert scores.span_f1 is None, "UniNER files have no token-level gold"
    # every sentence is asked every type of the benchmark
    assert sorted(engine.calls[0]) == sorted((x, t) for x in texts for t in ["person", "location", "organization"])
    metrics = report_metrics(report)
    assert metrics["eval.mini.f1"] == scores.f1 and metrics["eval.avg_f1"] == scores.f1
    assert {"eval.mini.precision", "eval.mini.recall", "eval.queries_per_s"} <= set(metrics)
    table = predictions_table(report)
    assert len(table["raw"]) == 9 and sum(table["correct"]) == 2


def test_every_type_asked_and_span_scores(tmp_path: Path):
    """A token-level benchmark: a sentence without a type is still asked it (gold []), and seqeval runs."""
    spec = write_conll(tmp_path)
    engine = ScriptedEngine(
        {
            ("Marie Curie was born in Warsaw .", "person"): '["Marie Curie"]',
            ("Marie Curie was born in Warsaw .", "location"): '["Warsaw"]',
            ("She worked at Siemens in Munich .", "organization"): '["Siemens"]',
            ("She worked at Siemens in Munich .", "location"): '["Munich"]',
        }
    )
    report = evaluate_model("scripted", EvalConfig(benchmarks=[str(spec)]), engine=engine)  # type: ignore[arg-type]
    (name,) = report.per_dataset
    scores = report.per_dataset[name]
    assert scores.f1 == pytest.approx(1.0) and scores.span_f1 == pytest.approx(1.0)
    assert scores.n_queries == 2 * 3  # 2 sentences x {person, location, organization}
    assert report_metrics(report)[f"eval.{name}.span_f1"] == pytest.approx(1.0)


def test_max_sentences_subset_is_seeded(tmp_path: Path):
    bench = write_uniner(tmp_path / "mini.json", SENTENCES)
    config = EvalConfig(benchmarks=[str(bench)], max_sentences=2, seed=3)
    first = evaluate_model("s", config, engine=ScriptedEngine({}))  # type: ignore[arg-type]
    second = evaluate_model("s", config, engine=ScriptedEngine({}))  # type: ignore[arg-type]
    assert first.coverage == {"mini": 2}
    assert [p.id for p in first.predictions] == [p.id for p in second.predictions]


def test_log_to_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """What goes to the active run (MLflow's own calls recorded, not run: a sqlite store costs ~10 s)."""
    import mlflow

    bench = write_uniner(tmp_path / "mini.json", SENTENCES)
    config = EvalConfig(benchmarks=[str(bench)], max_sentences=2)
    report = evaluate_model("base-model", config, engine=ScriptedEngine({}))  # type: ignore[arg-type]
    logged: dict[str, object] = {}
    monkeypatch.setattr(mlflow, "active_run", lambda: None)
    assert log_to_mlflow(report, config) is False  # no active run: nothing logged, no error
    monkeypatch.setattr(mlflow, "active_run", lambda: object())
    monkeypatch.setattr(mlflow, "log_params", lambda p: logged.update(params=p))
    monkeypatch.setattr(mlflow, "log_metrics", lambda m: logged.update(metrics=m))
    monkeypatch.setattr(mlflow, "log_table", lambda data, artifact_file: logged.update(table=(data, artifact_file)))
    monkeypatch.setattr(mlflow, "log_text", lambda text, artifact_file: logged.update(text=(text, artifact_file)))
    monkeypatch.setattr(mlflow, "log_figure", lambda figure, artifact_file: logged.update(figure=artifact_file))
    assert log_to_mlflow(report, config, "base-model")
    assert logged["text"][1] == "zero_shot/comparison.md" and "mini" in logged["text"][0]
    assert logged["params"]["eval.model"] == "base-model" and logged["params"]["eval.max_sentences"] == 2
    # what decoded the answers, not the `auto` the config asked for
    assert config.backend == "auto" and logged["params"]["eval.backend"] == "scripted"
    assert logged["metrics"] == report_metrics(report)
    data, artifact_file = logged["table"]
    assert artifact_file == PREDICTIONS_TABLE == "predictions.json"
    assert data["raw"] == [p.raw for p in report.predictions]
    json.dumps(data)  # a JSON table: no objects MLflow could not serialise


def test_evaluate_ner_config():
    config = EvaluateNERConfig.model_validate(
        {"model": "models:/distill-ner@production", "eval": {"benchmarks": ["crossner_ai"], "max_sentences": 200}}
    )
    assert config.eval.max_sentences == 200
    with pytest.raises(ValueError, match="evall"):
        EvaluateNERConfig.model_validate({"model": "x", "evall": {}, "eval": {"benchmarks": []}})
