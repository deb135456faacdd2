"""HTML view of an ExtractionSet: counts, then template, text and filled JSON side by side per example."""

from __future__ import annotations

from html import escape

from distill_ner.extraction.data import ExtractionSet
from distill_ner.extraction.prompts import dump_json
from distill_ner.views import counts_table, html_table, page

_GRID = (
    "<style>.ex{display:grid;grid-template-columns:1fr 1.4fr 1fr;gap:8px;margin:.8em 0;padding-top:.4em;"
    "border-top:1px solid #ddd}.ex pre{margin:0;background:#f7f7f7;padding:4px;font-size:12px}"
    ".neg{color:#a05a00}</style>"
)


def extraction_set_html(data: ExtractionSet, limit: int = 30) -> str:
    body = _GRID + (
        f"<p>{len(data.examples)} examples, {len(data.failures)} failures, "
        f"{sum(ex.shortened for ex in data.examples)} shortened (negatives). Teacher: {escape(data.teacher)}</p>"
    )
    if data.stats:
        body += "<h3>Counts</h3>" + counts_table(data.stats, ("", "value"))
    if data.filter_counts:
        body += "<h3>Filtered out</h3>" + counts_table(data.filter_counts, ("reason", "count"))
    if data.usage:
        body += "<h3>Teacher usage</h3>" + counts_table(data.usage, ("", "value"))
    body += f"<h3>Examples (first {min(limit, len(data.examples))})</h3>"
    body += "<div class=ex><b>template</b><b>text</b><b>filled</b></div>"
    for ex in data.examples[:limit]:
        tag = " <span class=neg>shortened</span>" if ex.shortened else ""
        kind = f" · {escape(ex.kind)}" if ex.kind else ""
        filled = "(not filled yet)" if ex.filled is None else dump_json(ex.filled, 2)
        body += (
            f"<div class=ex><pre>{escape(dump_json(ex.template, 2))}</pre>"
            f"<div><span class=id>{escape(ex.id)}{kind}</span>{tag}<br>{escape(ex.text)}</div>"
            f"<pre>{escape(filled)}</pre></div>"
        )
    if data.failures:
        rows = [(f.id, f.stage, f.reason, f.detail[:200]) for f in data.failures[:100]]
        body += "<h3>Failures</h3>" + html_table(("id", "stage", "reason", "detail"), rows)
    return page("Extraction examples", body)
