"""The NuExtract recipe: corpus -> teacher templates -> teacher fillings -> negatives -> SFT -> student ->
extraction benchmark -> registry. Corpus, training and registry are the UniversalNER pipeline's own steps.

Run: zenml pipeline run pipelines.distill_extraction.distill_extraction -c configs/extract_demo.yaml
"""

from zenml import pipeline

from distill_ner.extraction.config import DistillExtractionConfig, ExtractionServing
from distill_ner.fingerprint import fingerprint_paths
from distill_ner.stack import require_tracking_stack
from steps import register_and_promote, sample_corpus, train
from steps.extraction import (
    add_extraction_negatives,
    build_extraction_sft,
    evaluate_extraction,
    fill_templates,
    generate_templates,
)


@pipeline
def distill_extraction(config: DistillExtractionConfig) -> None:
    require_tracking_stack()  # before any step: no run on a stack without the MLflow tracker and registry
    # Fingerprints of the files behind the config: they invalidate the cache when a file's content changes.
    corpus_fp = fingerprint_paths(s.path for s in config.corpus.sources)
    recorded_fp = fingerprint_paths(config.teacher.recorded_responses)
    benchmark_fp = fingerprint_paths([config.eval.benchmark])

    passages = sample_corpus(config.corpus, config.student, corpus_fp)
    templates = generate_templates(passages, config.teacher, config.templates, recorded_fp)
    extractions = fill_templates(templates, config.teacher, recorded_fp)
    with_negatives = add_extraction_negatives(extractions, config.negatives)
    sft = build_extraction_sft(with_negatives, config.sft, config.prompt, config.student)
    model = train(sft, config.student, config.train)
    report = evaluate_extraction(model, config.eval, config.prompt, benchmark_fp)
    # flavour set explicitly: ZenML stores step parameters without their unset fields
    serving = ExtractionServing(
        flavour="extraction",
        prompt_format=config.prompt.format,
        indent=config.prompt.indent,
        max_new_tokens=config.eval.max_new_tokens,
    )
    register_and_promote(model, report, config.gate, config.teacher.model, serving)
