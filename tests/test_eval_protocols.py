"""Protocol parity: each protocol against a literal re-implementation of the official pipeline.

The oracles below transcribe AFLoc `localization/{datasets,metrics,common}.py` (box_mapping,
box2mask, _resize_img, set_margin, norm_heatmap, compute_iou/dice/cnr, test, to_metric_df,
bootci) and CheXlocalize `eval.py` / `heatmap_to_segmentation.py` / `tune_heatmap_threshold.py`
step by step with per-sample Python loops. The official code ran on numpy 1.21, where a float32
map compared with a float64 threshold is compared in float32; the oracles cast explicitly.
"""

from __future__ import annotations

from functools import lru_cache
from math import ceil, floor

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from bench.errors import UsageError
from bench.eval.protocols import PROTOCOLS, get_protocol
from bench.eval.protocols.afloc import THRESHOLDS, margin_px
from bench.eval.protocols.chexlocalize import GRID, otsu_segmentation, pick_threshold
from bench.imaging.geometry import SQUARE, Frame, boxes_to_letterbox_mask, mask_to_letterbox
from bench.types import Finding, Sample


def official_bootci(df: pd.DataFrame, n_boot: int, seed: int | None):
    """The official replicate loop (as in test_eval_bootstrap): global np.random.choice per
    replicate, pandas NaN-skipping means, sorted-index bounds, NaN-skipping replicate mean."""
    if seed is not None:
        np.random.seed(seed)
    recs = []
    for _ in range(n_boot):
        rep = df.iloc[np.random.choice(len(df), size=len(df), replace=True)]
        recs.append({c: rep[c].mean() for c in df.columns})
    bs = pd.DataFrame.from_records(recs)
    out = {}
    for c in bs.columns:
        s = bs[c].sort_values()
        out[c] = (s.iloc[int(0.025 * len(s)) - 1], s.mean(), s.iloc[int(0.975 * len(s)) - 1])
    return bs, out


# ----------------------------------------------------------------------------- AFLoc oracle
def o_box_mapping(box, w, h, scale):
    size = (h, w)
    max_ind = size.index(max(size))
    box = np.array(box, dtype=np.float64)
    if max_ind == 0:
        pct = scale / float(size[0])
        other = int(float(size[1]) * pct)
        left, top = int(np.floor((scale - other) / 2)), 0
    else:
        pct = scale / float(size[1])
        other = int(float(size[0]) * pct)
        left, top = 0, int(np.floor((scale - other) / 2))
    box = box * pct
    box[0] = int(np.floor(box[0] + left))
    box[1] = int(np.floor(box[1] + top))
    box[2] = int(np.floor(box[2]))
    box[3] = int(np.floor(box[3]))
    return box.astype(np.int32)


def o_box2mask(box, w, h):
    m = np.zeros((h, w), dtype=np.uint8)
    m[box[1]:box[1] + box[3], box[0]:box[0] + box[2]] = 1
    return m


def o_resize_img(img, scale):
    size = img.shape
    max_ind = size.index(max(size))
    if max_ind == 0:
        desired = (scale, int(float(size[1]) * (scale / float(size[0]))))
    else:
        desired = (int(float(size[0]) * (scale / float(size[1]))), scale)
    r = cv2.resize(img, desired[::-1], interpolation=cv2.INTER_AREA)
    if max_ind == 0:
        pad = scale - r.shape[1]
        pads = [(0, 0), (int(np.floor(pad / 2)), int(np.ceil(pad / 2)))]
    else:
        pad = scale - r.shape[0]
        pads = [(int(np.floor(pad / 2)), int(np.ceil(pad / 2))), (0, 0)]
    return np.pad(r, pads, "constant", constant_values=0)


@lru_cache(maxsize=4)
def o_margin_nan(width=224, height=224, resize_size=512, crop_size=448):
    kept = int(crop_size * min(height, width) / resize_size)
    mw, mh = width - kept, height - kept
    pads = (floor(mw / 2), ceil(mw / 2), floor(mh / 2), ceil(mh / 2))
    return torch.isnan(F.pad(torch.zeros((kept, kept)), pads, value=float("nan"))).numpy()


def o_set_margin(sim):
    nan = o_margin_nan()  # the same mask for every map (the official recomputes it)
    sim = sim.copy()
    sim[nan] = np.nan
    return sim


