"""Human-annotated NER datasets as annotated passages, for supervised mixing (RECIPE.md, "Supervised mixing").

Each sentence becomes a passage whose entities are its gold strings and whose negatives are the dataset's
types absent from it: with human labels the absence is known, not sampled, so every type of the dataset
is asked about. The dataset name travels separately (build_sft_dataset's `supervised` argument) and ends
up in the passage turn as `Dataset: {name}`, so conflicting label conventions do not clash.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from distill_ner.ner.config import SupervisedSource
from distill_ner.records import AnnotatedPassage, Entity
from distill_ner.rng import stable_rng


class GoldSentence(Protocol):
    """The shape of ner_data.NERSentence that the converter needs."""

    id: str
    text: str
    # natural-language type -> gold strings; [] for a type of the dataset absent from the sentence
    gold: Mapping[str, Sequence[str]]


def to_annotated_passages(
    sentences: Iterable[GoldSentence], dataset_name: str, types: Sequence[str] | None = None
) -> list[AnnotatedPassage]:
    """One passage per sentence: gold strings as entities, the dataset's absent types as negatives.

    `types` are the dataset's types (ner_data's NERCorpus.types); by default the union of the sentences'
    gold keys, in first-seen order, which already covers every type when absent ones map to [].
    Passage ids are `{dataset_name}/{sentence id}` so they cannot collide with teacher passages.
    """
    sentences = list(sentences)
    label_types = list(dict.fromkeys(types if types is not None else (t for s in sentences for t in s.gold)))
    passages = []
    for sentence in sentences:
        entities = [
            Entity(text=text, type=entity_type)
            for entity_type, texts in sentence.gold.items()
            for text in dict.fromkeys(texts)  # order kept, duplicates dropped
        ]
        present = {entity_type for entity_type, texts in sentence.gold.items() if texts}
        passages.append(
            AnnotatedPassage(
                id=f"{dataset_name}/{sentence.id}",
                text=sentence.text,
                entities=entities,
                negatives=[t for t in label_types if t not in present],
            )
        )
    return passages


def load_supervised(source: SupervisedSource) -> list[AnnotatedPassage]:
    """Load one configured dataset through ner_data's loaders and convert it.

    `max_examples` keeps a seeded sample (fixed per dataset name) rather than the first sentences, which
    in document-ordered datasets would come from a handful of documents.
    """
    from distill_ner.ner import data as ner_data  # the loaders pull in datasets/pyarrow; only this step needs them

    ref = source.path if source.path is not None else source.hf_dataset
    if source.path is not None:
        from pathlib import Path

        from distill_ner.ner.benchmarks import benchmark_paths

        # evaluation data must never leak into training
        if str(Path(source.path).expanduser().resolve()) in {str(Path(p).resolve()) for p in benchmark_paths()}:
            raise ValueError(
                f"sft.supervised[{source.name}].path {source.path} is a registered benchmark; never train on it"
            )
    if source.format == "bio":
        corpus = ner_data.load_bio(ref, split=source.split, label_map=source.label_map, name=source.name)
    elif source.path is None:
        raise ValueError(f"sft.supervised[{source.name}]: format {source.format!r} reads a local file; give `path`")
    elif source.format == "conll":
        corpus = ner_data.load_conll(source.path, label_map=source.label_map, name=source.name)
    else:
        corpus = ner_data.load_uniner_json(source.path, label_map=source.label_map, name=source.name)

    sentences = list(corpus.sentences)
    if source.max_examples is not None and len(sentences) > source.max_examples:
        keep = stable_rng(0, "supervised-subset", source.name).choice(
            len(sentences), source.max_examples, replace=False
        )
        sentences = [sentences[i] for i in sorted(keep.tolist())]
    return to_annotated_passages(sentences, source.name, corpus.types)
