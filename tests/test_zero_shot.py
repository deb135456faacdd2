"""Which queries a benchmark is scored on (the spec's rule), checked against an independent implementation
of the reference evaluation; and the comparison with published zero-shot numbers (table, chart, views)."""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

import pytest
from test_evaluation import ScriptedEngine, write_uniner

from distill_ner.ner.benchmarks import BenchmarkSpec, load_benchmark, register_benchmark, unregister_benchmark
from distill_ner.ner.config import EvalConfig
from distill_ner.ner.evaluation import benchmark_queries, evaluate_model
from distill_ner.ner.zero_shot import comparison_figure, comparison_markdown, figure_png, load_published
from distill_ner.records import EvalReport, Scores

# four domains, two sentences each; every sentence is asked its own domain's three types only
DOMAINS = {
    "music": ["band", "album", "musical instrument"],
    "politics": ["politician", "political party", "election"],
    "science": ["scientist", "chemical element", "theory"],
    "literature": ["writer", "book", "poem"],
}
SENTENCES = [
    (
        "music",
        "Radiohead released OK Computer with a theremin .",
        {"band": ["Radiohead"], "album": ["OK Computer"], "musical instrument": ["theremin"]},
    ),
    (
        "music",
        "The Beatles recorded Abbey Road .",
        {"band": ["The Beatles"], "album": ["Abbey Road"], "musical instrument": []},
    ),
    (
        "politics",
        "Angela Merkel led the CDU into the 2005 election .",
        {"politician": ["Angela Merkel"], "political party": ["CDU"], "election": ["2005 election"]},
    ),
    ("politics", "Labour lost the vote .", {"politician": [], "political party": ["Labour"], "election": []}),
    (
        "science",
        "Marie Curie isolated radium .",
        {"scientist": ["Marie Curie"], "chemical element": ["radium"], "theory": []},
    ),
    (
        "science",
        "Einstein proposed general relativity .",
        {"scientist": ["Einstein"], "chemical element": [], "theory": ["general relativity"]},
    ),
    ("literature", "Tolkien wrote The Hobbit .", {"writer": ["Tolkien"], "book": ["The Hobbit"], "poem": []}),
    (
        "literature",
        "Keats wrote Ode to a Nightingale .",
        {"writer": ["Keats"], "book": [], "poem": ["Ode to a Nightingale"]},
    ),
]
# a model that answers some queries right, some wrong, and names something for every other query
ANSWERS = {
    (SENTENCES[0][1], "band"): '["Radiohead"]',
    (SENTENCES[0][1], "album"): '["OK Computer", "Radiohead"]',
    (SENTENCES[2][1], "politician"): '["the Angela Merkel"]',
    (SENTENCES[4][1], "chemical element"): "radium",  # prose: parses as []
    (SENTENCES[6][1], "writer"): '["Tolkien"]',
    (SENTENCES[7][1], "poem"): '["Ode to a Nightingale"]\nmore',
}
DEFAULT_ANSWER = '["Radiohead"]'


class Scripted(ScriptedEngine):
    def answer(self, queries, dataset=None, progress=True, max_new_tokens=None, grounded=False) -> list[str]:
        self.calls.append(list(queries))
        return [self.answers.get(q, DEFAULT_ANSWER) for q in queries]


def write_subset_file(path: Path) -> Path:
    sentences = {text: gold for _, text, gold in SENTENCES}
    assert len(sentences) == len(SENTENCES), "sentence texts must be unique"
    return write_uniner(path, sentences)


# --- the reference rules (universal-ner src/eval/evaluate.py), written out again from its description


