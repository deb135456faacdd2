"""HTML and Markdown views of the artifacts, as pure functions (materializers only write them out)."""

from __future__ import annotations

import colorsys
import hashlib
import re
from collections.abc import Iterable, Sequence
from html import escape

from distill_ner.records import EvalReport, PassageSet, PromotionDecision, SFTDataset

_STYLE = """<style>
body{font-family:system-ui,sans-serif;font-size:14px;margin:1em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}.num{text-align:right;font-variant-numeric:tabular-nums}
.ent{border-radius:3px;padding:0 2px}.ent sub{font-size:70%;color:#333;margin-left:2px}
.p{margin:.6em 0;padding:.4em;border-left:3px solid #ddd}.id{color:#888;font-size:80%}
.t{background:#c8f7c5}.u{color:#555}.bar{background:#7aa6e8;height:10px;display:inline-block}
pre{white-space:pre-wrap;word-break:break-word}
</style>"""


def page(title: str, body: str) -> str:
    """A standalone HTML page with the shared style."""
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>{_STYLE}</head><body><h2>{escape(title)}</h2>{body}</body></html>"


def _colour(label: str) -> str:
    hue = int(hashlib.md5(label.encode()).hexdigest()[:4], 16) / 0xFFFF
    r, g, b = colorsys.hls_to_rgb(hue, 0.85, 0.7)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def counts_table(counts: dict[str, float], headers: tuple[str, str] = ("", "count")) -> str:
    """A two-column table of named counts."""
    rows = "".join(f"<tr><td>{escape(str(k))}</td><td class=num>{v:g}</td></tr>" for k, v in counts.items())
    return f"<table><tr><th>{headers[0]}</th><th>{headers[1]}</th></tr>{rows}</table>"


def html_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A table of plain-text cells (escaped here)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def highlight(text: str, entities: list[tuple[str, str]]) -> str:
    """Mark every occurrence of each entity string in the text, longest first, without overlaps."""
    taken = [False] * len(text)
    spans: list[tuple[int, int, str]] = []
    for ent, typ in sorted(set(entities), key=lambda e: -len(e[0])):
        if not ent:
            continue
        for m in re.finditer(re.escape(ent), text):
            if not any(taken[m.start() : m.end()]):
                spans.append((m.start(), m.end(), typ))
                taken[m.start() : m.end()] = [True] * (m.end() - m.start())
    out, pos = [], 0
    for start, end, typ in sorted(spans):
        out.append(escape(text[pos:start]))
        out.append(
            f"<span class=ent style='background:{_colour(typ)}'>{escape(text[start:end])}<sub>{escape(typ)}</sub></span>"
        )
        pos = end
    out.append(escape(text[pos:]))
    return "".join(out)


def passages_html(data: PassageSet, limit: int = 50) -> str:
    body = counts_table(data.stats, ("sampling", "count"))
    body += f"<p>{len(data.passages)} passages; first {min(limit, len(data.passages))}:</p>"
    for p in data.passages[:limit]:
        body += f"<div class=p><span class=id>{escape(p.id)} · {escape(p.source)}</span><br>{escape(p.text)}</div>"
    return page("Passages", body)


def sft_html(data: SFTDataset) -> str:
    body = f"<p>Tokenizer: {escape(data.tokenizer)}</p>" + counts_table(data.stats, ("", "value"))
    body += "<p>Rendered rows; <span class=t>highlighted</span> tokens carry the loss.</p>"
    for i, segments in enumerate(data.preview):
        pieces = "".join(
            f"<span class=t>{escape(text)}</span>" if trained else f"<span class=u>{escape(text)}</span>"
            for text, trained in segments
        )
        body += f"<h4>row {i}</h4><pre>{pieces}</pre>"
    return page("SFT dataset", body)


def decision_markdown(d: PromotionDecision) -> str:
    verdict = "**promoted to production**" if d.promoted else "**not promoted**"
    lines = [f"# {d.model_name} v{d.version}: {verdict}", "", "## Reasons", ""]
    lines += [f"- {r}" for r in d.reasons]
    lines += ["", "## Metrics", "", "| metric | candidate | production before |", "|---|---|---|"]
    before = d.production_before or {}
    for k in sorted(set(d.candidate) | set(before)):
        c = d.candidate.get(k)
        b = before.get(k)
        lines.append(f"| {k} | {'' if c is None else f'{c:.4f}'} | {'' if b is None else f'{b:.4f}'} |")
    if d.production_version_before:
        lines += ["", f"Production before: v{d.production_version_before}"]
    return "\n".join(lines) + "\n"


def report_html(report: EvalReport) -> str:
    """Any recipe's evaluation report: the primary metric and coverage per dataset, with its other numbers."""
    detail_names = sorted({name for numbers in report.details.values() for name in numbers})
    headers = ["dataset", report.unit, report.metric, *detail_names]
    rows = [
        [
            name,
            str(report.coverage.get(name, "")),
            f"{100 * value:.2f}",
            *(
                f"{100 * report.details.get(name, {})[d]:.2f}" if d in report.details.get(name, {}) else ""
                for d in detail_names
            ),
        ]
        for name, value in report.primary.items()
    ]
    rows.append(
        ["average", str(sum(report.coverage.values())), f"{100 * report.average:.2f}", *[""] * len(detail_names)]
    )
    body = f"<p>Model: {escape(report.model)}</p>" + html_table(headers, rows)
    misses = [p for p in report.predictions if p.gold != p.predicted][:20]
    if misses:
        body += "<h3>Predictions that differ from gold (first 20)</h3>" + html_table(
            ("dataset", "id", "missed", "invented"),
            [
                (
                    p.dataset,
                    p.id,
                    "; ".join(sorted(set(p.gold) - set(p.predicted))),
                    "; ".join(sorted(set(p.predicted) - set(p.gold))),
                )
                for p in misses
            ],
        )
    return page("Evaluation", body)