def o_norm(h, nan, mode=0):
    h = h.copy()
    w = h[~nan]
    w = (w - w.min()) / (w.max() - w.min())
    if mode == 0:
        w = w * 2 - 1
    h[~nan] = w
    return h


def o_iou(gt, pre, nan):
    g, p = gt[~nan], pre[~nan]
    if np.sum(p) == 0 or np.sum(g) == 0:
        return np.nan
    return np.sum(np.logical_and(g, p)) / np.sum(np.logical_or(g, p))


def o_dice(gt, pre, nan):
    g, p = gt[~nan], pre[~nan]
    if np.sum(p) == 0 or np.sum(g) == 0:
        return np.nan
    return 2 * np.sum(np.logical_and(g, p)) / (np.sum(p) + np.sum(g))


def o_cnr(gt, heat, nan):
    h = o_norm(heat, nan)
    hw, gw = h[~nan], gt[~nan]
    a, b = hw[gw == 1], hw[gw == 0]
    if a.var() + b.var() == 0:
        return 0
    # numpy 1.21 (the official runtime): pow(float32 scalar, 0.5) promotes to float64
    return np.float64(a.mean() - b.mean()) / np.power(np.float64(a.var() + b.var()), 0.5)


def o_metric_df(cat_vals):
    cols = list(cat_vals)
    n = sum(len(v) for v in cat_vals.values())
    data = np.full((n, len(cols)), np.nan)
    i = 0
    for j, k in enumerate(cols):
        for v in cat_vals[k]:
            data[i, j] = v
            i += 1
    return pd.DataFrame(data, columns=cols)


def o_afloc_test(items, n_boot, per_threshold_iou_boot):
    """`Pipeline.test` + `bootci` on items (hmap 224, gtmask, category); returns CIs/means."""
    np.random.seed(0)
    thr_dfs = {"iou": [], "cnr": [], "dice": []}
    per_t_ci, per_t_macro, per_t_cat = {}, {"iou": [], "cnr": [], "dice": []}, {}
    for t in list(np.arange(0.1, 0.6, 0.1)):
        cats = {"iou": {}, "cnr": {}, "dice": {}}
        for hmap, gt, cat in items:
            hm = o_set_margin(hmap)
            nan = np.isnan(hm)
            heat = o_norm(hm, nan)
            mask = np.where(heat > np.float32(t), 1, 0)  # numpy 1.21 value-based casting
            for m, v in (("iou", o_iou(gt, mask, nan)), ("cnr", o_cnr(gt, heat, nan)),
                         ("dice", o_dice(gt, mask, nan))):
                cats[m].setdefault(cat, []).append(v)
        for m in cats:
            df = o_metric_df(cats[m])
            thr_dfs[m].append(df)
            per_t_macro[m].append(np.nanmean([np.nanmean(v) for v in cats[m].values()]))
            per_t_cat[(m, round(t, 1))] = {k: np.nanmean(v) for k, v in cats[m].items()}
        if per_threshold_iou_boot:
            per_t_ci[round(t, 1)] = official_bootci(thr_dfs["iou"][-1], n_boot, None)[1]
    avg_ci = {}
    for m in ("iou", "cnr", "dice"):
        total = thr_dfs[m][0]
        for d in thr_dfs[m][1:]:
            total = total.add(d, fill_value=0)
        avg_ci[m] = official_bootci(total / len(thr_dfs[m]), n_boot, None)[1]
    return per_t_ci, avg_ci, per_t_macro, per_t_cat


def afloc_items(rng, n):
    samples, findings, grids, oracle = [], [], [], []
    for i in range(n):
        h, w = int(rng.integers(200, 420)), int(rng.integers(200, 420))
        boxes = []
        for _ in range(int(rng.integers(1, 3))):
            x, y = rng.uniform(0, w * 0.5), rng.uniform(0, h * 0.5)
            boxes.append([x, y, rng.uniform(10, w * 0.4), rng.uniform(10, h * 0.4)])
        cat = ["Pneumonia", "Edema", "Atelectasis"][int(rng.integers(0, 3))]
        grid = rng.normal(size=(19, 19)).astype(np.float32)
        s = Sample(id=f"img{i}", image=None, meta={"hw": (h, w)})
        f = Finding(pathology=cat, query_id=f"q{i}", boxes=np.array(boxes))
        samples.append(s)
        findings.append(f)
        grids.append(grid)
        gt = None
        for b in boxes:  # official merge: masks of one phrase are summed
            m = o_box2mask(o_box_mapping(b, w, h, 224), 224, 224)
            gt = m if gt is None else gt + m
        hmap = F.interpolate(torch.from_numpy(grid)[None, None], size=(224, 224),
                             mode="bilinear", align_corners=False)[0, 0].numpy()
        oracle.append((hmap, gt, cat))
    return samples, findings, grids, oracle


