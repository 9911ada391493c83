"""The afloc protocol's CheXlocalize path against a transcription of AFLoc's `--opt_th`
evaluation (`localization/common.py:get_opt_th`, `test_use_opt_th`; run.sh passes
`--margin --opt_th --only_pos` for CHEXLOCALIZE).

Official flow, one process, `np.random.seed(0)` once: get_opt_th on val (mask threshold on the
[0, 1] map over np.arange(0.2, 0.8, 0.1) by only_pos mIoU; confidence threshold over
np.arange(0.1, 0.9, 0.1) by IoU with only_pos=False; CSVs rounded to 3 decimals), then
test_use_opt_th on val (bootci) and on test (bootci): the test CI uses the draws after val's.
"""

from __future__ import annotations

from math import ceil, floor

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from bench.eval.protocols import get_protocol
from bench.imaging.geometry import Frame
from bench.types import Finding, Sample

CATS = ["Edema", "Cardiomegaly", "Atelectasis"]


def o_margin(sim):
    kept = int(448 * 224 / 512)
    pads = (floor((224 - kept) / 2), ceil((224 - kept) / 2)) * 2
    nan = torch.isnan(F.pad(torch.zeros((kept, kept)), pads, value=float("nan"))).numpy()
    sim = sim.copy()
    sim[nan] = np.nan
    return sim


def o_norm01(h, nan):
    h = h.copy()
    w = h[~nan]
    h[~nan] = (w - w.min()) / (w.max() - w.min())
    return h


def o_iou(gt, pre, nan, only_pos):
    g, p = gt[~nan], pre[~nan]
    inter, union = np.logical_and(g, p), np.logical_or(g, p)
    if only_pos:
        if np.sum(p) == 0 or np.sum(g) == 0:
            return np.nan
    elif np.sum(union) == 0:
        return np.nan
    return np.sum(inter) / np.sum(union)


def o_confidence(hmap, nan):
    clip = np.clip(hmap[~nan], 0, 2)
    return np.max((clip - 0) / (2 - 0))


def o_cat_means(cats, vals):
    d = {}
    for c, v in zip(cats, vals):
        d.setdefault(c, []).append(v)
    return {k: np.nanmean(v) for k, v in d.items()}


def o_get_opt_th(items):
    cats = [c for _, _, c in items]
    rows_a = []
    for t in np.arange(0.2, 0.8, 0.1):
        vals = []
        for hmap, gt, _ in items:
            h = o_margin(hmap)
            nan = np.isnan(h)
            mask = np.where(o_norm01(h, nan) > np.float32(t), 1, 0)  # numpy 1.21 compare
            vals.append(o_iou(gt, mask, nan, True))
        rows_a.append(o_cat_means(cats, vals))
    df = pd.DataFrame(rows_a)
    grid = np.arange(0.2, 0.8, 0.1)
    mask_th = dict(zip(df.columns, np.round(grid[df.values.argmax(axis=0)], 3)))
    rows_b = []
    conf_grid = np.arange(0.1, 0.9, 0.1)
    for t in conf_grid:
        vals = []
        for hmap, gt, cat in items:
            h = o_margin(hmap)
            nan = np.isnan(h)
            heat = o_norm01(h, nan)
            if o_confidence(h, nan) < t:
                mask = np.zeros_like(heat)
            else:
                mask = np.where(heat > np.float32(mask_th[cat]), 1, 0)
            vals.append(o_iou(gt, mask, nan, False))
        rows_b.append(o_cat_means(cats, vals))
    df = pd.DataFrame(rows_b)
    conf_th = dict(zip(df.columns, np.round(conf_grid[df.values.argmax(axis=0)], 3)))
    return mask_th, conf_th


def o_test_use_opt_th(items, mask_th, conf_th, n_boot):
    cat_ious: dict = {}
    for hmap, gt, cat in items:
        h = o_margin(hmap)
        nan = np.isnan(h)
        heat = o_norm01(h, nan)
        if o_confidence(h, nan) < conf_th[cat]:
            mask = np.zeros_like(heat)
        else:
            mask = np.where(heat > np.float32(mask_th[cat]), 1, 0)
        cat_ious.setdefault(cat, []).append(o_iou(gt, mask, nan, True))
    cols = list(cat_ious)  # to_metric_df: category blocks in first-appearance order
    n = sum(len(v) for v in cat_ious.values())
    data = np.full((n, len(cols)), np.nan)
    i = 0
    for j, c in enumerate(cols):
        for v in cat_ious[c]:
            data[i, j] = v
            i += 1
    df = pd.DataFrame(data, columns=cols)
    recs = []
    for _ in range(n_boot):  # bootci -> bootstrap_metric, global stream
        rep = df.iloc[np.random.choice(len(df), size=len(df), replace=True)]
        recs.append({c: rep[c].mean() for c in cols})
    bs = pd.DataFrame.from_records(recs)
    ci = {}
    for c in cols:
        srt = bs[c].sort_values()
        ci[c] = (srt.iloc[int(0.025 * n_boot) - 1], srt.mean(), srt.iloc[int(0.975 * n_boot) - 1])
    macro = np.nanmean([np.nanmean(v) for v in cat_ious.values()])
    return ci, macro


