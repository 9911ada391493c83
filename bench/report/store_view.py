"""Finds the run (and the number in its summary) that fills one table cell.

Runs are matched by their run.json fields, never by folder name. A cell asking for a real
dataset is filled by a run on that dataset, else by one on its synthetic twin (labelled as
such by the caller); among equal candidates the most recently finished run wins, then the
folder name, so the same store always gives the same table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report.specs import SYNTHETIC_TWIN, Sel
from bench.store import RunDir, iter_runs


@dataclass(frozen=True)
class Stat:
    """One summary entry: bootstrap mean with its 95% CI."""

    mean: float
    lower: float | None
    upper: float | None
    n: int | None = None
    dataset_mean: float | None = None

    @classmethod
    def from_summary(cls, d: dict[str, Any]) -> Stat:
        def num(x: Any) -> float | None:
            return None if x is None else float(x)

        return cls(float(d["mean"]), num(d.get("lower")), num(d.get("upper")),
                   None if d.get("n") is None else int(d["n"]), num(d.get("dataset_mean")))


@dataclass(frozen=True)
class Run:
    run_id: str
    path: Path
    info: dict[str, Any]
    summary: dict[str, Any]

    @property
    def dataset(self) -> str:
        return str(self.info.get("dataset", ""))

    @property
    def synthetic(self) -> bool:
        return bool(self.info.get("synthetic")) or self.dataset.startswith("synthetic-")

    @property
    def tag(self) -> str | None:
        return self.info.get("method_tag") or None


@dataclass(frozen=True)
class Found:
    run: Run
    stat: Stat


def normalize_name(s: str) -> str:
    """Category names compare case-, dash- and underscore-insensitively."""
    return " ".join(s.replace("_", " ").replace("-", " ").lower().split())


class StoreView:
    """All complete runs of one results folder, read once."""

    def __init__(self, results_dir: str | Path):
        self.results_dir = Path(results_dir)
        self.runs: list[Run] = [Run(rd.path.name, rd.path, info, summary)
                                for rd, info, summary in iter_runs(self.results_dir)]

    def candidates(self, sel: Sel) -> list[Run]:
        """Runs that match `sel` on every run-level field, best first."""
        out = [r for r in self.runs if _matches(r, sel)]
        out.sort(key=lambda r: (r.synthetic, _neg(str(r.info.get("finished") or "")), r.run_id))
        return out

    def find(self, sel: Sel) -> Found | None:
        for run in self.candidates(sel):
            stat = extract(run.summary, sel)
            if stat is not None:
                return Found(run, stat)
        return None

    def rundir(self, run: Run) -> RunDir:
        return RunDir(run.path)


def _neg(s: str) -> tuple[int, ...]:
    """Sort key that puts later ISO timestamps first."""
    return tuple(-ord(c) for c in s)


def _matches(run: Run, sel: Sel) -> bool:
    info = run.info
    if sel.method is not None and info.get("method") != sel.method:
        return False
    if sel.tags is not None and run.tag not in sel.tags:
        return False
    twins = (sel.dataset, SYNTHETIC_TWIN.get(sel.dataset or ""))
    if sel.dataset is not None and run.dataset not in twins:
        return False
    for key in ("prompt", "protocol", "task", "split"):
        want = getattr(sel, key)
        if want is not None and info.get(key) != want:
            return False
    return True


def extract(summary: dict[str, Any], sel: Sel) -> Stat | None:
    """The summary entry a cell shows: overall, per category, per threshold, or both."""
    if sel.metric is None:
        return None
    node = summary.get("metrics", {}).get(sel.metric)
    if node is None:
        return None
    if sel.threshold is not None:
        per_t = node.get("per_threshold") or {}
        node = next((v for k, v in per_t.items()
                     if math.isclose(float(k), sel.threshold, abs_tol=1e-9)), None)
        if node is None:
            return None
    if sel.category is not None:
        wanted = {normalize_name(c) for c in sel.category}
        per_c = node.get("per_category") or {}
        entry = next((v for k, v in sorted(per_c.items()) if normalize_name(k) in wanted), None)
    else:
        entry = node.get("overall")
    if not entry or entry.get("mean") is None:
        return None
    return Stat.from_summary(entry)