def test_thresholds_margin_grid():
    assert [round(t, 1) for t in THRESHOLDS] == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert margin_px() == (14, 14)
    assert len(GRID) == 7 and round(GRID[-1], 1) == 0.8


def test_box_and_mask_mapping_match_official():
    rng = np.random.default_rng(0)
    for _ in range(40):
        h, w = int(rng.integers(50, 3000)), int(rng.integers(50, 3000))
        box = [rng.uniform(0, w / 2), rng.uniform(0, h / 2), rng.uniform(1, w / 2),
               rng.uniform(1, h / 2)]
        want = o_box2mask(o_box_mapping(box, w, h, 224), 224, 224)
        np.testing.assert_array_equal(boxes_to_letterbox_mask(np.array([box]), (h, w)), want)
    for dtype in (np.float32, np.uint8):
        m = np.zeros((310, 257), np.uint8)
        m[40:43, 10:200] = 1
        m[100:180, 30:31] = 1
        want = (o_resize_img(m.astype(dtype), 224) >= 1e-5).astype(np.uint8)
        np.testing.assert_array_equal(mask_to_letterbox(m, 224, 1e-5, dtype), want)


@pytest.mark.parametrize("stream", ["ms-cxr", "plain"])
def test_afloc_protocol_equals_official_pipeline(stream):
    rng = np.random.default_rng(11)
    samples, findings, grids, oracle = afloc_items(rng, 36)
    proto = get_protocol("afloc", stream=stream)
    rows = []
    for s, f, g in zip(samples, findings, grids):
        rows += proto.localization_rows(s, [f], [g], Frame(), [None])
    rows = pd.DataFrame(rows)
    n_boot = 60
    summ = proto.summarize(rows, n_boot=n_boot, seed=0)
    per_t_ci, avg_ci, per_t_macro, per_t_cat = o_afloc_test(oracle, n_boot, stream == "ms-cxr")
    for m in ("iou", "cnr", "dice"):
        res = summ["metrics"][m]
        for cat, (lo, mean, hi) in avg_ci[m].items():
            e = res["per_category"][cat]
            assert (e["lower"], e["mean"], e["upper"]) == pytest.approx((lo, mean, hi),
                                                                        abs=1e-12)
        want_overall = np.mean([list(v) for v in avg_ci[m].values()], axis=0)
        got = res["overall"]
        assert (got["lower"], got["mean"], got["upper"]) == pytest.approx(
            tuple(want_overall), abs=1e-12)
        assert got["dataset_mean"] == pytest.approx(np.mean(per_t_macro[m]), abs=1e-12)
        for j, t in enumerate([0.1, 0.2, 0.3, 0.4, 0.5]):
            pt = res["per_threshold"][f"{t:.1f}"]
            assert pt["overall"]["dataset_mean"] == pytest.approx(per_t_macro[m][j], abs=1e-12)
            for cat, v in per_t_cat[(m, t)].items():
                assert pt["per_category"][cat]["dataset_mean"] == pytest.approx(v, abs=1e-12)
    if stream == "ms-cxr":
        for t, cis in per_t_ci.items():
            for cat, (lo, mean, hi) in cis.items():
                e = summ["metrics"]["iou"]["per_threshold"][f"{t:.1f}"]["per_category"][cat]
                assert (e["lower"], e["mean"], e["upper"]) == pytest.approx((lo, mean, hi),
                                                                            abs=1e-12)
    assert summ["bootstrap"]["draws"][:3 if stream == "plain" else 8][-3:] == [
        "iou@avg", "cnr@avg", "dice@avg"]


