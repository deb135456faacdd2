"""Benchmarks declared as data: one YAML spec per benchmark in data/benchmarks/, loaded by name.

Adding a benchmark is adding a file (as lm-evaluation-harness does with tasks):

    name: crossner_ai
    format: uniner            # uniner | bio | conll
    path: ../shared/benchmarks/uniner/CrossNER_AI.json   # relative to the project root
    url: https://raw.githubusercontent.com/.../CrossNER_AI.json   # where `benchmarks fetch` gets it
    sha256: 23e717b8...       # pinned content hash, checked on fetch and on every load
    queries: as_in_file       # as_in_file (UniNER default) | every_type (bio/conll, the only choice)
    description: ...
    licence: ...

Local paths are resolved against the project root (the parent of the distill_ner package), so
`../shared/...` finds the shared folder CI clones beside the project. A spec with a `url` is also
looked for in the benchmark cache (`.cache/benchmarks/`, or $DISTILL_NER_BENCHMARK_CACHE), where
`distill-ner benchmarks fetch` puts it. These files are for evaluation only; `benchmark_paths()`
lists them so data preparation can refuse to train on them.

Named suites (data/benchmarks/suites/*.yaml: `name`, `description`, `benchmarks: [...]`) stand for
their members wherever a benchmark list is read; a member whose file is absent is skipped with a
warning that names it and the fetch command, while a benchmark named directly must be present.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from distill_ner.errors import InputError, MissingInputError
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
SUITE_DIR = BENCHMARK_DIR / "suites"
CACHE_ENV = "DISTILL_NER_BENCHMARK_CACHE"
# recorded content hash of a fetched file whose spec pins none, beside the file
RECORDED_SUFFIX = ".sha256"

logger = logging.getLogger(__name__)

QueryRule = Literal["as_in_file", "every_type"]


def benchmark_cache_dir() -> Path:
    """Where fetched benchmark files live: $DISTILL_NER_BENCHMARK_CACHE, else .cache/benchmarks."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else PROJECT_ROOT / ".cache" / "benchmarks"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_hint(names: Iterable[str]) -> str:
    """The command that fetches the named benchmarks (add `--from DIR` for files already at hand)."""
    return f"distill-ner benchmarks fetch {' '.join(names)}"


class BenchmarkSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    format: Literal["uniner", "bio", "conll"]
    path: str | None = Field(None, description="local file or folder, relative to the project root")
    url: str | None = Field(None, description="public file `benchmarks fetch` downloads into the benchmark cache")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="pinned content hash of the file")
    queries: QueryRule | None = Field(
        None,
        description="which (sentence, type) pairs are scored: as_in_file (the file's own queries; default "
        "for uniner) or every_type (every sentence x every type; the definition for bio/conll)",
    )
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
        local = self.path is not None or self.url is not None
        if local == (self.hf_id is not None):
            raise InputError(
                f"benchmark {self.name}: give exactly one of `path` or `hf_id` (a `url` may stand in for `path`)"
            )
        if self.format in ("uniner", "conll") and not local:
            raise InputError(
                f"benchmark {self.name}: format {self.format!r} needs a local `path` (or a `url` to fetch it from)"
            )
        if self.url is not None and not self.file_name:
            raise InputError(f"benchmark {self.name}: `url` {self.url!r} does not end in a file name")
        if self.format != "uniner" and self.queries == "as_in_file":
            # bio/conll gold is token-level: every type is asked of every sentence by definition
            raise InputError(f"benchmark {self.name}: queries 'as_in_file' applies to uniner files only")
        if self.format == "uniner" and (self.split_sentences or self.scheme != "iob2"):
            # UniNER entries are single sentences without tags: these options would be silently ignored
            raise InputError(f"benchmark {self.name}: split_sentences/scheme apply to bio and conll only")
        return self

    @property
    def query_rule(self) -> QueryRule:
        if self.queries is not None:
            return self.queries
        return "as_in_file" if self.format == "uniner" else "every_type"

    @property
    def file_name(self) -> str | None:
        """The file name `url` ends in: the name in the cache and in a `fetch --from` folder."""
        if self.url is None:
            return None
        return Path(urlparse(self.url).path).name or None

    def cache_path(self) -> Path | None:
        return benchmark_cache_dir() / self.file_name if self.file_name else None

    def declared_path(self) -> Path | None:
        if self.path is None:
            return None
        path = Path(self.path).expanduser()
        return path if path.is_absolute() else (PROJECT_ROOT / path).resolve()

    def resolved_path(self) -> Path | None:
        """`path` when it exists, else the cached copy of `url` (existing or not), else `path`."""
        declared = self.declared_path()
        if declared is not None and declared.exists():
            return declared
        cached = self.cache_path()
        return cached if cached is not None else declared

    def is_present(self) -> bool:
        path = self.resolved_path()
        return path is None or path.exists()  # hub-hosted: the loader reports a missing cache itself

    def expected_sha256(self) -> tuple[str | None, str]:
        """(hash, where it comes from): the spec's pin, else the one recorded at first fetch."""
        if self.sha256:
            return self.sha256, f"pinned in the {self.name} spec"
        path = self.resolved_path()
        recorded = path.with_name(path.name + RECORDED_SUFFIX) if path is not None else None
        if recorded is not None and recorded.is_file():
            return recorded.read_text(encoding="utf-8").split()[0], f"recorded at first fetch in {recorded}"
        return None, "none known"


