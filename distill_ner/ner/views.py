"""HTML views of the UniversalNER recipe's artifacts: teacher annotations and evaluation reports."""

from __future__ import annotations

from collections import Counter
from html import escape

from distill_ner.ner.metrics import normalize
from distill_ner.records import AnnotationSet, EvalReport
from distill_ner.views import counts_table, highlight, html_table, page


def annotations_html(data: AnnotationSet, limit: int = 40, top_types: int = 40) -> str:
    n_ents = sum(len(p.entities) for p in data.passages)
    body = (
        f"<p>{len(data.passages)} passages, {n_ents} entities, {len(data.type_counts)} types, "
        f"{len(data.failures)} failed passages. Teacher: {escape(data.teacher)}</p>"
    )
    body += "<h3>Filtered out</h3>" + counts_table(data.filter_counts, ("reason", "count"))
    if data.usage:
        body += "<h3>Teacher usage</h3>" + counts_table(data.usage, ("", "value"))
    top = Counter(data.type_counts).most_common(top_types)
    if top:
        peak = top[0][1]
        rows = "".join(
            f"<tr><td>{escape(t)}</td><td class=num>{c}</td><td><span class=bar style='width:{200 * c // peak}px'></span></td></tr>"
            for t, c in top
        )
        body += f"<h3>Type frequency (top {len(top)})</h3><table><tr><th>type</th><th>mentions</th><th></th></tr>{rows}</table>"
    body += "<h3>Passages</h3>"
    for p in data.passages[:limit]:
        neg = f"<br><span class=u>negatives: {escape(', '.join(p.negatives))}</span>" if p.negatives else ""
        body += f"<div class=p><span class=id>{escape(p.id)}</span><br>{highlight(p.text, [(e.text, e.type) for e in p.entities])}{neg}</div>"
    if data.failures:
        rows = [(f.passage_id, f.reason, f.detail[:200]) for f in data.failures[:100]]
        body += "<h3>Failures</h3>" + html_table(("passage", "reason", "detail"), rows)
    return page("Teacher annotations", body)


def eval_html(report: EvalReport, errors_per_type: int = 5) -> str:
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td class=num>{s.n_sentences}</td><td class=num>{s.n_queries}</td>"
        f"<td class=num>{100 * s.precision:.2f}</td><td class=num>{100 * s.recall:.2f}</td><td class=num><b>{100 * s.f1:.2f}</b></td>"
        f"<td class=num>{'' if s.span_f1 is None else f'{100 * s.span_f1:.2f}'}</td></tr>"
        for name, s in report.per_dataset.items()
    )
    body = (
        f"<p>Model: {escape(report.model)}</p><table><tr><th>benchmark</th><th>sentences</th><th>queries</th>"
        f"<th>P</th><th>R</th><th>F1</th><th>span F1 (seqeval)</th></tr>{rows}"
        f"<tr><th>average</th><td></td><td></td><td></td><td></td><th class=num>{100 * report.average_f1:.2f}</th><td></td></tr></table>"
    )
    # errors grouped by (benchmark, type): what the model added and what it missed
    by_type: dict[tuple[str, str], list[tuple[str, list[str], list[str]]]] = {}
    for p in report.predictions:
        gold = {normalize(g) for g in p.gold}
        pred = {normalize(x) for x in p.predicted}
        fp = [x for x in p.predicted if normalize(x) not in gold]
        fn = [g for g in p.gold if normalize(g) not in pred]
        if fp or fn:
            by_type.setdefault((p.dataset, p.type), []).append((p.text, fp, fn))
    if by_type:
        body += "<h3>Errors by type (false positives / false negatives)</h3>"
    for (dataset, typ), errs in sorted(by_type.items(), key=lambda kv: -len(kv[1])):
        n_fp = sum(len(e[1]) for e in errs)
        n_fn = sum(len(e[2]) for e in errs)
        items = "".join(
            f"<tr><td>{escape(text[:160])}</td><td>{escape(', '.join(fp))}</td><td>{escape(', '.join(fn))}</td></tr>"
            for text, fp, fn in errs[:errors_per_type]
        )
        body += (
            f"<h4>{escape(dataset)} · {escape(typ)}: {n_fp} FP, {n_fn} FN</h4>"
            f"<table><tr><th>sentence</th><th>false positives</th><th>false negatives</th></tr>{items}</table>"
        )
    return page("Evaluation", body)
