"""Reference rows (random, center, oracle) under the paper's rows: labelled, last, footnoted,
with no published value; the centre prior's classification cells are n/a with no command; the
plan fills every reference cell."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path

from bench.report.build import build_table
from bench.report.render import render
from bench.report.specs import REFERENCE_NOTE, TABLES
from bench.report.store_view import StoreView
from bench.reproduce.plan import coverage, load_plan

try:  # tests/ may or may not be a package
    from tests.test_report_fabricated import loc_metrics, stat, write_fabricated_run
except ImportError:  # pragma: no cover
    from test_report_fabricated import loc_metrics, stat, write_fabricated_run

REFS = ["Random (reference)", "Centre prior (reference)", "Oracle (reference)"]


def _store(tmp_path: Path) -> Path:
    for m, v in (("random", 0.05), ("center", 0.13), ("oracle", 1.0), ("afloc", 0.3)):
        write_fabricated_run(tmp_path, method=m, dataset="synthetic-ms-cxr", prompt="precise",
                             metrics=loc_metrics((v, v, v), (v, v, v), (v, v, v)))
    write_fabricated_run(tmp_path, method="random", dataset="synthetic-rsna",
                         task="classification", protocol="classification", split="test",
                         metrics={"auroc": {"overall": stat(0.5, 0.5, 0.5)}})
    return tmp_path


def _md(results: Path, name: str, paper: bool = False) -> str:
    return render(build_table(TABLES[name], StoreView(results)), "md", paper=paper)


def _row_labels(text: str) -> list[str]:
    return [line.split(" | ")[0].lstrip("| ") for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| **")][1:]


def test_reference_rows_come_last_labelled_and_footnoted(tmp_path):
    text = _md(_store(tmp_path), "extended-1")
    labels = _row_labels(text)
    assert labels[-3:] == REFS and labels[-4] == "AFLoc" and len(labels) == 3 * 9
    assert "| Oracle (reference) | — | — | 1.000 (1.000, 1.000)† |" in text
    assert REFERENCE_NOTE in text.splitlines()
    tex = render(build_table(TABLES["extended-1"], StoreView(tmp_path)), "tex")
    assert r"\cmidrule(lr){1-4}" + "\nRandom (reference)" in tex  # a rule above them
    html = render(build_table(TABLES["extended-1"], StoreView(tmp_path)), "html")
    assert '<tr class="reference first"><th>Random (reference)</th>' in html


def test_every_method_row_table_has_its_reference_rows():
    for name, spec in TABLES.items():
        refs = [r.id for r in spec.rows if r.reference]
        if name in ("table-1", "extended-6"):  # rows are prompt sets / thresholds
            assert refs == []
        elif spec.base.task == "classification":  # oracle AUROC is 1 by construction
            assert refs == ["random", "center"]
        else:
            assert refs == ["random", "center", "oracle"]
        assert [r.reference for r in spec.rows] == sorted(r.reference for r in spec.rows)


def test_the_published_values_column_leaves_reference_rows_empty(tmp_path):
    text = _md(_store(tmp_path), "extended-1", paper=True)
    afloc = next(line for line in text.splitlines() if line.startswith("| AFLoc |"))
    assert "0.300 (0.300, 0.300)† \\| 0.324 (0.298, 0.350)" in afloc
    oracle = next(line for line in text.splitlines() if line.startswith("| Oracle (reference)"))
    assert oracle == "| Oracle (reference) | — | — | 1.000 (1.000, 1.000)† |"  # no paper part
    table = build_table(TABLES["extended-1"], StoreView(tmp_path))
    rows = list(csv.reader(io.StringIO(render(table, "csv", paper=True))))
    head, center = rows[0], next(r for r in rows if r[0] == "Centre prior (reference)")
    assert center[head.index("COVID Rural (paper)")] == ""
    refs = [r for r in json.loads(render(table, "json"))["rows"] if r["reference"]]
    assert len(refs) == 9 and all(r["cells"]["ms-cxr"]["paper"] is None for r in refs)


def test_the_centre_prior_cannot_classify_and_gets_no_command(tmp_path):
    text = _md(_store(tmp_path), "table-2")
    assert _row_labels(text)[-2:] == ["Random (reference)", "Centre prior (reference)"]
    assert "| Random (reference) | 0.500 (0.500, 0.500)† | — |" in text
    assert "| Centre prior (reference) | n/a | n/a |" in text
    assert "n/a not applicable: Centre prior (baseline) has no classification scores." in text
    commands = [line for line in text.splitlines() if "bench run" in line]
    assert commands and not any("center" in c for c in commands)
    assert any("random" in c and "--datasets siim" in c for c in commands)


def test_the_plan_fills_every_reference_cell():
    plan = load_plan()
    cov = coverage(plan, "tiny")
    assert not cov.uncovered and not cov.stale_pending and not cov.idle_claims
    bare = replace(plan, evals=tuple(e for e in plan.evals if e.name != "references-ms-cxr"))
    lost = {(c.table, c.row, c.column) for c in coverage(bare, "tiny").uncovered}
    assert ("extended-1", "oracle", "ms-cxr") in lost
    assert {r for _, r, _ in lost} == {"random", "center", "oracle"}
