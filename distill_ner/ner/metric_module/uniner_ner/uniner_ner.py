"""UniversalNER string-match metric for `evaluate.load("<path to this folder>")`.

evaluate copies this file into its module cache before importing it, so relative imports do not
work; the scoring lives in distill_ner.ner.metrics and is imported from the installed package (run from
the project root or `pip install -e .`). evaluate checks that top-level import before loading.
"""

import datasets
import evaluate

from distill_ner.ner.metrics import uniner_scores

_DESCRIPTION = """\
Micro precision / recall / F1 over (sentence, type) queries, as in the UniversalNER evaluation:
an answer counts only if it starts with a JSON list; items are lowercased, stripped of punctuation
and articles, deduplicated; an item is correct when it is in the (equally normalised) gold list.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: model answers, one per query: raw texts such as '["Paris"]', or lists of strings.
    references: gold answers in the same form: JSON list texts, or lists of strings.
Returns:
    precision, recall, f1 (floats in [0, 1]) and n_queries.
Example:
    >>> metric = evaluate.load("distill_ner/ner/metric_module/uniner_ner")
    >>> metric.compute(predictions=['["Paris"]'], references=['["Paris", "Rome"]'])["recall"]
    0.499999999975
"""

_CITATION = """\
@article{zhou2023universalner,
  title={UniversalNER: Targeted Distillation from Large Language Models for Open Named Entity Recognition},
  author={Zhou, Wenxuan and Zhang, Sheng and Gu, Yu and Chen, Muhao and Poon, Hoifung},
  journal={arXiv preprint arXiv:2308.03279},
  year={2023}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class UninerNer(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # raw answer texts, or already extracted lists of strings
            features=[
                datasets.Features(
                    {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
                ),
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Value("string")),
                        "references": datasets.Sequence(datasets.Value("string")),
                    }
                ),
            ],
        )

    def _compute(self, predictions: list, references: list) -> dict:
        scores = uniner_scores(predictions, references)
        return {
            "precision": scores.precision,
            "recall": scores.recall,
            "f1": scores.f1,
            "n_queries": scores.n_queries,
        }
