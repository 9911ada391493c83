"""Renders a filled table (`build.TableResult`) as Markdown, CSV, LaTeX, HTML or JSON.

With `paper=True` every value cell reads `measured | paper`. The caption always says where
numbers come from; synthetic cells carry a dagger and the caption names the synthetic data.
"""

from __future__ import annotations

import csv
import html
import io
import json
from typing import Any

from bench.report.build import (
    MISSING,
    CellResult,
    RowResult,
    SectionResult,
    TableResult,
    measured_text,
    paper_text,
)

FORMATS = ("md", "csv", "tex", "html", "json")


def cell_text(cell: CellResult, paper: bool, digits: int, sep: str = " | ") -> str:
    if not paper or cell.kind == "attr" or cell.reference:  # references: no published value
        return measured_text(cell, digits)
    return measured_text(cell, digits) + sep + paper_text(cell, digits)


def _header(result: TableResult, paper: bool) -> list[str]:
    suffix = " (measured | paper)" if paper else ""
    labels = result.column_labels()
    return [result.spec.row_header] + [
        lab + (suffix if col.attr is None else "") for lab, col in zip(labels,
                                                                        result.spec.columns)]


def _first_reference(sec: SectionResult, r: RowResult) -> bool:
    """`r` is the first reference row of its section (a rule goes above it)."""
    return r.row.reference and next(x for x in sec.rows if x.row.reference) is r


def _sectioned(result: TableResult) -> bool:
    return len(result.sections) > 1 or result.sections[0].section.label is not None


def render(result: TableResult, fmt: str = "md", paper: bool = False) -> str:
    if fmt == "md":
        return to_markdown(result, paper)
    if fmt == "csv":
        return to_csv(result, paper)
    if fmt == "tex":
        return to_latex(result, paper)
    if fmt == "html":
        return to_html(result, paper)
    if fmt == "json":
        return json.dumps(to_dict(result), indent=2, ensure_ascii=False, allow_nan=True) + "\n"
    raise ValueError(f"unknown table format {fmt!r}; choose from {', '.join(FORMATS)}")


# -- Markdown -----------------------------------------------------------------------------

def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def to_markdown(result: TableResult, paper: bool = False) -> str:
    d = result.spec.digits
    head = _header(result, paper)
    lines = [f"**{result.spec.name}**: {_md_escape(result.caption())}", "",
             "| " + " | ".join(_md_escape(h) for h in head) + " |",
             "|" + "---|" * len(head)]
    for sec in result.sections:
        if _sectioned(result) and sec.section.label:
            lines.append(f"| **{sec.section.label}** |" + " |" * (len(head) - 1))
        for r in sec.rows:
            cells = [_md_escape(cell_text(c, paper, d)) for c in r.cells]
            lines.append("| " + " | ".join([_md_escape(r.row.label)] + cells) + " |")
    notes = result.footnotes()
    if notes:
        lines.append("")
        lines += [f"    {n.strip()}" if n.startswith("    ") else n for n in notes]
    return "\n".join(lines) + "\n"


# -- CSV ----------------------------------------------------------------------------------

def to_csv(result: TableResult, paper: bool = False) -> str:
    """One line per (section, row); with `paper`, a `<column> (paper)` column after each."""
    d = result.spec.digits
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    head = [result.spec.row_header]
    if _sectioned(result):
        head.append("Metric")
    for lab, col in zip(result.column_labels(), result.spec.columns):
        head.append(lab)
        if paper and col.attr is None:
            head.append(f"{lab} (paper)")
    w.writerow(head)
    for sec in result.sections:
        for r in sec.rows:
            line = [r.row.label] + ([sec.section.label or ""] if _sectioned(result) else [])
            for c in r.cells:
                line.append(measured_text(c, d))
                if paper and c.kind != "attr":
                    line.append(paper_text(c, d))
            w.writerow(line)
    return buf.getvalue()


# -- LaTeX --------------------------------------------------------------------------------

_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
        "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
        "—": "---", "–": "--", "✓": r"\checkmark", "✗": r"$\times$", "†": r"$^\dagger$",
        "|": r"$\mid$"}


def tex_escape(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in s)


