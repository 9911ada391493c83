"""The published values (package data) against the paper's text, and against the table specs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.report.paper_values import paper_values
from bench.report.specs import TABLES

PAPER = Path(__file__).resolve().parents[2] / "shared" / "paper" / "afloc_paper.txt"

# (table, section, row, column) -> (caption prefix, metric block header or None, row label as
# printed, 0-based index of the value among the row's tab-separated fields after the label)
SPOT_CHECKS = {
    ("table-1", "iou", "simple", "biovil"): ("Table 1:", "IoU", "Simple description", 0),
    ("table-1", "cnr", "precise", "afloc"): ("Table 1:", "CNR", "Precise description", 2),
    ("table-2", "all", "medklip", "siim"): ("Table 2:", None, "MedKLIP", 1),
    ("table-3", "all", "gloria", "mean"): ("Table 3:", None, "GLORIA", 10),
    ("table-3", "all", "retfound", "ras"): ("Table 3:", None, "RETFound", 6),
    ("extended-1", "iou", "afloc", "rsna"): ("Extended Data Table 1:", "IoU", "AFLoc", 0),
    ("extended-1", "cnr", "recontrast", "covid-rural"):
        ("Extended Data Table 1:", "CNR", "ReContrast", 1),
    ("extended-1", "dice", "medklip", "ms-cxr"): ("Extended Data Table 1:", "Dice", "MedKLIP", 2),
    ("extended-2", "all", "rdpp", "edema"): ("Extended Data Table 2:", None, "RD++", 7),
    ("extended-4", "dice", "convirt", "drusen"):
        ("Extended Data Table 4:", "Dice", "ConVIRT", 1),
    ("extended-5", "all", "human", "support-devices"):
        ("Extended Data Table 5:", None, "Human benchmark*", 9),
    ("extended-6", "all", "0.4", "lung-opacity"): ("Extended Data Table 6:", None, "0.4", 5),
    ("extended-7", "all", "bio-clinicalbert", "cnr"):
        ("Extended Data Table 7:", None, "BioClinicalBERT", 2),
}


def _paper_cell(lines: list[str], caption: str, block: str | None, label: str, k: int) -> str:
    start = next(i for i, line in enumerate(lines) if line.startswith(caption))
    in_block = block is None
    for line in lines[start + 1:]:
        if line.startswith(("Table ", "Extended Data Table ")):
            break
        fields = line.split("\t")
        if block is not None and fields[0].strip() in ("IoU", "Dice", "CNR"):
            in_block = fields[0].strip() == block
            continue
        if in_block and fields[0].strip() == label:
            return fields[1:][k]
    raise AssertionError(f"{caption} {block} {label}: row not found in the paper")


def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d*\.\d+|-?\d+", text)]


@pytest.mark.skipif(not PAPER.is_file(), reason=f"paper text not found at {PAPER} "
                    "(CI keeps ../shared beside the clone)")
@pytest.mark.parametrize("key", sorted(SPOT_CHECKS))
def test_paper_values_match_the_paper_text(key: tuple[str, str, str, str]) -> None:
    lines = PAPER.read_text(encoding="utf-8").splitlines()
    printed = _paper_cell(lines, *SPOT_CHECKS[key])
    cell = paper_values()[key]
    assert cell.text == printed.strip()
    nums = _numbers(printed)
    assert cell.value == nums[0]
    if len(nums) == 3:
        assert (cell.lower, cell.upper) == (nums[1], nums[2])
    else:
        assert cell.lower is None and cell.upper is None


def test_the_one_typo_is_read_and_noted() -> None:
    cell = paper_values()[("extended-1", "iou", "biovil", "rsna")]
    assert cell.text == "0.295 (0.286, 304)"
    assert (cell.value, cell.lower, cell.upper) == (0.295, 0.286, 0.304)
    assert "304" in (cell.note or "")


def test_every_value_cell_of_every_spec_has_a_published_value() -> None:
    pv = paper_values()
    for spec in TABLES.values():
        for section in spec.sections:
            for row in spec.rows:
                for col in spec.columns:
                    if col.attr is not None:
                        continue
                    key = (spec.name, section.id, row.id, col.id)
                    if row.reference or row.harness:  # not in the paper
                        assert key not in pv, key
                        continue
                    assert key in pv, key
                    assert pv[key].source.replace("Extended Data ", "") in (
                        spec.source.replace("Extended Data ", ""))
    n_cells = sum(1 for k in pv)
    # 18 + 16 + 60 + 54 + 48 + 35 + 60 + 50 + 40 + 6 cells printed in the paper's tables
    assert n_cells == 387
