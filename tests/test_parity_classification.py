"""Parity of the classification summary with AFLoc `classification/metrics.py:bootstrap`.

AFLoc's SIIM test list (`classification/DatasetsSplits/SIIM_Pneumothorax/test_list.txt`) repeats
the line of an image once per RLE row; `SIIM.__init__` appends every line, so a repeated image
is several evaluation samples (drawn independently by the bootstrap, counted twice by the AUROC).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.utils import resample

from bench.eval.summary import summarize_classification


def official_bootstrap(y: np.ndarray, s: np.ndarray, n_boot: int):
    """AFLoc's loop: resample(idx, random_state=i); AUROC (NaN on one class); 4-dec rounding
    is left out (the harness stores unrounded values)."""
    idx = np.arange(len(y))
    reps = []
    for i in range(n_boot):
        j = resample(idx, replace=True, random_state=i)
        try:
            reps.append(roc_auc_score(y[j], s[j]))
        except ValueError:
            reps.append(np.nan)
    srt = pd.Series(reps).sort_values()
    lo, hi = int(0.025 * n_boot) - 1, int(0.975 * n_boot) - 1
    return srt.iloc[lo], srt.mean(), srt.iloc[hi], roc_auc_score(y, s)


def test_repeated_list_lines_are_separate_samples():
    # test_list lines: image id, label; "b" and "d" are listed twice (two RLE rows each)
    lines = [("a", 0), ("b", 1), ("b", 1), ("c", 0), ("d", 1), ("d", 1), ("e", 0), ("f", 1),
             ("g", 0), ("h", 0), ("i", 1), ("j", 0)]
    score = {"a": 0.2, "b": 0.7, "c": 0.4, "d": 0.3, "e": 0.5, "f": 0.9, "g": 0.1, "h": 0.6,
             "i": 0.35, "j": 0.3}
    rows = pd.DataFrame([{"sample_id": sid, "pathology": "Pneumothorax", "label": lab,
                          "score": score[sid]} for sid, lab in lines])
    y = np.array([lab for _, lab in lines])
    s = np.array([score[sid] for sid, _ in lines])
    lo, mean, hi, full = official_bootstrap(y, s, 200)
    summ = summarize_classification(rows, n_boot=200, seed=0)
    e = summ["metrics"]["auroc"]["per_category"]["Pneumothorax"]
    assert e["dataset_mean"] == pytest.approx(full, abs=1e-12)
    assert (e["lower"], e["mean"], e["upper"]) == pytest.approx((lo, mean, hi), abs=1e-12)
    assert e["n"] == len(lines) and summ["n_samples"] == len(lines)
    # hand check of the full-data AUROC: 5 positives x 6 negatives, ties count 1/2
    pos = s[y == 1]
    neg = s[y == 0]
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    assert full == pytest.approx(wins / (len(pos) * len(neg)), abs=1e-15)
