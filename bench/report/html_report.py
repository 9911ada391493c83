"""`bench report`: one self-contained HTML page (figures embedded as base64) and a Markdown
twin, with every table and figure the store can fill and the provenance of every run.

The page carries no generation time, so the same store gives the same bytes.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError
from bench.report.build import TableResult, build_table
from bench.report.render import to_html, to_markdown
from bench.report.specs import FIGURES, TABLES
from bench.report.store_view import Run, StoreView
from bench.store import atomic_write_bytes

CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
caption{caption-side:top;text-align:left;padding:.4em 0;max-width:1100px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:center;white-space:nowrap}
tbody th{text-align:left}
tr.section th{background:#f0f0f0;text-align:left}
td.missing,td.na{color:#999}
tr.reference th{font-style:italic}
tr.reference.first th,tr.reference.first td{border-top:2px solid #888}
span.paper{color:#555}
.table-wrap{overflow-x:auto;max-width:100%}
td.synthetic,.synthetic-label{color:#b2182b}
.banner{border:2px solid #b2182b;color:#b2182b;padding:.6em;font-weight:bold}
ul.footnotes{font-size:12px;color:#444}
img{max-width:100%;border:1px solid #eee}
table.provenance td,table.runs td{font-family:monospace;font-size:12px;text-align:left}
tr.synthetic td{color:#b2182b}
"""


@dataclass
class FigureOut:
    name: str
    title: str
    png: bytes | None
    reason: str | None  # why it could not be drawn
    synthetic: list[str]


def _figures(view: StoreView, out: Path) -> list[FigureOut]:
    import matplotlib.pyplot as plt

    from bench.report.figures import draw, save  # matplotlib only when a report is made

    figs = []
    for name, spec in FIGURES.items():
        try:
            drawn = draw(name, view)
        except BenchError as exc:
            figs.append(FigureOut(name, spec.title, None, str(exc), []))
            continue
        try:
            path = save(drawn.figure, out / "figures" / f"{name}.png", "png")
        finally:
            plt.close(drawn.figure)
        figs.append(FigureOut(name, spec.title, path.read_bytes(), None, drawn.synthetic))
    return figs


def _provenance_rows(runs: list[Run]) -> list[list[str]]:
    rows = []
    for r in runs:
        i = r.info
        sha = str((i.get("method_info") or {}).get("checkpoint_sha256") or "")
        versions = ", ".join(f"{k}={v}" for k, v in sorted((i.get("versions") or {}).items()))
        dataset = r.dataset + (" (SYNTHETIC)" if r.synthetic else "")
        rows.append([r.run_id, str(i.get("method", "")), str(r.tag or ""), sha or "none",
                     dataset, str(i.get("split", "")), str(i.get("protocol", "")),
                     str(i.get("prompt") or ""), str(i.get("task", "")), str(i.get("seed", "")),
                     str(i.get("n_bootstrap", "")), str(i.get("n_rows", "")),
                     str(i.get("git_rev", "")), versions])
    return rows


SUMMARY_METRICS = ("iou", "dice", "cnr", "hit", "auroc")


