"""Finds the run (and the number in its summary) that fills one table cell.

Runs are matched by their run.json fields, never by folder name. A cell asking for a real
dataset is filled by a run on that dataset, else by one on its synthetic twin (labelled as
such by the caller); among equal candidates the most recently finished run wins, then the
folder name, so the same store always gives the same table.

Training seeds: a results folder with ``seed-<n>/`` subfolders (what `bench reproduce` writes:
the first seed's runs in the folder itself, every other seed's in its own subfolder) gives
each cell that several seeds fill their mean, their spread and a pooled CI
(`bench.report.seeds`); a cell only the folder itself fills (reference rows, the human
benchmark) is that one run's.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.report.seeds import SeedSpread
from bench.report.specs import SYNTHETIC_TWIN, Sel
from bench.store import RunDir, iter_runs

SEED_FOLDER = re.compile(r"seed-(\d+)")


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
    run: Run                          # the first seed's run (the folder's own)
    stat: Stat                        # with several seeds: their mean and the pooled CI
    spread: SeedSpread | None = None  # several seeds: each one's value
    seed_runs: tuple[Run, ...] = ()   # every seed's run, the first one first


def normalize_name(s: str) -> str:
    """Category names compare case-, dash- and underscore-insensitively."""
    return " ".join(s.replace("_", " ").replace("-", " ").lower().split())


class StoreView:
    """All complete runs of one results folder (and of its ``seed-<n>`` subfolders), read
    once."""

    def __init__(self, results_dir: str | Path, seeds: bool = True):
        self.results_dir = Path(results_dir)
        self.runs: list[Run] = [Run(rd.path.name, rd.path, info, summary)
                                for rd, info, summary in iter_runs(self.results_dir)]
        self.seed_views: list[tuple[str, StoreView]] = []
        if seeds and self.results_dir.is_dir():
            subs = [p for p in self.results_dir.iterdir()
                    if p.is_dir() and SEED_FOLDER.fullmatch(p.name)]
            subs.sort(key=lambda p: int(SEED_FOLDER.fullmatch(p.name).group(1)))  # type: ignore
            self.seed_views = [(p.name, StoreView(p, seeds=False)) for p in subs]
        self._cache: dict[tuple[str, str], Any] = {}

    def candidates(self, sel: Sel) -> list[Run]:
        """Runs that match `sel` on every run-level field, best first."""
        out = [r for r in self.runs if _matches(r, sel)]
        out.sort(key=lambda r: (r.synthetic, _neg(str(r.info.get("finished") or "")), r.run_id))
        return out

    def find(self, sel: Sel) -> Found | None:
        """The cell's run and value; over every seed that fills it (see the module)."""
        each = self.find_each(sel)
        root = self.seed_labels[0]
        if root not in each:
            return None
        if len(each) == 1:
            return each[root]
        return self.pooled(sel, list(each.items()))

    def find_each(self, sel: Sel) -> dict[str, Found]:
        """Folder label -> the cell's run in that folder alone: this folder (the first seed)
        first, then each seed-<n> folder that has one."""
        out = {}
        for label, view in [(self.seed_labels[0], self)] + self.seed_views:
            found = view.find_one(sel)
            if found is not None:
                out[label] = found
        return out

    def find_one(self, sel: Sel) -> Found | None:
        """The cell's run in this folder alone."""
        for run in self.candidates(sel):
            stat = extract(run.summary, sel)
            if stat is not None:
                return Found(run, stat)
        return None

    @property
    def seed_labels(self) -> list[str]:
        """The folders of the seeds: this one (the first seed), then its seed-<n>."""
        return [self.results_dir.name or "."] + [label for label, _ in self.seed_views]

    def pooled(self, sel: Sel, founds: list[tuple[str, Found]]) -> Found:

        runs = [f.run for _, f in founds]
        spread = SeedSpread(tuple((label, f.stat.mean) for label, f in founds))
        means = [f.stat.mean for _, f in founds]
        mean = float(np.mean(means))
        lower = upper = None
        try:
            lower, upper = self.pooled_ci(sel, runs)
        except (KeyError, ValueError):  # rows without the columns the protocol needs
            lower = upper = None
        dms = [f.stat.dataset_mean for _, f in founds]
        dm = float(np.mean(dms)) if all(d is not None for d in dms) else None
        first = founds[0][1]
        return Found(first.run, Stat(mean, lower, upper, first.stat.n, dm), spread,
                     tuple(runs))

    def pooled_ci(self, sel: Sel, runs: list[Run]) -> tuple[float | None, float | None]:
        from bench.report import seeds

        if runs[0].info.get("task") != "classification" and sel.category is None:
            n_boot, boot_seed = seeds.bootstrap_settings(runs[0])
            got = seeds.category_replicates(self.unit_tables(sel, runs), n_boot, boot_seed)
            if got is None:
                return None, None
            lo, hi = seeds.overall_interval(got[1])
        else:
            reps = self.replicates(sel, runs)
            if reps is None:
                return None, None
            with np.errstate(invalid="ignore"):
                _, lo, hi = seeds.interval(reps.mean(axis=1))
        return (None if math.isnan(lo) else lo), (None if math.isnan(hi) else hi)

    def replicates(self, sel: Sel, runs: list[Run]) -> np.ndarray | None:
        """(n_boot, len(runs)): the cell's statistic of each run on the same resamples of the
        units they share (`bench.report.seeds`), at the first run's bootstrap settings."""
        from bench.report import seeds

        cats = (None if sel.category is None
                else tuple(normalize_name(c) for c in sel.category))
        n_boot, boot_seed = seeds.bootstrap_settings(runs[0])
        if runs[0].info.get("task") == "classification":
            return seeds.auroc_replicates([self.rows(r) for r in runs], cats, n_boot, boot_seed)
        return seeds.unit_replicates(self.unit_tables(sel, runs), cats, n_boot, boot_seed)

    def unit_tables(self, sel: Sel, runs: list[Run]) -> list:
        """Each run's protocol unit table of the cell's metric (read and built once per run)."""
        from bench.report import seeds

        key = seeds.metric_key(str(sel.metric), sel.threshold)
        return [self.table(r, key, self.rows(r)) for r in runs]

    def rows(self, run: Run):
        key = (str(run.path), "")
        if key not in self._cache:
            self._cache[key] = RunDir(run.path).read_rows()
        return self._cache[key]

    def table(self, run: Run, metric: str, rows):
        from bench.report import seeds

        key = (str(run.path), metric)
        if key not in self._cache:
            self._cache[key] = seeds.unit_table(run, metric, rows)
        return self._cache[key]

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
