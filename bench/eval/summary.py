"""The summary.json schema (written by the evaluator) and the classification summary.

Every metric entry has five keys: ``mean`` (the bootstrap mean, as the official scripts
report), ``lower``/``upper`` (sorted-index percentile bounds), ``dataset_mean`` (the plain mean
over the data, the number the papers' tables print when they do not bootstrap) and ``n``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bench.errors import DataError
from bench.eval.bootstrap import Interval, ci_indices, intervals, quiet
from bench.eval.metrics import auroc, seeded_auroc_replicates

SCHEMA = 1
NAN = float("nan")


def entry(mean: float, lower: float, upper: float, dataset_mean: float, n: int) -> dict[str, Any]:
    return {"mean": float(mean), "lower": float(lower), "upper": float(upper),
            "dataset_mean": float(dataset_mean), "n": int(n)}


def interval_entry(iv: Interval, dataset_mean: float, n: int) -> dict[str, Any]:
    return entry(iv.mean, iv.lower, iv.upper, dataset_mean, n)


def skeleton(task: str, protocol: str, n_rows: int, n_samples: int, n_boot: int, seed: int,
             unit: str, **bootstrap_extra: Any) -> dict[str, Any]:
    """The summary.json frame; `metrics` is filled by the protocol."""
    lo, hi = ci_indices(n_boot) if n_boot > 0 else (None, None)
    boot = {"n": int(n_boot), "seed": int(seed), "unit": unit, "ci_index": [lo, hi]}
    boot.update(bootstrap_extra)
    return {"schema": SCHEMA, "task": task, "protocol": protocol, "n_rows": int(n_rows),
            "n_samples": int(n_samples), "bootstrap": boot, "metrics": {}}


def mean_entry(entries: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """Average of per-category entries key by key, NaN skipped (the official category-mean row)."""
    def avg(key: str) -> float:
        vals = np.array([e[key] for e in entries], dtype=np.float64)
        with quiet():
            return float(np.nanmean(vals)) if len(vals) else NAN
    return entry(avg("mean"), avg("lower"), avg("upper"), avg("dataset_mean"), n)


def require_columns(rows: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in rows.columns]
    if missing:
        raise DataError(f"{what} rows lack columns {missing}")


def evaluation_units(rows: pd.DataFrame) -> np.ndarray:
    """One unit per evaluated image occurrence, in evaluation order.

    A sample id repeated in the rows (AFLoc's SIIM test list repeats an image once per RLE
    row, and the official dataset appends every line) is a separate sample there: the k-th
    row of (sample_id, pathology) belongs to unit "sample_id#k".
    """
    sid = rows["sample_id"].astype(str)
    occ = rows.groupby([sid, rows["pathology"].astype(str)], sort=False).cumcount()
    return (sid + "#" + occ.astype(str)).to_numpy()


def summarize_classification(rows: pd.DataFrame, n_boot: int, seed: int) -> dict[str, Any]:
    """Per-pathology AUROC with AFLoc's classification bootstrap, plus their mean.

    AFLoc (`classification/metrics.py:bootstrap`) resamples images with
    ``sklearn.utils.resample(idx, replace=True, random_state=i)`` for replicate i = 0..999 (its
    ``np.random.seed(97)`` draws nothing), computes each class's AUROC (NaN for a one-class
    replicate) and their plain mean ``avg`` (NaN if any class is NaN), then takes sorted-index
    bounds and the NaN-skipping mean. Here replicate i uses ``random_state = seed + i``, so
    seed 0 is the official scheme. `overall` is the ``avg`` column; its `dataset_mean` is the
    mean of the per-class AUROCs on all images. Unrounded (the official rounds to 4 decimals).
    Rows: sample_id, pathology, label (0/1; NaN = unlabelled, ignored), score; a repeated
    sample id is a repeated sample (`evaluation_units`), as in AFLoc's SIIM list.
    """
    require_columns(rows, ["sample_id", "pathology", "label", "score"], "classification")
    units = evaluation_units(rows)
    sids = pd.unique(units)
    paths = sorted(pd.unique(rows["pathology"].astype(str)))
    srow = pd.Index(sids).get_indexer(units)
    pcol = pd.Index(paths).get_indexer(rows["pathology"].astype(str))
    n, k = len(sids), len(paths)
    labels = np.full((n, k), np.nan)
    scores = np.full((n, k), np.nan)
    labels[srow, pcol] = rows["label"].to_numpy(dtype=np.float64)
    scores[srow, pcol] = rows["score"].to_numpy(dtype=np.float64)
    labels[np.isnan(scores)] = np.nan

    out = skeleton("classification", "classification", len(rows), n, n_boot, seed, "image",
                   scheme="sklearn.resample(random_state=seed+i)")
    filled = np.where(np.isnan(scores), 0.0, scores)
    reps = seeded_auroc_replicates(labels, filled, seed + np.arange(n_boot))
    full = np.full(k, np.nan)
    per_cat = {}
    for j, p in enumerate(paths):
        full[j] = auroc(labels[:, j], scores[:, j])
        iv = intervals(reps[:, j])[0]
        per_cat[p] = interval_entry(iv, full[j], int((~np.isnan(labels[:, j])).sum()))
    avg = reps.mean(axis=1) if k else np.full(n_boot, np.nan)
    overall = interval_entry(intervals(avg)[0], float(np.mean(full)) if k else NAN, n)
    out["metrics"]["auroc"] = {"overall": overall, "per_category": per_cat}
    return out