def _summary_rows(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    """Every run's overall metrics (bootstrap mean and 95% CI), paper method or not."""
    from bench.report.build import fmt_ci

    present = [m for m in SUMMARY_METRICS
               if any(m in (r.summary.get("metrics") or {}) for r in runs)]
    names = {"iou": "IoU", "dice": "Dice", "cnr": "CNR", "hit": "Hit rate", "auroc": "AUROC"}
    head = ["run", "dataset", "n"] + [names[m] for m in present]
    rows = []
    for r in runs:
        metrics = r.summary.get("metrics") or {}
        cells = []
        for m in present:
            o = (metrics.get(m) or {}).get("overall")
            cells.append("—" if not o or o.get("mean") is None
                         else fmt_ci(float(o["mean"]), o.get("lower"), o.get("upper")))
        dataset = r.dataset + (" (SYNTHETIC)" if r.synthetic else "")
        rows.append([r.run_id, dataset, str(r.summary.get("n_rows", ""))] + cells)
    return head, rows


PROVENANCE_HEAD = ["run", "method", "tag", "checkpoint sha256", "dataset", "split", "protocol",
                   "prompt", "task", "seed", "bootstrap", "rows", "git", "versions"]


def write_report(results_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Writes out_dir/report.html and out_dir/report.md (+ out_dir/figures/*.png)."""
    view = StoreView(results_dir)
    out = Path(out_dir)
    tables = [build_table(spec, view) for spec in TABLES.values()]
    filled = [t for t in tables if t.n_measured]
    empty = [t for t in tables if not t.n_measured]
    figs = _figures(view, out)
    synth = sorted({r.dataset for r in view.runs if r.synthetic})
    html_path, md_path = out / "report.html", out / "report.md"
    atomic_write_bytes(html_path, _html(view, filled, empty, figs, synth).encode("utf-8"))
    atomic_write_bytes(md_path, _markdown(view, filled, empty, figs, synth).encode("utf-8"))
    return [html_path, md_path] + [out / "figures" / f"{f.name}.png" for f in figs if f.png]


def _banner(synth: list[str]) -> str:
    if not synth:
        return ""
    return ("SYNTHETIC DATA: runs on " + ", ".join(synth) + " used procedurally generated "
            "phantoms, not the paper's datasets. Their numbers test the harness; they are not "
            "a reproduction of the paper's results.")


def _html(view: StoreView, filled: list[TableResult], empty: list[TableResult],
          figs: list[FigureOut], synth: list[str]) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>AFLoc benchmark report</title>", f"<style>{CSS}</style></head><body>",
             "<h1>AFLoc benchmark report</h1>",
             f"<p>Results store: <code>{e(str(view.results_dir))}</code>; "
             f"{len(view.runs)} complete run(s). Each cell reads <i>measured | paper</i>: the "
             "bootstrap mean with its 95% CI measured by this harness, then the published "
             "value. &mdash; marks a cell with no result.</p>"]
    if synth:
        parts.append(f'<p class="banner">{e(_banner(synth))}</p>')
    parts.append("<h2>Tables</h2>")
    for t in filled:
        parts.append(f"<h3>{e(t.spec.name)}: {e(t.spec.title)}</h3>")
        parts.append(to_html(t, paper=True))
    if empty:
        parts.append("<p>Tables with no result in this store: "
                     + ", ".join(f"<code>{e(t.spec.name)}</code>" for t in empty)
                     + " (<code>bench table NAME</code> lists the runs that fill them).</p>")
    parts.append("<h2>Figures</h2>")
    for f in figs:
        if f.png is None:
            parts.append(f"<p><b>{e(f.name)}</b> ({e(f.title)}): not drawn: {e(f.reason or '')}"
                         "</p>")
            continue
        label = f" &mdash; SYNTHETIC: {e(', '.join(f.synthetic))}" if f.synthetic else ""
        b64 = base64.b64encode(f.png).decode("ascii")
        parts.append(f'<figure id="{e(f.name)}"><img alt="{e(f.name)}: {e(f.title)}" '
                     f'src="data:image/png;base64,{b64}"><figcaption><b>{e(f.name)}</b>: '
                     f"{e(f.title)}{label}</figcaption></figure>")
    head, rows = _summary_rows(view.runs)
    parts.append("<h2>Every run (overall metrics, 95% CI)</h2>")
    parts.append('<div class="table-wrap"><table class="runs"><thead><tr>'
                 + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>")
    for row in rows:
        cls = ' class="synthetic"' if "(SYNTHETIC)" in row[1] else ""
        parts.append(f"<tr{cls}>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
    parts.append("</tbody></table></div>")
    parts.append("<h2>Provenance of each run</h2>")
    parts.append('<div class="table-wrap"><table class="provenance"><thead><tr>'
                 + "".join(f"<th>{e(h)}</th>" for h in PROVENANCE_HEAD) + "</tr></thead><tbody>")
    for row in _provenance_rows(view.runs):
        cls = ' class="synthetic"' if "(SYNTHETIC)" in row[4] else ""
        parts.append(f"<tr{cls}>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
    parts.append("</tbody></table></div></body></html>")
    return "\n".join(parts) + "\n"


def _markdown(view: StoreView, filled: list[TableResult], empty: list[TableResult],
              figs: list[FigureOut], synth: list[str]) -> str:
    lines = ["# AFLoc benchmark report", "",
             f"Results store: `{view.results_dir}`; {len(view.runs)} complete run(s). Each cell "
             "reads `measured | paper` (bootstrap mean and 95% CI measured by this harness, "
             "then the published value); — marks a cell with no result.", ""]
    if synth:
        lines += [f"> **{_banner(synth)}**", ""]
    lines += ["## Tables", ""]
    for t in filled:
        lines += [f"### {t.spec.name}: {t.spec.title}", "", to_markdown(t, paper=True)]
    if empty:
        lines += ["Tables with no result in this store: "
                  + ", ".join(f"`{t.spec.name}`" for t in empty) + ".", ""]
    lines += ["## Figures", ""]
    for f in figs:
        if f.png is None:
            lines += [f"- **{f.name}** ({f.title}): not drawn: {f.reason}", ""]
            continue
        label = f" (SYNTHETIC: {', '.join(f.synthetic)})" if f.synthetic else ""
        lines += [f"![{f.name}: {f.title}](figures/{f.name}.png)", "",
                  f"**{f.name}**: {f.title}{label}", ""]
    head, rows = _summary_rows(view.runs)
    lines += ["## Every run (overall metrics, 95% CI)", "", "| " + " | ".join(head) + " |",
              "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", "## Provenance of each run", "",
              "| " + " | ".join(PROVENANCE_HEAD) + " |", "|" + "---|" * len(PROVENANCE_HEAD)]
    for row in _provenance_rows(view.runs):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines) + "\n"
