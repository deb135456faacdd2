"""Score any model on the NER benchmarks, so a base model and a distilled student sit side by side in MLflow.

Run: zenml pipeline run pipelines.evaluate_ner.evaluate_ner -c configs/evaluate_smollm2_base_cpu.yaml
"""

from zenml import pipeline

from distill_ner.fingerprint import fingerprint_paths
from distill_ner.ner.benchmarks import available_benchmarks, benchmark_paths, warn_absent
from distill_ner.ner.config import EvaluateNERConfig
from distill_ner.ner.evaluation import is_registry_reference, model_fingerprint
from distill_ner.stack import require_tracking_stack
from steps.evaluate import evaluate_reference


@pipeline
def evaluate_ner(config: EvaluateNERConfig) -> None:
    require_tracking_stack()  # before any step: no run on a stack without the MLflow tracker and registry
    # A missing benchmark fails here, before any step runs; absent suite members are named and skipped.
    warn_absent(available_benchmarks(config.eval.benchmarks)[1])
    # Fingerprints of the files behind the config: the cache sees changed benchmarks or model weights.
    benchmarks_fp = fingerprint_paths(benchmark_paths(config.eval.benchmarks))
    step = evaluate_reference
    if is_registry_reference(config.model):
        # an alias (models:/distill-ner@production) can move to other weights between runs
        step = evaluate_reference.with_options(enable_cache=False)
    step(config.model, config.eval, benchmarks_fp, model_fingerprint(config.model))
