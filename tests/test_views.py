"""HTML views of the artifacts: failures listed in one escaped table shape for both recipes."""

from distill_ner.extraction.data import ExtractionFailure, ExtractionSet
from distill_ner.extraction.views import extraction_set_html
from distill_ner.ner.views import annotations_html
from distill_ner.records import AnnotationFailure, AnnotationSet
from distill_ner.views import html_table


def test_html_table_escapes_cells():
    assert (
        html_table(("a", "b"), [("<x>", 1)])
        == "<table><tr><th>a</th><th>b</th></tr><tr><td>&lt;x&gt;</td><td>1</td></tr></table>"
    )


def test_failures_tables():
    ner = annotations_html(
        AnnotationSet(passages=[], failures=[AnnotationFailure(passage_id="p<1", reason="unparseable", detail="x")])
    )
    assert "<th>passage</th><th>reason</th>" in ner and "<td>p&lt;1</td><td>unparseable</td>" in ner
    extraction = extraction_set_html(
        ExtractionSet(
            examples=[], failures=[ExtractionFailure(id="a", stage="filling", reason="not_in_text", detail="d")]
        )
    )
    assert "<td>a</td><td>filling</td><td>not_in_text</td>" in extraction
