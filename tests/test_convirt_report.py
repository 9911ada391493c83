"""Tables say that ConVIRT's maps are the harness's adaptation wherever they show them."""

from __future__ import annotations

from pathlib import Path

from bench.report.build import TableResult, map_notes
from bench.report.specs import TABLES
from bench.report.store_view import Run


def _run(method: str, task: str) -> Run:
    return Run(f"{method}-{task}", Path("."), {"method": method, "task": task}, {})


def test_a_table_with_convirt_maps_footnotes_the_adaptation():
    runs = [_run("convirt", "localization"), _run("afloc", "localization"),
            _run("convirt", "localization")]
    notes = map_notes(runs)
    assert len(notes) == 1
    assert notes[0].startswith("ConVIRT: ConVIRT is global-only; its maps here are the "
                               "harness's adaptation, not an official method")
    table = TableResult(TABLES["extended-4"], [], runs=runs)
    assert notes[0] in table.footnotes()


def test_classification_results_need_no_map_note():
    assert map_notes([_run("convirt", "classification")]) == []
    assert map_notes([_run("afloc", "localization"), _run("center", "localization")]) == []