def test_afloc_rows_carry_sufficient_statistics():
    rng = np.random.default_rng(12)
    samples, findings, grids, oracle = afloc_items(rng, 4)
    proto = get_protocol("afloc")
    rows = pd.DataFrame(proto.localization_rows(samples[0], findings[:1], grids[:1], Frame(),
                                                [None]))
    assert rows.loc[0, "n_pixels"] == 196 * 196
    for t in ("0.1", "0.3", "0.5"):
        r = rows.loc[0]
        assert r[f"union@{t}"] == r[f"pred@{t}"] + r["gt"] - r[f"inter@{t}"]
        if not np.isnan(r[f"iou@{t}"]):
            assert r[f"iou@{t}"] == r[f"inter@{t}"] / r[f"union@{t}"]


def test_unknown_protocol_and_option():
    assert set(PROTOCOLS) == {"afloc", "chexlocalize", "medklip-rsna"}
    with pytest.raises(UsageError):
        get_protocol("nope")
    with pytest.raises(UsageError):
        get_protocol("afloc", bogus=1)


# ------------------------------------------------------------------------ CheXlocalize oracle
def o_upsample(grid, hw):
    return F.interpolate(torch.from_numpy(grid)[None, None], size=hw, mode="bilinear",
                         align_corners=False)


def o_threshold_seg(cam, threshold):
    m = cam.squeeze() - cam.squeeze().min()
    m = m.div(m.max()).numpy()
    return np.array(m > np.float32(threshold), dtype="int")  # numpy 1.21: float32 compare


def o_calc_iou(pred, gt, true_pos_only):
    inter, union = np.logical_and(pred, gt), np.logical_or(pred, gt)
    if true_pos_only:
        if np.sum(pred) == 0 or np.sum(gt) == 0:
            return np.nan
    elif np.sum(union) == 0:
        return np.nan
    return np.sum(inter) / np.sum(union)


