"""Benchmarks declared as data: one YAML spec per benchmark in data/benchmarks/, loaded by name.

Adding a benchmark is adding a file (as lm-evaluation-harness does with tasks):

    name: crossner_ai
    format: uniner            # uniner | bio | conll
    path: ../shared/benchmarks/uniner/CrossNER_AI.json   # relative to the project root
    description: ...
    licence: ...

Local paths are resolved against the project root (the parent of the distill_ner package), so
`../shared/...` finds the shared folder CI clones beside the project. These files are for
evaluation only; `benchmark_paths()` lists them so data preparation can refuse to train on them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from distill_ner.ner.data import (
    DATA_DIR,
    PROJECT_ROOT,
    NERCorpus,
    NERSentence,
    load_bio,
    load_conll,
    load_uniner_json,
)
from distill_ner.paths import looks_local

# a benchmark reference with one of these endings is a file (spec or UniNER data), not a registry name
BENCHMARK_SUFFIXES = (".json", ".jsonl", ".yaml", ".yml")

BENCHMARK_DIR = DATA_DIR / "benchmarks"


class BenchmarkSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    format: Literal["uniner", "bio", "conll"]
    path: str | None = Field(None, description="local file or folder, relative to the project root")
    hf_id: str | None = Field(None, description="HF dataset id (bio only; needs the HF cache offline)")
    hf_config: str | None = None
    split: str = "test"
    tokens_column: str = "tokens"
    tags_column: str = "ner_tags"
    label_map: str | None = Field(None, description="name in data/label_maps or a path")
    scheme: Literal["iob2", "iob1"] = "iob2"
    max_sentences: int | None = Field(None, gt=0, description="default subset size (seeded)")
    split_sentences: bool = Field(False, description="cut multi-sentence rows at sentence ends")
    description: str = ""
    licence: str = ""

    @model_validator(mode="after")
    def _one_source(self) -> "BenchmarkSpec":
        if (self.path is None) == (self.hf_id is None):
            raise ValueError(f"benchmark {self.name}: give exactly one of `path` or `hf_id`")
        if self.format in ("uniner", "conll") and self.path is None:
            raise ValueError(f"benchmark {self.name}: format {self.format!r} needs a local `path`")
        if self.format == "uniner" and (self.split_sentences or self.scheme != "iob2"):
            # UniNER entries are single sentences without tags: these options would be silently ignored
            raise ValueError(f"benchmark {self.name}: split_sentences/scheme apply to bio and conll only")
        return self

    def resolved_path(self) -> Path | None:
        if self.path is None:
            return None
        path = Path(self.path).expanduser()
        return path if path.is_absolute() else (PROJECT_ROOT / path).resolve()


class Benchmark(BaseModel):
    name: str
    sentences: list[NERSentence]
    types: list[str]
    spec: BenchmarkSpec | None = None
    # sentences in the source before subsetting, so reports can say how much was evaluated
    n_total: int = 0
    dropped: dict[str, int] = Field(default_factory=dict)

    def queries(self) -> list[tuple[NERSentence, str]]:
        """Every (sentence, type) query, in sentence order then the sentence's type order."""
        return [(s, t) for s in self.sentences for t in s.gold]

    @property
    def n_queries(self) -> int:
        return sum(len(s.gold) for s in self.sentences)


# specs registered from code (tests, notebooks); files in BENCHMARK_DIR are read on every lookup
_REGISTERED: dict[str, BenchmarkSpec] = {}


def load_benchmark_spec(path: str | Path) -> BenchmarkSpec:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"benchmark spec not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{p}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{p}: a benchmark spec is a YAML mapping")
    try:
        spec = BenchmarkSpec(**data)
    except ValidationError as e:
        raise ValueError(f"{p}: invalid benchmark spec:\n{e}") from None
    if p.parent == BENCHMARK_DIR and spec.name != p.stem:
        raise ValueError(f"{p}: spec name {spec.name!r} must equal the file name {p.stem!r}")
    return spec


def register_benchmark(spec: BenchmarkSpec, overwrite: bool = False) -> None:
    if not overwrite and spec.name in benchmark_specs():
        raise ValueError(f"benchmark {spec.name!r} is already registered")
    _REGISTERED[spec.name] = spec


def unregister_benchmark(name: str) -> None:
    _REGISTERED.pop(name, None)


def benchmark_specs() -> dict[str, BenchmarkSpec]:
    specs = {p.stem: load_benchmark_spec(p) for p in sorted(BENCHMARK_DIR.glob("*.yaml"))}
    specs.update(_REGISTERED)
    return specs


def list_benchmarks() -> list[str]:
    return sorted(benchmark_specs())


