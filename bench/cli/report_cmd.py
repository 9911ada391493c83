"""`bench table`, `bench figure`, `bench report`: the paper's tables and figures from the store."""

from __future__ import annotations

import difflib
from pathlib import Path

import click

from bench.errors import BenchError, UsageError


def _pick(name: str, known: dict, kind: str) -> list[str]:
    if name == "all":
        return list(known)
    if name not in known:
        close = difflib.get_close_matches(name, list(known), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UsageError(f"unknown {kind} '{name}'{hint}; known: {', '.join(known)}, all")
    return [name]


@click.command("table")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "tex", "html"]), default="md",
              show_default=True)
@click.option("--paper", is_flag=True, help="Show the published value beside each measured one.")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON (for scripts).")
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"),
              show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write to this file instead of stdout.")
def table_cmd(name: str, fmt: str, paper: bool, as_json: bool, results_dir: Path,
              out: Path | None) -> None:
    """Render paper table NAME (table-1..3, extended-1..7, or all) from the results store."""
    from bench.report.build import build_table
    from bench.report.render import render
    from bench.report.specs import TABLES
    from bench.report.store_view import StoreView
    from bench.store import atomic_write_bytes

    names = _pick(name, TABLES, "table")
    view = StoreView(results_dir)
    texts = [render(build_table(TABLES[n], view), "json" if as_json else fmt, paper=paper)
             for n in names]
    text = "\n".join(texts)
    if out is not None:
        atomic_write_bytes(out, text.encode("utf-8"))
        click.echo(f"wrote {out}", err=True)
    else:
        click.echo(text, nl=False)


@click.command("figure")
@click.argument("name")
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports"),
              show_default=True, help="Folder for the figure file.")
@click.option("--format", "fmt", type=click.Choice(["png", "pdf"]), default="png",
              show_default=True)
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"),
              show_default=True)
def figure_cmd(name: str, out: Path, fmt: str, results_dir: Path) -> None:
    """Draw paper figure NAME (fig2..fig5, or all) from the results store."""
    from bench.report.figures import make_figure
    from bench.report.specs import FIGURES
    from bench.report.store_view import StoreView

    view = StoreView(results_dir)
    names = _pick(name, FIGURES, "figure")
    drawn = 0
    for n in names:
        try:
            path = make_figure(n, view, out, fmt)
        except BenchError as exc:
            if len(names) == 1:
                raise
            click.echo(f"skipped {exc}", err=True)  # `all`: draw what the store can fill
            continue
        drawn += 1
        click.echo(str(path))
    if not drawn:
        raise BenchError(f"no figure could be drawn from {results_dir}")


@click.command("report")
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"),
              show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports"),
              show_default=True, help="Folder for report.html, report.md and the figures.")
def report_cmd(results_dir: Path, out: Path) -> None:
    """One self-contained HTML page and a Markdown twin with every table and figure the store
    can fill, and the provenance of each run."""
    from bench.report.html_report import write_report

    paths = write_report(results_dir, out)
    for p in paths:
        click.echo(str(p))
