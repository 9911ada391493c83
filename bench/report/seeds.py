"""One table cell over several training seeds: the mean, the across-seed spread, a pooled CI.

`bench reproduce` evaluates each training seed's checkpoint into its own results folder
(``results/`` for the first seed, ``results/seed-<n>/`` for the others), because the same run
ids made with another checkpoint cannot share a folder. A bootstrap CI over test images says
nothing about how much a result moves when the model is retrained, so a cell that every seed
fills shows:

- the value: the mean over seeds of each seed's own table value (its summary, exactly as a
  single-seed table shows it);
- the spread: the across-seed standard deviation (ddof 1), with the seeds' values kept;
- the pooled 95% CI: one set of bootstrap resamples of the test units, the same for every seed
  (the paired design `bench run` uses to compare two runs), the cell's statistic computed for
  each seed on each resample and averaged over seeds; percentile bounds at the official
  positions. Localization units are each protocol's own (`Protocol.unit_table`: AFLoc's
  (image, query) rows, CheXlocalize's CXRs) and the statistic a category's NaN-skipping mean;
  an overall cell is combined as both protocols' summaries combine categories: the mean of the
  per-category bounds (not the CI of the mean over categories, which is narrower).
  Classification resamples images with AFLoc's ``random_state = seed + i`` scheme, the
  statistic the mean AUROC over pathologies (the official overall column). Only units every
  seed scored are resampled. The resamples are drawn afresh for the cell, so with one seed they
  are not the draws of the run's own summary.

The pooled CI is not an official protocol's number (no official code trains several seeds);
with one seed nothing changes and the official CI is shown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.eval.bootstrap import bootstrap_nanmeans, intervals, official_stream, quiet


@dataclass(frozen=True)
class SeedSpread:
    """A cell's values over its seeds (folder label -> value) and their spread."""

    values: tuple[tuple[str, float], ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def sd(self) -> float:
        x = np.array([v for _, v in self.values], dtype=np.float64)
        return float(np.std(x, ddof=1)) if len(x) > 1 else math.nan

    @property
    def low(self) -> float:
        return min(v for _, v in self.values)

    @property
    def high(self) -> float:
        return max(v for _, v in self.values)


def metric_key(metric: str, threshold: float | None) -> str:
    """The unit-table metric name of a cell ("iou", "iou@0.3")."""
    if threshold is None:
        return metric
    from bench.eval.protocols.afloc import tlabel

    return f"{metric}@{tlabel(threshold)}"


def category_replicates(tables: list[pd.DataFrame], n_boot: int,
                        seed: int) -> tuple[list[Any], np.ndarray] | None:
    """(categories, (n_boot, len(tables), categories)): each table's per-category NaN-skipping
    mean on each of the same resamples of the units every table has (AFLoc's legacy stream
    `RandomState(seed)`), categories aligned by name (the union; NaN where a table lacks one);
    None when nothing can be resampled."""
    units = tables[0].index
    for t in tables[1:]:
        units = units.intersection(t.index)
    units = units.sort_values()
    cats = list(dict.fromkeys(c for t in tables for c in t.columns))
    if len(units) == 0 or n_boot <= 0 or not cats:
        return None
    values = np.concatenate([t.reindex(index=units, columns=cats).to_numpy(np.float64)
                             for t in tables], axis=1)
    reps = bootstrap_nanmeans(official_stream(seed), len(units), n_boot, values)
    return cats, reps.reshape(n_boot, len(tables), len(cats))


def unit_replicates(tables: list[pd.DataFrame], categories: tuple[str, ...] | None,
                    n_boot: int, seed: int) -> np.ndarray | None:
    """(n_boot, len(tables)): each table's macro statistic on the resamples of
    `category_replicates`. `categories`: the accepted names of one category column
    (normalized), else the mean over all of a table's categories."""
    from bench.report.store_view import normalize_name

    got = category_replicates(tables, n_boot, seed)
    if got is None:
        return None
    cats, reps = got
    out = np.empty((n_boot, len(tables)))
    for i, t in enumerate(tables):
        cols = list(t.columns)
        if categories is not None:
            cols = [c for c in cols if normalize_name(str(c)) in categories][:1]
        if not cols:
            return None
        with quiet():
            out[:, i] = np.nanmean(reps[:, i, [cats.index(c) for c in cols]], axis=1)
    return out


def overall_interval(reps: np.ndarray) -> tuple[float, float]:
    """The localization protocols' overall row from (n_boot, seeds, categories) replicates:
    each category's interval of the seed-mean, then the mean of the categories' bounds (NaN
    skipped), as their summaries average the per-category entries."""
    with quiet():
        ivs = intervals(np.nanmean(reps, axis=1))
        lower = float(np.nanmean([iv.lower for iv in ivs]))
        upper = float(np.nanmean([iv.upper for iv in ivs]))
    return lower, upper


def auroc_replicates(rows: list[pd.DataFrame], categories: tuple[str, ...] | None,
                     n_boot: int, seed: int) -> np.ndarray | None:
    """The same for classification: images every run scored, AFLoc's resampling scheme
    (replicate i uses `random_state = seed + i`), the mean AUROC over the pathologies."""
    from bench.eval.metrics import seeded_auroc_replicates
    from bench.eval.summary import evaluation_units
    from bench.report.store_view import normalize_name

    common = None
    for r in rows:
        u = set(evaluation_units(r))
        common = u if common is None else common & u
    first_units = pd.unique(evaluation_units(rows[0]))
    sids = pd.Index([u for u in first_units if u in (common or set())])
    paths = sorted(set.intersection(*(set(r["pathology"].astype(str)) for r in rows)))
    if categories is not None:
        paths = [p for p in paths if normalize_name(p) in categories][:1]
    n, k = len(sids), len(paths)
    if n == 0 or k == 0 or n_boot <= 0:
        return None
    labels, scores = [], []
    for r in rows:
        lab = np.full((n, k), np.nan)
        sc = np.full((n, k), np.nan)
        ri = sids.get_indexer(evaluation_units(r))
        ci = pd.Index(paths).get_indexer(r["pathology"].astype(str))
        ok = (ri >= 0) & (ci >= 0)
        lab[ri[ok], ci[ok]] = r["label"].to_numpy(np.float64)[ok]
        sc[ri[ok], ci[ok]] = r["score"].to_numpy(np.float64)[ok]
        lab[np.isnan(sc)] = np.nan
        labels.append(lab)
        scores.append(np.nan_to_num(sc))
    reps = seeded_auroc_replicates(np.concatenate(labels, axis=1),
                                   np.concatenate(scores, axis=1), seed + np.arange(n_boot))
    return reps.reshape(n_boot, len(rows), k).mean(axis=2)


def interval(stat: np.ndarray | None) -> tuple[float, float, float]:
    """(replicate mean, lower, upper) at the official positions; NaN without replicates."""
    if stat is None:
        return math.nan, math.nan, math.nan
    iv = intervals(stat)[0]
    return iv.mean, iv.lower, iv.upper


def unit_table(run: Any, metric: str, rows: pd.DataFrame) -> pd.DataFrame:
    """The run's protocol unit table of `metric`, scored at what its own summary decided."""
    from bench.eval.protocols import get_protocol

    info = run.info
    proto = get_protocol(info["protocol"], **{"dataset": info.get("dataset"),
                                               "prompt": info.get("prompt"),
                                               **(info.get("protocol_options") or {})})
    return proto.unit_table(rows, metric, decided=run.summary)


def bootstrap_settings(run: Any) -> tuple[int, int]:
    """(n_boot, seed) of the run's own bootstrap (summary.json `bootstrap`)."""
    boot = run.summary.get("bootstrap") or {}
    return int(boot.get("n", 1000)), int(boot.get("seed", 0))