class BenchmarkSuite(BaseModel):
    """A named list of benchmarks, e.g. the seven UniNER zero-shot sets."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    benchmarks: list[str] = Field(min_length=1)
    description: str = ""


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
        raise MissingInputError(f"benchmark spec not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise InputError(f"{p}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise InputError(f"{p}: a benchmark spec is a YAML mapping")
    try:
        spec = BenchmarkSpec(**data)
    except ValidationError as e:
        raise InputError(f"{p}: invalid benchmark spec:\n{e}") from None
    if p.parent == BENCHMARK_DIR and spec.name != p.stem:
        raise InputError(f"{p}: spec name {spec.name!r} must equal the file name {p.stem!r}")
    return spec


def register_benchmark(spec: BenchmarkSpec, overwrite: bool = False) -> None:
    if not overwrite and spec.name in benchmark_specs():
        raise InputError(f"benchmark {spec.name!r} is already registered")
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
        raise InputError(f"unknown benchmark {name!r}; known: {', '.join(sorted(specs))}")
    return specs[name]


_REGISTERED_SUITES: dict[str, BenchmarkSuite] = {}


def load_suite(path: str | Path) -> BenchmarkSuite:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
        suite = BenchmarkSuite(**data) if isinstance(data, dict) else None
    except (yaml.YAMLError, ValidationError) as e:
        raise InputError(f"{p}: invalid benchmark suite:\n{e}") from None
    if suite is None:
        raise InputError(f"{p}: a benchmark suite is a YAML mapping")
    if suite.name != p.stem:
        raise InputError(f"{p}: suite name {suite.name!r} must equal the file name {p.stem!r}")
    return suite


def register_suite(suite: BenchmarkSuite, overwrite: bool = False) -> None:
    if not overwrite and suite.name in benchmark_suites():
        raise InputError(f"benchmark suite {suite.name!r} is already registered")
    _REGISTERED_SUITES[suite.name] = suite


def unregister_suite(name: str) -> None:
    _REGISTERED_SUITES.pop(name, None)


def benchmark_suites() -> dict[str, BenchmarkSuite]:
    suites = {p.stem: load_suite(p) for p in sorted(SUITE_DIR.glob("*.yaml"))}
    suites.update(_REGISTERED_SUITES)
    specs = benchmark_specs()
    for suite in suites.values():
        if suite.name in specs:
            raise InputError(f"benchmark suite {suite.name!r} has the name of a benchmark")
        unknown = [b for b in suite.benchmarks if b not in specs]
        if unknown:
            raise InputError(f"benchmark suite {suite.name!r}: unknown benchmarks {unknown}")
    return suites


def expand_benchmarks(refs: Iterable[str | Path]) -> list[tuple[str, str | None]]:
    """(benchmark name or path, suite it came from or None), suites replaced by their members in order;
    a benchmark listed twice (directly or through a suite) is an error, as it would be scored twice."""
    suites = benchmark_suites()
    out: list[tuple[str, str | None]] = []
    for ref in refs:
        members = [(m, str(ref)) for m in suites[str(ref)].benchmarks] if str(ref) in suites else [(str(ref), None)]
        for name, suite in members:
            if any(name == seen for seen, _ in out):
                raise InputError(f"benchmark {name!r} is listed twice in the benchmark list (suites included)")
            out.append((name, suite))
    return out


def available_benchmarks(refs: Iterable[str | Path]) -> tuple[list[str], dict[str, list[str]]]:
    """(benchmarks to evaluate, suite -> its members whose files are absent).

    A suite member that is absent is left out (and reported); a benchmark named directly that is absent
    raises FileNotFoundError naming it and the fetch command: both before any model is loaded.
    """
    specs = benchmark_specs()
    present: list[str] = []
    absent: dict[str, list[str]] = {}
    for name, suite in expand_benchmarks(refs):
        spec = specs.get(name)
        if spec is None or spec.is_present():
            present.append(name)  # paths are checked by load_benchmark, which names them
        elif suite is not None:
            absent.setdefault(suite, []).append(name)
        else:
            raise missing_error(spec)
    if not present:
        raise MissingInputError(
            "none of the listed benchmarks is present; fetch them: "
            + fetch_hint(sorted({n for names in absent.values() for n in names}))
        )
    return present, absent


def warn_absent(absent: dict[str, list[str]]) -> None:
    for suite, names in absent.items():
        logger.warning(
            "suite %s: %d of %d benchmarks not present, not scored: %s; fetch them: %s",
            suite,
            len(names),
            len(benchmark_suites()[suite].benchmarks),
            ", ".join(names),
            fetch_hint(["--suite", suite]),
        )


def benchmark_paths(names_or_paths: Iterable[str | Path] | None = None) -> list[str]:
    """Local data files/folders behind the given benchmarks (default: every registered one).

    Strings, so they feed fingerprint_paths directly; hub-hosted benchmarks contribute nothing; a suite
    contributes every member's path, so fetching a member changes the fingerprint.
    Also the list of files data preparation must never train on. An unknown name is an error;
    a path is returned as given (resolved), whether or not it exists yet.
    """
    specs = benchmark_specs()
    refs = list(specs) if names_or_paths is None else [n for n, _ in expand_benchmarks(names_or_paths)]
    out: list[str] = []
    for ref in refs:
        if str(ref) in specs:
            path = specs[str(ref)].resolved_path()
            if path is not None:
                out.append(str(path))
        elif looks_local(ref, suffixes=BENCHMARK_SUFFIXES):
            out.append(str(Path(ref).expanduser().resolve()))
        else:
            raise InputError(f"unknown benchmark {str(ref)!r}; known: {', '.join(sorted(specs))}")
    return out


def select_subset(sentences: list[NERSentence], max_sentences: int | None, seed: int = 0) -> list[NERSentence]:
    """At most `max_sentences` sentences, chosen by a seeded hash of their ids, in file order.

    A hash (not random.sample) keeps the choice stable across Python versions and makes subsets
    nested: the 100-sentence subset contains the 50-sentence one for the same seed.
    """
    if max_sentences is None or max_sentences >= len(sentences):
        return list(sentences)
    if max_sentences <= 0:
        raise InputError(f"max_sentences must be positive, got {max_sentences}")

    def key(item: tuple[int, NERSentence]) -> tuple[str, int]:
        index, sentence = item
        return hashlib.sha256(f"{seed}\x00{sentence.id}".encode()).hexdigest(), index

    chosen = sorted(enumerate(sentences), key=key)[:max_sentences]
    return [s for _, s in sorted(chosen, key=lambda item: item[0])]


def missing_error(spec: BenchmarkSpec) -> MissingInputError:
    declared, cached = spec.declared_path(), spec.cache_path()
    where = str(declared or cached) + (f" (nor in the benchmark cache: {cached})" if declared and cached else "")
    how = (
        f"; fetch it: {fetch_hint([spec.name])} (add --from DIR for a folder that holds {spec.file_name})"
        if spec.url
        else ""
    )
    return MissingInputError(f"benchmark {spec.name}: file not found: {where}{how}")


def verify_file(spec: BenchmarkSpec, path: Path) -> str:
    """The file's sha256, after checking it against the pinned or recorded one (ValueError on mismatch)."""
    actual = file_sha256(path)
    expected, origin = spec.expected_sha256()
    if expected is not None and actual != expected:
        raise InputError(
            f"benchmark {spec.name}: {path} has sha256 {actual}, expected {expected} ({origin}); "
            f"the file is corrupt or another version: fetch it again ({fetch_hint([spec.name])})"
        )
    return actual