def to_latex(result: TableResult, paper: bool = False) -> str:
    d = result.spec.digits
    head = _header(result, paper)
    n = len(head)
    out = [r"% needs \usepackage{booktabs,amssymb}",
           r"\begin{table}[t]", r"\centering", r"\footnotesize",
           rf"\caption{{{tex_escape(result.caption())}}}",
           rf"\label{{tab:{result.spec.name}}}",
           r"\begin{tabular}{l" + "c" * (n - 1) + "}", r"\toprule",
           " & ".join(tex_escape(h) for h in head) + r" \\", r"\midrule"]
    for k, sec in enumerate(result.sections):
        if _sectioned(result) and sec.section.label:
            if k:
                out.append(r"\midrule")
            out.append(rf"\multicolumn{{{n}}}{{l}}{{\textit{{{tex_escape(sec.section.label)}}}}}"
                       r" \\")
        for r in sec.rows:
            if _first_reference(sec, r):
                out.append(r"\cmidrule(lr){1-" + str(n) + "}")
            cells = [tex_escape(cell_text(c, paper, d)) for c in r.cells]
            out.append(" & ".join([tex_escape(r.row.label)] + cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    notes = result.footnotes()
    if notes:
        out.append(r"\par\smallskip\raggedright\scriptsize")
        out += [r"\texttt{" + tex_escape(x.strip()) + r"}\\" if x.startswith("    ")
                else tex_escape(x) + r"\\" for x in notes]
    out.append(r"\end{table}")
    return "\n".join(out) + "\n"


# -- HTML ---------------------------------------------------------------------------------

def to_html(result: TableResult, paper: bool = False) -> str:
    d = result.spec.digits
    e = html.escape
    head = _header(result, paper)
    cls = "bench-table synthetic" if result.synthetic else "bench-table"
    out = ['<div class="table-wrap">', f'<table class="{cls}" id="{e(result.spec.name)}">',
           f"<caption><b>{e(result.spec.name)}</b>: {e(result.caption())}</caption>",
           "<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead>",
           "<tbody>"]
    for sec in result.sections:
        if _sectioned(result) and sec.section.label:
            out.append(f'<tr class="section"><th colspan="{len(head)}">'
                       f"{e(sec.section.label)}</th></tr>")
        for r in sec.rows:
            tds = []
            for c in r.cells:
                attrs = ""
                if c.na is not None:
                    attrs = ' class="na"'
                elif c.kind != "attr" and c.measured is None:
                    attrs = ' class="missing"'
                elif c.synthetic:
                    attrs = ' class="synthetic"'
                text = e(measured_text(c, d))
                if paper and c.kind != "attr" and not c.reference:
                    text += f' <span class="paper">| {e(paper_text(c, d))}</span>'
                tds.append(f"<td{attrs}>{text}</td>")
            tr = "<tr>"
            if r.row.reference:
                tr = '<tr class="reference first">' if _first_reference(sec, r) else (
                    '<tr class="reference">')
            out.append(f"{tr}<th>{e(r.row.label)}</th>" + "".join(tds) + "</tr>")
    out.append("</tbody></table></div>")
    notes = result.footnotes()
    if notes:
        items = "".join(f"<li><code>{e(x.strip())}</code></li>" if x.startswith("    ")
                        else f"<li>{e(x)}</li>" for x in notes)
        out.append(f'<ul class="footnotes" data-table="{e(result.spec.name)}">{items}</ul>')
    return "\n".join(out) + "\n"


# -- JSON ---------------------------------------------------------------------------------

def _stat(cell: CellResult) -> dict[str, Any] | None:
    m = cell.measured
    if m is None:
        return None
    out = {"mean": m.mean, "lower": m.lower, "upper": m.upper, "n": m.n,
           "dataset_mean": m.dataset_mean}
    if cell.spread is not None:
        out["seeds"] = {"n": cell.spread.n, "sd": cell.spread.sd,
                        "values": dict(cell.spread.values)}
    return out


def to_dict(result: TableResult) -> dict[str, Any]:
    spec = result.spec
    rows = []
    for sec in result.sections:
        for r in sec.rows:
            cells = {}
            for col, c in zip(spec.columns, r.cells):
                if c.kind == "attr":
                    cells[col.id] = {"text": c.text}
                    continue
                cells[col.id] = {
                    "measured": _stat(c),
                    "paper": None if c.paper is None else {
                        "value": c.paper.value, "lower": c.paper.lower, "upper": c.paper.upper,
                        "source": c.paper.source},
                    "run_id": None if c.run is None else c.run.run_id,
                    "dataset": None if c.run is None else c.run.dataset,
                    "synthetic": c.synthetic,
                    "missing": c.measured is None and c.na is None,
                    "not_applicable": c.na,
                    "query": None if c.missing_sel is None else {
                        k: v for k, v in vars(c.missing_sel).items() if v is not None},
                }
            rows.append({"section": sec.section.id, "row": r.row.id, "label": r.row.label,
                         "reference": r.row.reference, "cells": cells})
    return {"name": spec.name, "title": spec.title, "source": spec.source,
            "caption": result.caption(), "synthetic": result.synthetic,
            "synthetic_datasets": result.synthetic_datasets,
            "columns": [{"id": c.id, "label": lab}
                        for c, lab in zip(spec.columns, result.column_labels())],
            "rows": rows, "missing_commands": result.commands,
            "methods_without_adapter": result.unavailable,
            "footnotes": result.footnotes(), "missing": MISSING,
            "runs": [r.run_id for r in result.runs]}