def make_items(rng, n):
    samples, items = [], []
    for i in range(n):
        cat = CATS[int(rng.integers(0, 3))]
        grid = (rng.normal(size=(19, 19)) * rng.uniform(0.3, 2.5)).astype(np.float32)
        gt = np.zeros((224, 224), np.uint8)
        if rng.random() < 0.7:
            y, x = int(rng.integers(10, 120)), int(rng.integers(10, 120))
            gt[y:y + int(rng.integers(20, 90)), x:x + int(rng.integers(20, 90))] = 1
        hmap = F.interpolate(torch.from_numpy(grid)[None, None], size=(224, 224),
                             mode="bilinear", align_corners=False)[0, 0].numpy()
        items.append((hmap, gt, cat))
        s = Sample(id=f"patient{i}_study1_view1_frontal", image=None, meta={"hw": (224, 224)})
        samples.append((s, Finding(cat, f"q{i}", mask=gt, positive=bool(gt.any())), grid))
    return samples, items


def rows_of(proto, samples):
    rows = []
    for s, f, g in samples:
        rows += proto.localization_rows(s, [f], [g], Frame(), [None])
    return pd.DataFrame(rows)


def test_opt_th_equals_official_val_then_test():
    rng = np.random.default_rng(31)
    val_s, val_items = make_items(rng, 40)
    test_s, test_items = make_items(rng, 45)
    proto = get_protocol("afloc", dataset="chexlocalize")
    assert proto.opt_th and proto.tuning_split == "val"
    n_boot = 50
    np.random.seed(0)
    mask_th, conf_th = o_get_opt_th(val_items)
    val_ci, val_macro = o_test_use_opt_th(val_items, mask_th, conf_th, n_boot)
    test_ci, test_macro = o_test_use_opt_th(test_items, mask_th, conf_th, n_boot)

    val_rows, test_rows = rows_of(proto, val_s), rows_of(proto, test_s)
    s_val = proto.summarize(val_rows, n_boot=n_boot, seed=0)
    s_test = proto.summarize(test_rows, n_boot=n_boot, seed=0, tuning_rows=val_rows)
    for summ in (s_val, s_test):
        assert {c: v["mask"] for c, v in summ["opt_th"].items()} == pytest.approx(mask_th)
        assert {c: v["confidence"] for c, v in summ["opt_th"].items()} == pytest.approx(conf_th)
    assert len(set(conf_th.values())) > 1 or len(set(mask_th.values())) > 1
    for summ, ci, macro in ((s_val, val_ci, val_macro), (s_test, test_ci, test_macro)):
        res = summ["metrics"]["iou"]
        for c, (lo, mean, hi) in ci.items():
            e = res["per_category"][c]
            assert (e["lower"], e["mean"], e["upper"]) == pytest.approx((lo, mean, hi),
                                                                        abs=1e-12)
        assert res["overall"]["dataset_mean"] == pytest.approx(macro, abs=1e-12)
        want = np.mean([list(v) for v in ci.values()], axis=0)
        got = res["overall"]
        assert (got["lower"], got["mean"], got["upper"]) == pytest.approx(tuple(want),
                                                                          abs=1e-12)
    # paired comparisons read the same IoU: at the thresholds the summary chose on val
    table = proto.unit_table(test_rows, "iou", decided=s_test)
    assert np.nanmean(np.nanmean(table.to_numpy(), axis=0)) == pytest.approx(test_macro,
                                                                              abs=1e-12)
    table = proto.unit_table(test_rows, "iou", tuning_rows=val_rows)
    assert np.nanmean(np.nanmean(table.to_numpy(), axis=0)) == pytest.approx(test_macro,
                                                                              abs=1e-12)


def test_opt_th_only_for_chexlocalize_by_default():
    assert not get_protocol("afloc", dataset="rsna").opt_th
    assert get_protocol("afloc", dataset="synthetic-chexlocalize").opt_th
    assert not get_protocol("afloc", dataset="chexlocalize", opt_th=False).opt_th