def chex_items(rng, n, tasks=("Edema", "Cardiomegaly")):
    items = []
    for i in range(n):
        h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        per = {}
        for t in tasks:
            gt = np.zeros((h, w), np.uint8)
            if rng.random() < 0.6:
                y, x = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
                gt[y:y + int(rng.integers(5, h // 2)), x:x + int(rng.integers(5, w // 2))] = 1
            per[t] = (gt, rng.normal(size=(12, 12)).astype(np.float32))
        items.append((f"patient{i:03d}_study1_view1_frontal", (h, w), per))
    return items


def chex_rows(proto, items):
    rows = []
    for sid, hw, per in reversed(items):  # evaluator order need not be sorted
        s = Sample(id=sid, image=None, meta={"hw": hw})
        fs = [Finding(pathology=t, query_id=t, mask=g) for t, (g, _) in per.items()]
        rows += proto.localization_rows(s, fs, [m for _, m in per.values()],
                                        Frame(kind=SQUARE, size=12), [None] * len(fs))
    return pd.DataFrame(rows)


def test_chexlocalize_tuning_and_eval_equal_official():
    rng = np.random.default_rng(21)
    val, test = chex_items(rng, 25), chex_items(rng, 30)
    proto = get_protocol("chexlocalize")
    summ = proto.summarize(chex_rows(proto, test), n_boot=80, seed=0,
                           tuning_rows=chex_rows(proto, val))
    tasks = sorted(["Edema", "Cardiomegaly"])
    # tune_heatmap_threshold.py (GT json = CXRs with a positive task)
    best = {}
    for task in tasks:
        mious = []
        for t in np.arange(0.2, 0.8, 0.1):
            ious = []
            for _, hw, per in val:
                if not any(g.any() for g, _ in per.values()):
                    ious.append(np.nan)
                    continue
                gt, grid = per[task]
                ious.append(o_calc_iou(o_threshold_seg(o_upsample(grid, hw), t), gt, True))
            mious.append(np.nanmean(np.array(ious)))
        best[task] = round(np.arange(0.2, 0.8, 0.1)[mious.index(max(mious))], 1)
    assert summ["thresholds"] == best
    # eval.py: IoU table over GT CXRs sorted by id, one bootstrap run per metric (seed 0)
    gt_items = sorted([it for it in test if any(g.any() for g, _ in it[2].values())])
    ious = {t: [] for t in tasks}
    hits = {t: [] for t in tasks}
    for _, hw, per in gt_items:
        for t in tasks:
            gt, grid = per[t]
            cam = o_upsample(grid, hw)
            ious[t].append(o_calc_iou(o_threshold_seg(cam, best[t]), gt, True))
            sal = cam.squeeze().numpy()
            y, x = np.unravel_index(np.argmax(sal, axis=None), sal.shape)
            hits[t].append(1 if gt[y][x] == 1 else (np.nan if gt.sum() == 0 else 0))
    for metric, table in (("iou", ious), ("hit", hits)):
        df = pd.DataFrame(table)
        _, ci = official_bootci(df, 80, 0)
        for t in tasks:
            e = summ["metrics"][metric]["per_category"][t]
            lo, mean, hi = ci[t]
            assert (e["lower"], e["mean"], e["upper"]) == pytest.approx((lo, mean, hi),
                                                                        abs=1e-12)
            assert e["dataset_mean"] == pytest.approx(df[t].mean(), abs=1e-12)


def test_chexlocalize_all_cxr_mode_and_gate():
    rng = np.random.default_rng(22)
    items = chex_items(rng, 20)
    proto = get_protocol("chexlocalize", thresholds={"Edema": 0.5, "Cardiomegaly": 0.5},
                         true_pos_only=False, prob_cutoff=0.5)
    rows = chex_rows(proto, items)
    rows["prob"] = np.where(np.arange(len(rows)) % 3 == 0, 0.2, 0.9)
    ious = proto.row_ious(rows, {"Edema": 0.5, "Cardiomegaly": 0.5})
    for i, r in rows.iterrows():
        sid_items = {s: per for s, _, per in items}
        gt, grid = sid_items[r.sample_id][r.pathology]
        hw = gt.shape
        pred = (np.zeros(hw) if r.prob < 0.5 else
                o_threshold_seg(o_upsample(grid, hw), 0.5))
        want = o_calc_iou(pred, gt, False)
        assert (np.isnan(want) and np.isnan(ious[i])) or ious[i] == pytest.approx(want, abs=0)
    summ = proto.summarize(rows, n_boot=20, seed=0)
    assert summ["bootstrap"]["n_units"]["iou"] == len(items)  # every CXR in all-CXR mode


def test_chexlocalize_user_thresholds_off_the_grid_are_used_exactly():
    # official: `mask > threshold` with the CSV's value; 0.45 must not become 0.5 (or 0.4)
    rng = np.random.default_rng(23)
    items = chex_items(rng, 15)
    th = {"Edema": 0.45, "Cardiomegaly": 0.35}
    proto = get_protocol("chexlocalize", thresholds=th)
    rows = chex_rows(proto, items)
    ious = proto.row_ious(rows, th)
    sid_items = {s: per for s, _, per in items}
    for i, r in rows.iterrows():
        gt, grid = sid_items[r.sample_id][r.pathology]
        want = o_calc_iou(o_threshold_seg(o_upsample(grid, gt.shape), th[r.pathology]), gt, True)
        assert (np.isnan(want) and np.isnan(ious[i])) or ious[i] == pytest.approx(want, abs=0)
    # hand-worked: a 4x4 ramp 0..15 (min-max v/15), GT the bottom two rows (v = 8..15):
    # > 0.45 keeps v >= 7 (9 pixels, IoU 8/9); > 0.35 keeps v >= 6 (IoU 8/10)
    gt = np.zeros((4, 4), np.uint8)
    gt[2:] = 1
    ramp = np.arange(16, dtype=np.float32).reshape(4, 4)
    s = Sample(id="patient1_study1_view1_frontal", image=None, meta={"hw": (4, 4)})
    for t, want in ((0.45, 8 / 9), (0.35, 0.8), (0.5, 8 / 8)):
        p = get_protocol("chexlocalize", thresholds={"Edema": t})
        r = pd.DataFrame(p.localization_rows(s, [Finding("Edema", "Edema", mask=gt)], [ramp],
                                             Frame(kind=SQUARE, size=4), [None]))
        assert p.row_ious(r, {"Edema": t})[0] == pytest.approx(want, abs=1e-15), t


def test_paired_comparison_scores_each_run_at_its_val_thresholds():
    # CheXlocalize thresholds are tuned on val; a comparison must not re-tune them on test
    from bench.eval.compare import paired_comparison

    proto = get_protocol("chexlocalize")
    rng = np.random.default_rng(31)
    val, test = chex_items(rng, 20), chex_items(rng, 25)
    summ, rows = {}, {}
    for name in ("a", "b"):
        maps = np.random.default_rng({"a": 98, "b": 99}[name])
        v = [(i, hw, {t: (g, maps.normal(size=(12, 12)).astype(np.float32))
                      for t, (g, _) in per.items()}) for i, hw, per in val]
        te = [(i, hw, {t: (g, maps.normal(size=(12, 12)).astype(np.float32))
                       for t, (g, _) in per.items()}) for i, hw, per in test]
        rows[name] = chex_rows(proto, te)
        summ[name] = proto.summarize(rows[name], n_boot=50, seed=0,
                                     tuning_rows=chex_rows(proto, v))
        # the situation the rule is for: test rows alone would pick other thresholds
        test_pick = {t: e["threshold"] for t, e in proto.tune(rows[name]).items()}
        assert test_pick != summ[name]["thresholds"], name
    out = paired_comparison(rows["a"], rows["b"], proto, "iou", n_boot=50, seed=0,
                            decided_a=summ["a"], decided_b=summ["b"])
    for name in ("a", "b"):
        per = summ[name]["metrics"]["iou"]["per_category"]
        want = np.mean([e["dataset_mean"] for e in per.values()])
        assert out[name] == pytest.approx(want, abs=1e-12)


def test_pick_threshold_python_max_semantics():
    assert pick_threshold([0.1, 0.3, 0.3, 0.2, 0.0, 0.0, 0.0]) == 0.3  # first max
    assert pick_threshold([float("nan"), 0.5, 0.1, 0, 0, 0, 0]) == 0.2  # leading NaN wins
    assert pick_threshold([0.1, float("nan"), 0.4, 0, 0, 0, 0.9]) == 0.8  # NaN skipped later


def o_otsu(cam):
    m = cam.squeeze() - cam.squeeze().min()
    m = m.div(m.max()).numpy()
    m = np.uint8(255 * m)
    th = cv2.threshold(m, 0, np.max(m), cv2.THRESH_OTSU)[1]
    cnts = cv2.findContours(th, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    cnts = cnts[0] if len(cnts) == 2 else cnts[1]
    from PIL import Image, ImageDraw

    img = Image.new("1", (m.shape[1], m.shape[0]))
    for c in cnts:
        if len(c) > 1:
            ImageDraw.Draw(img).polygon([(p[0][0], p[0][1]) for p in c], outline=1, fill=1)
    return np.array(img, dtype="int")


def test_otsu_segmentation_matches_official():
    rng = np.random.default_rng(23)
    for _ in range(5):
        cam = o_upsample(rng.normal(size=(10, 10)).astype(np.float32), (70, 90))
        norm = cam.squeeze() - cam.squeeze().min()
        norm = norm.div(norm.max()).numpy()
        np.testing.assert_array_equal(otsu_segmentation(norm), o_otsu(cam))


def test_empty_rows_give_an_empty_summary():
    for name in ("afloc", "chexlocalize"):
        out = get_protocol(name).summarize(pd.DataFrame(), n_boot=1000, seed=0)
        assert out["n_rows"] == 0 and out["metrics"] == {}
        assert out["bootstrap"]["ci_index"] == [24, 974]


def o_tune_probability_threshold(items, probs):
    """`tune_probability_threshold.py` + the `idxmax` that `heatmap_to_segmentation.py` applies
    to its CSV: per task, Otsu masks kept when prob > cutoff, all-CXR IoU, rounded mIoU."""
    records = []
    for task in sorted({t for _, _, per in items for t in per}):
        # "For Lung Lesion the search starts at 0.1" (its val set has one segmentation)
        cutoffs = np.arange(0.1, .9, .1) if task == "Lung Lesion" else np.arange(0, .9, .1)
        for c in cutoffs:
            ious = []
            for sid, hw, per in items:
                gt, grid = per[task]
                pred = (o_otsu(o_upsample(grid, hw)) if probs[(sid, task)] > c
                        else np.zeros(hw))
                ious.append(o_calc_iou(pred, gt, False))
            records.append({"prob_threshold": round(c, 1),
                            "mIoU": round(round(np.nanmean(np.array(ious)), 3), 3),
                            "task": task})
    df = pd.DataFrame(records)
    best = df.loc[df.groupby(["task"])["mIoU"].agg("idxmax")]
    return {r.task: r.prob_threshold for r in best.itertuples()}, df


def test_chexlocalize_probability_cutoffs_tuned_on_val_as_official():
    rng = np.random.default_rng(31)
    val, test = chex_items(rng, 30), chex_items(rng, 25)
    # informative probabilities on a 0.05 grid (0.3 and 0.6 hit the cutoffs' edges); the two
    # splits reuse CXR ids, so each has its own table
    def draw(items):
        return {(sid, t): float(rng.choice([0.3, 0.45, 0.6, 0.9] if per[t][0].any() else
                                           [0.05, 0.2, 0.3, 0.6]))
                for sid, _, per in items for t in per}

    p_val, p_test = draw(val), draw(test)
    proto = get_protocol("chexlocalize", method="otsu", prob_cutoff="tune")
    assert proto.tuning_split == "val" and proto.wants_probs

    def rows_of(items, probs):
        rows = chex_rows(proto, items)
        rows["prob"] = [probs[(s, t)] for s, t in zip(rows["sample_id"], rows["pathology"])]
        return rows

    val_rows, test_rows = rows_of(val, p_val), rows_of(test, p_test)
    want, table = o_tune_probability_threshold(val, p_val)
    tuned = proto.tune_prob_cutoffs(val_rows)
    assert {t: v["cutoff"] for t, v in tuned.items()} == want
    for t, v in tuned.items():
        np.testing.assert_array_equal(v["miou"], table[table.task == t]["mIoU"].to_numpy())
    assert all(w > 0 for w in want.values())  # gating pays off on these probabilities
    # the threshold method tunes its cutoffs on Otsu masks too, as the official script does
    thr = get_protocol("chexlocalize", prob_cutoff="tune")
    thr_rows = chex_rows(thr, val)
    thr_rows["prob"] = val_rows["prob"].to_numpy()
    assert {t: v["cutoff"] for t, v in thr.tune_prob_cutoffs(thr_rows).items()} == want

    summ = proto.summarize(test_rows, n_boot=20, seed=0, tuning_rows=val_rows)
    assert summ["prob_cutoffs"] == want
    for task, cut in want.items():
        ious = []
        for sid, hw, per in sorted(test):
            gt, grid = per[task]
            if not any(g.any() for g, _ in per.values()):
                continue  # not in the GT file: outside the true-positive table
            pred = (np.zeros(hw) if p_test[(sid, task)] < cut  # `pkl_to_mask`: prob < cutoff
                    else o_otsu(o_upsample(grid, hw)))
            ious.append(o_calc_iou(pred, gt, True))
        got = summ["metrics"]["iou"]["per_category"][task]["dataset_mean"]
        assert got == pytest.approx(np.nanmean(ious), abs=1e-12)


def test_lung_lesion_cutoff_search_starts_at_0_1():
    rng = np.random.default_rng(41)
    items = chex_items(rng, 12, tasks=("Lung Lesion", "Edema"))
    proto = get_protocol("chexlocalize", method="otsu", prob_cutoff="tune")
    rows = chex_rows(proto, items)
    rows["prob"] = 0.05  # only the 0.0 cutoff keeps any mask
    want, _ = o_tune_probability_threshold(items, {(sid, t): 0.05 for sid, _, per in items
                                                   for t in per})
    tuned = proto.tune_prob_cutoffs(rows)
    assert want == {"Edema": 0.0, "Lung Lesion": 0.1}
    assert {t: v["cutoff"] for t, v in tuned.items()} == want
    assert len(tuned["Lung Lesion"]["miou"]) == 8 and len(tuned["Edema"]["miou"]) == 9


def test_chexlocalize_rejects_unknown_cutoff_word():
    with pytest.raises(UsageError, match="prob_cutoff"):
        get_protocol("chexlocalize", prob_cutoff="best")


def test_cutoff_search_rounds_miou_as_numpy_does():
    """`round(np.nanmean(ious), 3)` rounds a numpy float half-to-even after scaling: 0.0125 ->
    0.012 (Python's `round` on the float would give 0.013)."""
    rows = pd.DataFrame({"pathology": ["Edema", "Edema"], "gt": [40, 0], "prob": [0.9, 0.9],
                         "inter@otsu": [1, 0], "pred@otsu": [1, 5]})
    proto = get_protocol("chexlocalize", method="otsu", prob_cutoff="tune")
    tuned = proto.tune_prob_cutoffs(rows)["Edema"]
    assert tuned["miou"][0] == 0.012 and tuned["cutoff"] == 0.0
