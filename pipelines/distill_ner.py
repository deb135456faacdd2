"""The UniversalNER recipe as one pipeline: corpus -> teacher -> negatives -> SFT -> student -> benchmarks -> registry.

Run: zenml pipeline run pipelines.distill_ner.distill_ner -c configs/demo.yaml
"""

from zenml import pipeline

from distill_ner.fingerprint import fingerprint_paths
from distill_ner.ner.benchmarks import available_benchmarks, benchmark_paths, warn_absent
from distill_ner.ner.config import DistillConfig, NERServing
from distill_ner.stack import require_tracking_stack
from steps import add_negatives, annotate, build_sft, evaluate, register_and_promote, sample_corpus, train


@pipeline
def distill_ner(config: DistillConfig) -> None:
    require_tracking_stack()  # before any step: no run on a stack without the MLflow tracker and registry
    # A missing benchmark fails here, before any step runs; absent suite members are named and skipped.
    warn_absent(available_benchmarks(config.eval.benchmarks)[1])
    # Fingerprints of the files behind the config: they invalidate the cache when a file's content changes.
    corpus_fp = fingerprint_paths(s.path for s in config.corpus.sources)
    recorded_fp = fingerprint_paths(config.teacher.recorded_responses)
    supervised_fp = fingerprint_paths(s.path for s in config.sft.supervised)
    benchmarks_fp = fingerprint_paths(benchmark_paths(config.eval.benchmarks))

    passages = sample_corpus(config.corpus, config.student, corpus_fp)
    annotations = annotate(passages, config.teacher, recorded_fp)
    with_negatives = add_negatives(annotations, config.negatives)
    sft = build_sft(with_negatives, config.sft, config.student, supervised_fp)
    model = train(sft, config.student, config.train)
    report = evaluate(model, config.eval, benchmarks_fp)
    # served with the decoding settings the gate evaluated (flavour explicit: ZenML drops unset fields)
    serving = NERServing(flavour="ner", max_new_tokens=config.eval.max_new_tokens, batch_size=config.eval.batch_size)
    register_and_promote(model, report, config.gate, config.teacher.model, serving)
