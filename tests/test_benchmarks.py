"""The benchmark registry: shipped specs, loading by name or path, seeded subsets, errors."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from distill_ner.ner.benchmarks import (
    BENCHMARK_DIR,
    BenchmarkSpec,
    benchmark_paths,
    benchmark_specs,
    list_benchmarks,
    load_benchmark,
    load_benchmark_spec,
    register_benchmark,
    select_subset,
    unregister_benchmark,
)

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "benchmarks" / "uniner"


def test_shipped_specs_are_valid_and_listed() -> None:
    names = list_benchmarks()
    assert {"crossner_ai", "mit_restaurant", "distill_ner_demo"} <= set(names)
    for path in BENCHMARK_DIR.glob("*.yaml"):
        spec = load_benchmark_spec(path)
        assert spec.name == path.stem and spec.description and spec.licence
    resolved = benchmark_paths()
    assert str((SHARED / "CrossNER_AI.json").resolve()) in resolved
    assert str((SHARED / "mit-restaurant.json").resolve()) in resolved
    # as the pipeline calls it, with the eval config's names and paths
    assert benchmark_paths(["mit_restaurant", "data/x.json"]) == [
        str((SHARED / "mit-restaurant.json").resolve()),
        str(Path("data/x.json").resolve()),
    ]
    with pytest.raises(ValueError, match="unknown benchmark 'nope'"):
        benchmark_paths(["nope"])


@pytest.mark.parametrize(
    ("name", "sentences", "queries", "n_types"),
    [("crossner_ai", 431, 5603, 13), ("mit_restaurant", 1520, 12160, 8)],
)
def test_shared_benchmarks_load_completely(name: str, sentences: int, queries: int, n_types: int) -> None:
    bench = load_benchmark(name)
    assert bench.name == name and bench.spec is not None and bench.spec.name == name
    assert len(bench.sentences) == sentences == bench.n_total
    assert bench.n_queries == queries == len(bench.queries())
    assert len(bench.types) == n_types
    assert all(set(s.gold) == set(bench.types) for s in bench.sentences)


def test_crossner_types_are_the_files_own() -> None:
    # the shared file asks "program language"; a label map would change the queries and the score
    assert "program language" in load_benchmark("crossner_ai").types
    assert "Restaurant Name" in load_benchmark("mit_restaurant").types


def test_demo_benchmark_loads() -> None:
    if not (BENCHMARK_DIR / "distill_ner_demo.json").exists():
        pytest.skip("demo benchmark file not written yet")
    bench = load_benchmark("distill_ner_demo")
    assert bench.sentences
    assert set(bench.types) <= {
        "person",
        "organization",
        "location",
        "date",
        "product",
        "event",
        "disease",
        "programming language",
    }


def test_uniner_file_path_needs_no_spec() -> None:
    bench = load_benchmark(SHARED / "CrossNER_AI.json")
    assert bench.name == "CrossNER_AI" and len(bench.sentences) == 431
    assert load_benchmark(str(SHARED / "CrossNER_AI.json"), max_sentences=3).n_total == 431


def test_seeded_subset_is_deterministic_sorted_and_nested() -> None:
    a = load_benchmark("mit_restaurant", max_sentences=50, seed=7)
    b = load_benchmark("mit_restaurant", max_sentences=50, seed=7)
    c = load_benchmark("mit_restaurant", max_sentences=50, seed=8)
    big = load_benchmark("mit_restaurant", max_sentences=100, seed=7)
    ids = [s.id for s in a.sentences]
    assert ids == [s.id for s in b.sentences]
    assert ids != [s.id for s in c.sentences]
    order = {s.id: i for i, s in enumerate(load_benchmark("mit_restaurant").sentences)}
    assert [order[i] for i in ids] == sorted(order[i] for i in ids)  # back in file order
    assert set(ids) <= {s.id for s in big.sentences}
    assert a.n_total == 1520 and len(ids) == 50
    assert len(load_benchmark("mit_restaurant", max_sentences=10_000).sentences) == 1520
    with pytest.raises(ValueError, match="must be positive"):
        select_subset(a.sentences, 0)


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(
        ValueError, match=r"unknown benchmark 'crossner_medicine'; known: .*crossner_ai.*mit_restaurant"
    ):
        load_benchmark("crossner_medicine")


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere/bench.json"):
        load_benchmark("nowhere/bench.json")
    spec_path = tmp_path / "ghost.yaml"
    spec_path.write_text("name: ghost\nformat: uniner\npath: data/benchmarks/ghost.json\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=r"benchmark ghost: file not found: .*data/benchmarks/ghost\.json"):
        load_benchmark(spec_path)


def test_spec_validation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nformat: uniner\npath: x.json\nmax_sentence: 5\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"(?s)bad\.yaml: invalid benchmark spec.*max_sentence"):
        load_benchmark_spec(bad)
    with pytest.raises(ValueError, match="exactly one of `path` or `hf_id`"):
        BenchmarkSpec(name="x", format="bio", path="a", hf_id="b")
    with pytest.raises(ValueError, match="needs a local `path`"):
        BenchmarkSpec(name="x", format="uniner", hf_id="b")
    with pytest.raises(ValueError, match="apply to bio and conll only"):
        BenchmarkSpec(name="x", format="uniner", path="a.json", split_sentences=True)


def test_registered_bio_and_conll_specs(tmp_path: Path) -> None:
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names)),
        }
    )
    ds = datasets.Dataset.from_dict(
        {"tokens": [["Ann", "is", "in", "Oslo", ".", "She", "left", "."]], "ner_tags": [[1, 0, 0, 3, 0, 0, 0, 0]]},
        features=features,
    )
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "tiny_bio"))
    spec = BenchmarkSpec(
        name="tiny_bio_test",
        format="bio",
        path=str(tmp_path / "tiny_bio"),
        label_map="conll2003",
        split_sentences=True,
        max_sentences=5,
        licence="test data",
    )
    register_benchmark(spec)
    try:
        assert "tiny_bio_test" in list_benchmarks()
        with pytest.raises(ValueError, match="already registered"):
            register_benchmark(spec)
        bench = load_benchmark("tiny_bio_test")
        assert [s.text for s in bench.sentences] == ["Ann is in Oslo .", "She left ."]
        assert bench.types == ["person", "location"]
        assert bench.sentences[0].gold == {"person": ["Ann"], "location": ["Oslo"]}
        assert bench.sentences[1].gold == {"person": [], "location": []}
    finally:
        unregister_benchmark("tiny_bio_test")
    assert "tiny_bio_test" not in benchmark_specs()

    conll = tmp_path / "tiny.conll"
    conll.write_text("Ann B-PER\nruns O\n\nOslo B-LOC\n", encoding="utf-8")
    spec_path = tmp_path / "tiny_conll.yaml"
    spec_path.write_text(
        f"name: tiny_conll\nformat: conll\npath: {conll}\nlabel_map: conll2003\nmax_sentences: 1\n", encoding="utf-8"
    )
    bench = load_benchmark(spec_path)
    assert len(bench.sentences) == 1 and bench.n_total == 2
    assert load_benchmark(spec_path, max_sentences=5).n_total == 2


def test_benchmark_sentences_round_trip_as_json() -> None:
    bench = load_benchmark("crossner_ai", max_sentences=3)
    again = type(bench).model_validate(json.loads(bench.model_dump_json()))
    assert again == bench


@pytest.mark.parametrize(("name", "content"), [("empty.json", "[]"), ("empty.jsonl", ""), ("empty.jsonl", "\n\n")])
def test_an_empty_benchmark_file_is_an_error(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=rf"benchmark empty: {path} holds no sentence to evaluate"):
        load_benchmark(path)
