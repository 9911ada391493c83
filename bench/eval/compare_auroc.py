"""Paired bootstrap comparison of two classifiers' AUROC on the same images.

Both methods' scores are aligned on (evaluation unit, pathology), where a repeated sample id is
a repeated unit as in `summarize_classification`; every replicate resamples units with the
indices AFLoc's classification bootstrap uses (`sklearn.resample(random_state=seed + i)`), the
same for both methods, and compares the mean AUROC over pathologies.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bench.eval.bootstrap import intervals, quiet
from bench.eval.metrics import auroc, seeded_auroc_replicates
from bench.eval.summary import evaluation_units


def _matrix(rows: pd.DataFrame, sids: pd.Index, paths: list[str], col: str) -> np.ndarray:
    out = np.full((len(sids), len(paths)), np.nan)
    r = sids.get_indexer(evaluation_units(rows))
    c = pd.Index(paths).get_indexer(rows["pathology"].astype(str))
    ok = (r >= 0) & (c >= 0)
    out[r[ok], c[ok]] = rows[col].to_numpy(np.float64)[ok]
    return out


def paired_auroc(rows_a: pd.DataFrame, rows_b: pd.DataFrame, n_boot: int, seed: int
                 ) -> dict[str, Any]:
    """diff = mean AUROC(a) - mean AUROC(b) with its paired bootstrap CI and two-sided p-value."""
    units_b = set(evaluation_units(rows_b))
    sids = pd.Index([u for u in pd.unique(evaluation_units(rows_a)) if u in units_b])
    paths = sorted(set(rows_a["pathology"].astype(str)) & set(rows_b["pathology"].astype(str)))
    labels = _matrix(rows_a, sids, paths, "label")
    sa, sb = _matrix(rows_a, sids, paths, "score"), _matrix(rows_b, sids, paths, "score")
    n, k = len(sids), len(paths)
    full_a = [auroc(labels[:, j], sa[:, j]) for j in range(k)]
    full_b = [auroc(labels[:, j], sb[:, j]) for j in range(k)]
    out: dict[str, Any] = {"metric": "auroc", "n": n, "n_boot": n_boot, "seed": seed,
                           "value_a": float(np.mean(full_a)) if k else np.nan,
                           "value_b": float(np.mean(full_b)) if k else np.nan}
    out["diff"] = out["value_a"] - out["value_b"]
    if n_boot <= 0 or n == 0 or k == 0:
        return {**out, "mean": np.nan, "lower": np.nan, "upper": np.nan, "p_value": np.nan}
    filled = np.nan_to_num(np.concatenate([sa, sb], axis=1))
    reps = seeded_auroc_replicates(np.concatenate([labels, labels], axis=1), filled,
                                   seed + np.arange(n_boot))
    d = (reps[:, :k] - reps[:, k:]).sum(axis=1) / k
    iv = intervals(d)[0]
    ok = d[~np.isnan(d)]
    with quiet():
        p = min(1.0, 2 * min(np.mean(ok <= 0), np.mean(ok >= 0))) if len(ok) else np.nan
    return {**out, "mean": iv.mean, "lower": iv.lower, "upper": iv.upper, "p_value": float(p)}