def _load_corpus(spec: BenchmarkSpec) -> NERCorpus:
    path = spec.resolved_path()
    if path is not None and not path.exists():
        raise missing_error(spec)
    if path is not None and path.is_file() and (spec.sha256 or spec.url):
        verify_file(spec, path)
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
        raise InputError(f"unknown benchmark {ref!r}; known: {', '.join(sorted(specs))}")
    if not path.exists():
        raise MissingInputError(f"benchmark file not found: {ref}")
    if path.suffix in (".yaml", ".yml"):
        return load_benchmark_spec(path)
    if path.suffix in (".json", ".jsonl"):
        # a bare UniNER file needs no spec: its types and gold are in the file
        return BenchmarkSpec(name=path.stem.replace(" ", "_"), format="uniner", path=str(path.resolve()))
    raise InputError(f"{ref}: not a benchmark name, a spec (.yaml) or a UniNER file (.json/.jsonl)")


def load_benchmark(name_or_path: str | Path, max_sentences: int | None = None, seed: int = 0) -> Benchmark:
    """A benchmark by registry name, spec file or UniNER file path, optionally a seeded subset.

    `max_sentences` overrides the spec's default; the same seed always picks the same sentences.
    """
    spec = _spec_for(name_or_path)
    corpus = _load_corpus(spec)
    if not corpus.sentences:
        source = spec.resolved_path() or spec.hf_id
        mapped_away = f"; every label was mapped away: {sorted(corpus.dropped)}" if corpus.dropped else ""
        raise InputError(f"benchmark {spec.name}: {source} holds no sentence to evaluate{mapped_away}")
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