def _ref_normalize(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _ref_parse(text: str) -> list:
    try:
        match = re.match(r"\[(.*?)\]", text)
        items = json.loads(match.group() if match else "[]")
        out: list = []
        for item in items:
            key = tuple(_ref_normalize(e) for e in item) if isinstance(item, (list, tuple)) else _ref_normalize(item)
            if key not in out:
                out.append(key)
        return out
    except Exception:
        return []


def reference_f1(path: Path, answer_of) -> tuple[float, float, float, int]:
    """(P, R, F1, queries) over the file's own entries, one per query, as the reference scores them."""
    correct = n_pred = n_gold = 0
    entries = json.loads(path.read_text())
    for entry in entries:
        conv = entry["conversations"]
        text = conv[0]["value"][len("Text: ") :]
        entity_type = re.fullmatch(r"What describes (.*) in the text\?", conv[-2]["value"]).group(1)
        gold, pred = _ref_parse(conv[-1]["value"]), _ref_parse(answer_of(text, entity_type))
        correct += sum(1 for p in pred if p in gold)
        n_pred += len(pred)
        n_gold += len(gold)
    p = correct / (n_pred + 1e-10)
    r = correct / (n_gold + 1e-10)
    return p, r, 2 * p * r / (p + r + 1e-10), len(entries)


def test_uniner_file_is_scored_on_exactly_its_own_queries(tmp_path: Path) -> None:
    path = write_subset_file(tmp_path / "four_domains.json")
    engine = Scripted(ANSWERS)
    report = evaluate_model("scripted", EvalConfig(benchmarks=[str(path)]), engine=engine)  # type: ignore[arg-type]
    asked = [q for call in engine.calls for q in call]
    in_file = [(text, t) for _, text, gold in SENTENCES for t in gold]
    assert sorted(asked) == sorted(in_file) and len(asked) == 24, "the file's 24 queries, not 8 x 12"
    p, r, f1, n = reference_f1(path, lambda text, t: ANSWERS.get((text, t), DEFAULT_ANSWER))
    scores = report.per_dataset["four_domains"]
    assert scores.n_queries == n == 24
    assert (scores.precision, scores.recall, scores.f1) == pytest.approx((p, r, f1), abs=1e-12)
    assert 0 < f1 < 1


def test_every_type_rule_asks_every_sentence_every_type(tmp_path: Path) -> None:
    """The other rule, declared in the spec: what BIO/CoNLL sets always use. Here it asks 8 x 12."""
    path = write_subset_file(tmp_path / "four_domains.json")
    register_benchmark(
        BenchmarkSpec(name="four_all", format="uniner", path=str(path), queries="every_type"), overwrite=True
    )
    try:
        engine = Scripted(ANSWERS)
        report = evaluate_model("s", EvalConfig(benchmarks=["four_all"]), engine=engine)  # type: ignore[arg-type]
    finally:
        unregister_benchmark("four_all")
    assert len(engine.calls[0]) == 8 * 12 == report.per_dataset["four_all"].n_queries
    _, _, f1, _ = reference_f1(path, lambda text, t: ANSWERS.get((text, t), DEFAULT_ANSWER))
    assert report.per_dataset["four_all"].f1 < f1, "unasked types answered by the model count as false positives"
    with pytest.raises(ValueError, match="'as_in_file' applies to uniner files only"):
        BenchmarkSpec(name="x", format="conll", path="x.conll", queries="as_in_file")


def _queries_before(bench) -> list[tuple[int, str, list[str]]]:
    """The rule before per-file queries: every sentence x every type of the benchmark."""
    return [(i, t, list(s.gold.get(t, []))) for i, s in enumerate(bench.sentences) for t in bench.types]


@pytest.mark.parametrize("name", ["distill_ner_demo", "crossner_ai", "mit_restaurant"])
def test_files_that_ask_every_type_are_asked_exactly_as_before(name: str) -> None:
    try:
        bench = load_benchmark(name)
    except FileNotFoundError:
        pytest.skip(f"{name} is not present here (../shared or the benchmark cache)")
    assert bench.spec is not None and bench.spec.query_rule == "as_in_file"
    # same queries in the same order, so the demo's F1 (and the shared files') cannot move
    assert benchmark_queries(bench) == _queries_before(bench)


def _report(**f1: float) -> EvalReport:
    return EvalReport(
        model="student",
        per_dataset={n: Scores(precision=v, recall=v, f1=v, n_sentences=10) for n, v in f1.items()},
        coverage={n: 10 for n in f1},
    )


def test_comparison_table_averages_only_the_scored_sets() -> None:
    published = load_published()
    assert list(published.columns) == [
        "mit_movie",
        "mit_restaurant",
        "crossner_ai",
        "crossner_literature",
        "crossner_music",
        "crossner_politics",
        "crossner_science",
    ]
    assert all(m.source for m in published.models)
    table = comparison_markdown(_report(crossner_ai=0.30, mit_restaurant=0.10), published)
    assert "avg over 2 of 7" in table and "avg of 7 (published)" in table
    ours = next(line for line in table.splitlines() if line.startswith("| **student**"))
    assert ours.split(" | ")[1:4] == ["not scored", "10.0", "30.0"] and "| 20.0 | - |" in ours
    chatgpt = next(line for line in table.splitlines() if line.startswith("| ChatGPT"))
    assert f"| {(32.8 + 52.4) / 2:.1f} | 47.5 |" in chatgpt
    gner = next(line for line in table.splitlines() if line.startswith("| GNER"))
    assert gner.endswith("| - | 69.1 |"), "no per-dataset numbers: no subset average either"
    assert "Not scored: mit_movie, crossner_literature" in table
    assert "distill-ner benchmarks fetch --suite uniner_zero_shot" in table


def test_no_comparison_when_no_suite_set_was_scored() -> None:
    table = comparison_markdown(_report(distill_ner_demo=0.47))
    assert "| distill_ner_demo | 47.0 | 47.0 | 47.0 | 10 |" in table
    assert "Zero-shot F1" not in table and "ChatGPT" not in table
    assert "No set of the uniner_zero_shot suite was scored" in table


def test_comparison_chart_is_a_png_and_a_dashboard_view(tmp_path: Path) -> None:
    report = _report(crossner_ai=0.30, distill_ner_demo=0.47)
    png = figure_png(comparison_figure(report))
    assert png.startswith(b"\x89PNG") and len(png) > 5000

    from zenml.enums import VisualizationType

    from materializers.records import EvalReportMaterializer

    views = EvalReportMaterializer(uri=str(tmp_path)).save_visualizations(report)
    assert sorted(Path(p).name for p in views) == ["view.html", "zero_shot.md", "zero_shot.png"]
    assert views[str(tmp_path / "zero_shot.png")] == VisualizationType.IMAGE
    assert (tmp_path / "zero_shot.png").read_bytes().startswith(b"\x89PNG")
    assert "avg over 1 of 7" in (tmp_path / "zero_shot.md").read_text()
