"""Classification summary against sklearn's loop, and the paired comparison against a loop."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.utils import resample

from bench.eval.compare import paired_comparison
from bench.eval.protocols import get_protocol
from bench.eval.summary import summarize_classification


def class_rows(rng, n, paths=("Pneumonia", "Pneumothorax")):
    rows = []
    for i in range(n):
        for p in paths:
            rows.append({"sample_id": f"s{i}", "pathology": p,
                         "label": int(rng.random() < 0.3), "score": round(rng.random(), 2)})
    return pd.DataFrame(rows)


def test_classification_summary_equals_official_sklearn_loop():
    rng = np.random.default_rng(0)
    df = class_rows(rng, 120)
    summ = summarize_classification(df, n_boot=100, seed=0)
    paths = ["Pneumonia", "Pneumothorax"]
    ids = [f"s{i}" for i in range(120)]
    y = df.pivot(index="sample_id", columns="pathology", values="label").loc[ids, paths]
    s = df.pivot(index="sample_id", columns="pathology", values="score").loc[ids, paths]
    y, s = y.to_numpy(), s.to_numpy()
    boot = []
    for i in range(100):  # AFLoc classification/metrics.py:bootstrap
        j = resample(np.arange(120), replace=True, random_state=i)
        aucs = [roc_auc_score(y[j, c], s[j, c]) for c in range(2)]
        boot.append(aucs + [np.mean(aucs)])
    boot = pd.DataFrame(boot)
    for c, entry in [(0, summ["metrics"]["auroc"]["per_category"]["Pneumonia"]),
                     (1, summ["metrics"]["auroc"]["per_category"]["Pneumothorax"]),
                     (2, summ["metrics"]["auroc"]["overall"])]:
        srt = boot[c].sort_values()
        assert entry["lower"] == pytest.approx(srt.iloc[1], abs=1e-12)
        assert entry["upper"] == pytest.approx(srt.iloc[96], abs=1e-12)
        assert entry["mean"] == pytest.approx(srt.mean(), abs=1e-12)
    assert summ["metrics"]["auroc"]["per_category"]["Pneumonia"]["dataset_mean"] == \
        pytest.approx(roc_auc_score(y[:, 0], s[:, 0]), abs=1e-12)
    assert summ["bootstrap"]["ci_index"] == [1, 96]
    json.dumps(summ, allow_nan=True)


def afloc_rows(rng, n, cats=("A", "B")):
    rows = []
    for i in range(n):
        r = {"sample_id": f"s{i // 2}", "query_id": f"q{i % 2}", "pathology": cats[i % 2],
             "positive": True, "gt": 100, "gt_sum": 100, "cnr": float(rng.normal())}
        for t in ("0.1", "0.2", "0.3", "0.4", "0.5"):
            pred = int(rng.integers(0, 200))
            inter = int(rng.integers(0, min(pred, 100) + 1))
            r.update({f"inter@{t}": inter, f"pred@{t}": pred, f"union@{t}": pred + 100 - inter})
        rows.append(r)
    return pd.DataFrame(rows)


def test_paired_comparison_identical_methods():
    rng = np.random.default_rng(1)
    df = afloc_rows(rng, 40)
    out = paired_comparison(df, df, "afloc", "iou", n_boot=200, seed=0)
    assert out["diff"] == 0 and out["lower"] == 0 and out["upper"] == 0
    assert out["p_value"] == 1.0 and out["n"] == 40


def test_paired_comparison_equals_loop_with_shared_indices():
    rng = np.random.default_rng(2)
    a, b = afloc_rows(rng, 30), afloc_rows(rng, 30)
    b = b.iloc[::-1].reset_index(drop=True)  # alignment is by unit, not by position
    out = paired_comparison(a, b, get_protocol("afloc"), "cnr", n_boot=120, seed=3)
    key = ["sample_id", "query_id"]
    a2 = a.sort_values(key).reset_index(drop=True)
    b2 = b.set_index(key).loc[list(zip(a2.sample_id, a2.query_id))].reset_index()
    np.random.seed(3)
    diffs = []
    for _ in range(120):
        j = np.random.choice(30, size=30, replace=True)
        ra, rb = a2.iloc[j], b2.iloc[j]
        diffs.append(ra.groupby("pathology").cnr.mean().mean()
                     - rb.groupby("pathology").cnr.mean().mean())
    d = np.sort(diffs)
    assert out["lower"] == pytest.approx(d[int(0.025 * 120) - 1], abs=1e-12)
    assert out["upper"] == pytest.approx(d[int(0.975 * 120) - 1], abs=1e-12)
    assert out["mean"] == pytest.approx(np.mean(diffs), abs=1e-12)
    p = min(1.0, 2 * min(np.mean(np.array(diffs) <= 0), np.mean(np.array(diffs) >= 0)))
    assert out["p_value"] == pytest.approx(p, abs=1e-15)
    assert out["diff"] == pytest.approx(
        a.groupby("pathology").cnr.mean().mean() - b.groupby("pathology").cnr.mean().mean(),
        abs=1e-12)


# -- issue 18, item 15: a CI that cannot be estimated says so ---------------------------------

def test_ci_not_estimable_is_printed_as_such():
    """NaN replicates sort last, so on tiny sets a category's upper bound is NaN, and the
    overall row (the mean of the categories' bounds) can come out with upper < lower."""
    from bench.cli.format import fmt_ci
    from bench.eval.summary import entry, mean_entry

    a = entry(0.7, 0.6, float("nan"), 0.7, 3)  # upper NaN: too few positives
    b = entry(0.15, 0.1, 0.2, 0.15, 9)
    overall = mean_entry([a, b], 12)
    assert overall["upper"] < overall["lower"]  # (0.35, 0.2): the official average
    assert fmt_ci(overall) == "0.425 (CI not estimable)"
    assert fmt_ci(a) == "0.700 (CI not estimable)"
    assert fmt_ci(b) == "0.150 (0.100, 0.200)"


def test_fewer_than_40_replicates_place_no_bound():
    """The official lower index int(0.025 n) - 1 is -1 below 40 replicates: the largest
    replicate, not a bound."""
    from bench.eval.bootstrap import intervals

    reps = np.arange(20, dtype=float)[:, None]
    (iv,) = intervals(reps)
    assert np.isnan(iv.lower) and np.isnan(iv.upper) and iv.mean == 9.5
    (iv,) = intervals(np.arange(40, dtype=float)[:, None])
    assert (iv.lower, iv.upper) == (0.0, 38.0)