def get_benchmark_spec(name: str) -> BenchmarkSpec:
    specs = benchmark_specs()
    if name not in specs:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(sorted(specs))}")
    return specs[name]


def benchmark_paths(names_or_paths: Iterable[str | Path] | None = None) -> list[str]:
    """Local data files/folders behind the given benchmarks (default: every registered one).

    Strings, so they feed fingerprint_paths directly; hub-hosted benchmarks contribute nothing.
    Also the list of files data preparation must never train on. An unknown name is an error;
    a path is returned as given (resolved), whether or not it exists yet.
    """
    specs = benchmark_specs()
    refs = list(specs) if names_or_paths is None else list(names_or_paths)
    out: list[str] = []
    for ref in refs:
        if str(ref) in specs:
            path = specs[str(ref)].resolved_path()
            if path is not None:
                out.append(str(path))
        elif looks_local(ref, suffixes=BENCHMARK_SUFFIXES):
            out.append(str(Path(ref).expanduser().resolve()))
        else:
            raise ValueError(f"unknown benchmark {str(ref)!r}; known: {', '.join(sorted(specs))}")
    return out


def select_subset(sentences: list[NERSentence], max_sentences: int | None, seed: int = 0) -> list[NERSentence]:
    """At most `max_sentences` sentences, chosen by a seeded hash of their ids, in file order.

    A hash (not random.sample) keeps the choice stable across Python versions and makes subsets
    nested: the 100-sentence subset contains the 50-sentence one for the same seed.
    """
    if max_sentences is None or max_sentences >= len(sentences):
        return list(sentences)
    if max_sentences <= 0:
        raise ValueError(f"max_sentences must be positive, got {max_sentences}")

    def key(item: tuple[int, NERSentence]) -> tuple[str, int]:
        index, sentence = item
        return hashlib.sha256(f"{seed}\x00{sentence.id}".encode()).hexdigest(), index

    chosen = sorted(enumerate(sentences), key=key)[:max_sentences]
    return [s for _, s in sorted(chosen, key=lambda item: item[0])]


def _load_corpus(spec: BenchmarkSpec) -> NERCorpus:
    path = spec.resolved_path()
    if path is not None and not path.exists():
        raise FileNotFoundError(f"benchmark {spec.name}: file not found: {path} (spec path {spec.path!r})")
    if spec.format == "uniner":
        return load_uniner_json(path, name=spec.name, label_map=spec.label_map)  # type: ignore[arg-type]
    if spec.format == "conll":
        return load_conll(
            path,  # type: ignore[arg-type]
            spec.label_map,
            name=spec.name,
            split_documents=spec.split_sentences,
            scheme=spec.scheme,
        )
    return load_bio(
        str(path) if path is not None else spec.hf_id,
        spec.split,
        spec.tokens_column,
        spec.tags_column,
        spec.label_map,
        name=spec.name,
        hf_config=spec.hf_config,
        split_documents=spec.split_sentences,
        scheme=spec.scheme,
    )


def _spec_for(name_or_path: str | Path) -> BenchmarkSpec:
    ref = str(name_or_path)
    specs = benchmark_specs()
    if ref in specs:
        return specs[ref]
    path = Path(ref).expanduser()
    if not looks_local(name_or_path, suffixes=BENCHMARK_SUFFIXES):
        raise ValueError(f"unknown benchmark {ref!r}; known: {', '.join(sorted(specs))}")
    if not path.exists():
        raise FileNotFoundError(f"benchmark file not found: {ref}")
    if path.suffix in (".yaml", ".yml"):
        return load_benchmark_spec(path)
    if path.suffix in (".json", ".jsonl"):
        # a bare UniNER file needs no spec: its types and gold are in the file
        return BenchmarkSpec(name=path.stem.replace(" ", "_"), format="uniner", path=str(path.resolve()))
    raise ValueError(f"{ref}: not a benchmark name, a spec (.yaml) or a UniNER file (.json/.jsonl)")


def load_benchmark(name_or_path: str | Path, max_sentences: int | None = None, seed: int = 0) -> Benchmark:
    """A benchmark by registry name, spec file or UniNER file path, optionally a seeded subset.

    `max_sentences` overrides the spec's default; the same seed always picks the same sentences.
    """
    spec = _spec_for(name_or_path)
    corpus = _load_corpus(spec)
    limit = max_sentences if max_sentences is not None else spec.max_sentences
    sentences = select_subset(corpus.sentences, limit, seed)
    # the type list follows the chosen sentences (a subset may lack a rare type); order kept
    present = {t for s in sentences for t in s.gold}
    return Benchmark(
        name=spec.name,
        sentences=sentences,
        types=[t for t in corpus.types if t in present],
        spec=spec,
        n_total=len(corpus.sentences),
        dropped=corpus.dropped,
    )
