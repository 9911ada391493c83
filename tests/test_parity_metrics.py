"""Per-sample metric parity under the official code's numpy (1.21, legacy scalar promotion).

AFLoc `compute_cnr` ends with ``(meanA - meanA_) / pow(varA + varA_, 0.5)`` on numpy float32
scalars. Under numpy 1.x a float32 scalar raised to a Python float is a float64, so the CNR is
float64(float32 difference) / float64 sqrt; numpy 2 (NEP 50) would keep float32. The expected
values below were produced by running a literal transcription of `norm_heatmap` +
`compute_cnr` under numpy 1.26.4 (legacy promotion, as 1.21) on these exact inputs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.eval.metrics import minmax, signed_cnr
from bench.eval.protocols import get_protocol

OFFICIAL_CNR = [-0.07245734004577709, 0.04949995709683274, -0.03672655544505289,
                -0.0601560156160086]


def cases():
    rng = np.random.default_rng(20261128)
    out = []
    for k in range(4):
        heat = (rng.normal(size=(40, 40)) * (k + 1) + k).astype(np.float32)
        heat[:3] = np.nan
        heat[:, :2] = np.nan
        gt = np.zeros((40, 40), np.uint8)
        gt[8 + k:25, 5:30 - k] = 1
        gt[12:14, 5:9] = 2  # summed-box overlap: in neither region
        out.append((heat, gt))
    return out


def test_cnr_equals_numpy_1_official_values():
    for (heat, gt), want in zip(cases(), OFFICIAL_CNR):
        nan = np.isnan(heat)
        v = minmax(heat[~nan], "pm1")  # test(): norm_heatmap(mode=0), then compute_cnr
        assert signed_cnr(v, gt[~nan]) == want


def test_cnr_category_means_accumulate_in_float64():
    """`dict_mean` over lists of float64 CNRs: float64 means (not float32)."""
    vals = np.array([0.1234567891, 0.2345678912, np.nan, 0.3456789123])
    rows = []
    for i, v in enumerate(vals):
        r = {"sample_id": f"s{i}", "query_id": "q", "pathology": "A", "positive": True,
             "gt": 10, "gt_sum": 10, "cnr": v}
        for t in ("0.1", "0.2", "0.3", "0.4", "0.5"):
            r.update({f"inter@{t}": 5, f"pred@{t}": 10, f"union@{t}": 15})
        rows.append(r)
    summ = get_protocol("afloc").summarize(pd.DataFrame(rows), n_boot=0, seed=0)
    want = float(np.nanmean(vals))  # float64, as np.nanmean of a float64 list
    cnr = summ["metrics"]["cnr"]
    assert cnr["per_threshold"]["0.1"]["per_category"]["A"]["dataset_mean"] == want
    assert cnr["per_threshold"]["0.1"]["overall"]["dataset_mean"] == want
    assert cnr["overall"]["dataset_mean"] == pytest.approx(want, abs=1e-16)
