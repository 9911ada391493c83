"""AFLoc `test()` summary details: the threshold-averaged table (`reduce(DataFrame.add(
fill_value=0)) / 5`) when a row is NaN at only some thresholds, and `bootci`'s rounding
(`compute_cis` rounds lower/mean/upper to 3 decimals, the category-mean row is the mean of
those, rounded again).
"""

from __future__ import annotations

from functools import reduce

import numpy as np
import pandas as pd

from bench.eval.protocols import get_protocol

try:
    from tests.test_eval_protocols import o_metric_df
except ImportError:  # tests/ is not always a package
    from test_eval_protocols import o_metric_df

TH = ("0.1", "0.2", "0.3", "0.4", "0.5")


def rows_with_partial_nans():
    """Hand-made count rows: row r1 has an empty prediction at 0.4 and 0.5 only."""
    spec = [  # sample, category, gt, per-threshold (inter, pred)
        ("r0", "A", 50, [(40, 100), (35, 80), (30, 60), (25, 40), (20, 30)]),
        ("r1", "A", 40, [(10, 50), (8, 30), (5, 10), (0, 0), (0, 0)]),
        ("r2", "B", 30, [(30, 90), (28, 70), (25, 50), (20, 30), (15, 20)]),
        ("r3", "A", 20, [(0, 10), (0, 5), (0, 3), (0, 2), (0, 1)]),
        ("r4", "B", 60, [(50, 200), (45, 150), (40, 100), (30, 50), (20, 25)]),
        ("r5", "B", 10, [(9, 12), (8, 9), (6, 6), (4, 4), (2, 2)]),
    ]
    rows = []
    for sid, cat, gt, per in spec:
        r = {"sample_id": sid, "query_id": "q", "pathology": cat, "positive": True,
             "gt": gt, "gt_sum": gt, "cnr": 0.5}
        for t, (inter, pred) in zip(TH, per):
            r.update({f"inter@{t}": inter, f"pred@{t}": pred,
                      f"union@{t}": pred + gt - inter})
        rows.append(r)
    return pd.DataFrame(rows), spec


def o_bootci(df, n_boot):
    recs = []
    for _ in range(n_boot):
        rep = df.iloc[np.random.choice(len(df), size=len(df), replace=True)]
        recs.append({c: rep[c].mean() for c in df.columns})
    bs = pd.DataFrame.from_records(recs)
    records = []
    for c in bs.columns:
        s = bs[c].sort_values()
        records.append({"name": c,
                        "lower": s.iloc[int(0.025 * len(s)) - 1].round(3),
                        "mean": round(s.mean(), 3),
                        "upper": s.iloc[int(0.975 * len(s)) - 1].round(3)})
    ci = pd.DataFrame.from_records(records).sort_values(by="name")
    mean_row = ci[["lower", "mean", "upper"]].mean(axis=0)
    return ci.set_index("name"), mean_row.round(3)


def test_partial_nan_rows_average_with_fill_value_zero_and_rounding():
    rows, spec = rows_with_partial_nans()
    per_t = []
    for j in range(5):
        cats: dict = {}
        for _, cat, gt, per in spec:
            inter, pred = per[j]
            iou = np.nan if pred == 0 or gt == 0 else inter / (pred + gt - inter)
            cats.setdefault(cat, []).append(iou)
        per_t.append(o_metric_df(cats))
    avg = reduce(lambda x, y: x.add(y, fill_value=0), per_t) / 5
    # r1 (row 1 of category A): (10/80 + 8/62 + 5/45 + 0 + 0) / 5, not a mean over 3
    assert avg.loc[1, "A"] == (10 / 80 + 8 / 62 + 5 / 45) / 5
    np.random.seed(0)
    ci, mean_row = o_bootci(avg, 200)
    proto = get_protocol("afloc", official_rounding=True)
    summ = proto.summarize(rows, n_boot=200, seed=0)
    iou = summ["metrics"]["iou"]
    for cat in ("A", "B"):
        e = iou["per_category"][cat]
        assert (e["lower"], e["mean"], e["upper"]) == tuple(ci.loc[cat, ["lower", "mean",
                                                                         "upper"]])
    got = iou["overall"]
    assert (got["lower"], got["mean"], got["upper"]) == tuple(mean_row)
    tab = proto.unit_table(rows, "iou")
    np.testing.assert_allclose(tab.to_numpy(), avg.to_numpy(), rtol=0, atol=1e-15)
