"""Paired AUROC comparison against a plain per-replicate sklearn loop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.utils import resample

from bench.eval.compare_auroc import paired_auroc


def _rows(ids, paths, labels, scores):
    return pd.DataFrame({"sample_id": ids, "pathology": paths, "label": labels, "score": scores})


def test_paired_auroc_matches_a_sklearn_loop_with_shared_resamples():
    rng = np.random.default_rng(3)
    n = 60
    ids = [f"s{i:03d}" for i in range(n)] * 2
    paths = ["A"] * n + ["B"] * n
    y = (rng.random(2 * n) < 0.4).astype(int)
    sa = y * 0.6 + rng.random(2 * n)
    sb = rng.random(2 * n)
    out = paired_auroc(_rows(ids, paths, y, sa), _rows(ids, paths, y, sb), n_boot=200, seed=0)
    diffs = []
    for i in range(200):
        idx = resample(np.arange(n), replace=True, random_state=i)
        vals = []
        for sc in (sa, sb):
            per = []
            for k in range(2):
                yy, ss = y[k * n:(k + 1) * n][idx], sc[k * n:(k + 1) * n][idx]
                per.append(roc_auc_score(yy, ss) if len(set(yy)) == 2 else np.nan)
            vals.append(np.mean(per))
        diffs.append(vals[0] - vals[1])
    diffs = np.sort(np.array(diffs))
    assert out["mean"] == pytest.approx(np.nanmean(diffs), abs=1e-12)
    assert out["lower"] == pytest.approx(diffs[int(0.025 * 200) - 1], abs=1e-12)
    assert out["upper"] == pytest.approx(diffs[int(0.975 * 200) - 1], abs=1e-12)
    full = [roc_auc_score(y[k * n:(k + 1) * n], sa[k * n:(k + 1) * n]) for k in range(2)]
    assert out["value_a"] == pytest.approx(np.mean(full), abs=1e-12)
    p = min(1.0, 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0)))
    assert out["p_value"] == pytest.approx(p)


def test_identical_methods_differ_by_zero_with_p_one():
    y = np.array([0, 1, 0, 1, 1, 0, 0, 1])
    s = np.linspace(0, 1, 8)
    r = _rows([f"i{k}" for k in range(8)], ["P"] * 8, y, s)
    out = paired_auroc(r, r.copy(), n_boot=50, seed=0)
    assert out["diff"] == 0.0 and out["lower"] == 0.0 and out["upper"] == 0.0
    assert out["p_value"] == 1.0
