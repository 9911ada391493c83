"""The paper's published numbers, from package data (transcribed once, source named per cell)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PAPER_VALUES_PATH = (Path(__file__).resolve().parents[1] / "data" / "paper"
                     / "afloc_paper_values.json")


@dataclass(frozen=True)
class PaperCell:
    value: float
    lower: float | None
    upper: float | None
    text: str      # verbatim as printed in the paper
    source: str    # the paper's table, e.g. "Extended Data Table 1"
    note: str | None = None


@lru_cache(maxsize=1)
def paper_values() -> dict[tuple[str, str, str, str], PaperCell]:
    """(table name, section id, row id, column id) -> the published cell."""
    data = json.loads(PAPER_VALUES_PATH.read_text(encoding="utf-8"))
    out: dict[tuple[str, str, str, str], PaperCell] = {}
    for table, cells in data["tables"].items():
        for c in cells:
            out[(table, c["section"], c["row"], c["column"])] = PaperCell(
                c["value"], c["lower"], c["upper"], c["text"], c["source"], c.get("note"))
    return out
