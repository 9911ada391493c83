"""Per-sample metrics against brute-force pixel loops, sklearn, and hand-worked NaN cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import roc_auc_score

from bench.eval.metrics import (
    BOTH_EMPTY_NAN,
    EITHER_EMPTY_NAN,
    auroc,
    auroc_replicates,
    dice_from_counts,
    iou_from_counts,
    minmax,
    pointing_hit,
    seeded_auroc_replicates,
    signed_cnr,
    threshold_counts,
)


def brute_counts(values, gt, t):
    inter = pred = g = 0
    for v, y in zip(values.ravel().tolist(), gt.ravel().tolist()):
        p = v > np.float32(t)
        pred += int(p)
        g += int(y != 0)
        inter += int(p and y != 0)
    return inter, pred, g, pred + g - inter


def brute_iou(pred, gt, rule):
    inter = union = sp = sg = 0
    for p, g in zip(pred.ravel().tolist(), gt.ravel().tolist()):
        inter += int(bool(p) and bool(g))
        union += int(bool(p) or bool(g))
        sp += int(bool(p))
        sg += int(bool(g))
    if rule == EITHER_EMPTY_NAN and (sp == 0 or sg == 0):
        return math.nan
    if union == 0:
        return math.nan
    return inter / union


def brute_cnr64(values, gt):
    a = [float(v) for v, g in zip(values, gt) if g == 1]
    b = [float(v) for v, g in zip(values, gt) if g == 0]
    if not a or not b:
        return math.nan
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / len(a)
    vb = sum((x - mb) ** 2 for x in b) / len(b)
    if va + vb == 0:
        return 0.0
    return (ma - mb) / math.sqrt(va + vb)


def test_threshold_counts_match_pixel_loop():
    rng = np.random.default_rng(1)
    v = rng.uniform(-1, 1, 600).astype(np.float32)
    v[:5] = np.float32(0.3)  # exactly on a threshold: not above it (float32 comparison)
    g = (rng.random(600) < 0.3).astype(np.uint8)
    ts = np.arange(0.1, 0.6, 0.1)
    c = threshold_counts(v, g, ts)
    for j, t in enumerate(ts):
        inter, pred, gg, union = brute_counts(v, g, t)
        assert (c["inter"][j], c["pred"][j], c["gt"], c["union"][j]) == (inter, pred, gg, union)


def test_float32_threshold_comparison_as_numpy_1_21():
    v = np.array([np.float32(0.3)], dtype=np.float32)  # 0.30000001192... > 0.3 in float64
    assert threshold_counts(v, np.array([1]), [0.30000000000000004])["pred"][0] == 0


def test_iou_dice_nan_rules_hand_worked():
    # GT 3 px, prediction 4 px, overlap 1 -> IoU 1/6, Dice 2/7
    assert iou_from_counts(1, 6, 4, 3, EITHER_EMPTY_NAN) == pytest.approx(1 / 6, abs=0)
    assert dice_from_counts(1, 4, 3, rule=EITHER_EMPTY_NAN) == pytest.approx(2 / 7, abs=0)
    # empty prediction, GT 3 px: AFLoc only_pos / CheXlocalize true_pos_only -> NaN; all-CXR -> 0
    assert np.isnan(iou_from_counts(0, 3, 0, 3, EITHER_EMPTY_NAN))
    assert iou_from_counts(0, 3, 0, 3, BOTH_EMPTY_NAN) == 0.0
    assert np.isnan(dice_from_counts(0, 0, 3, rule=EITHER_EMPTY_NAN))
    assert dice_from_counts(0, 0, 3, rule=BOTH_EMPTY_NAN) == 0.0
    # empty GT, prediction 4 px
    assert np.isnan(iou_from_counts(0, 4, 4, 0, EITHER_EMPTY_NAN))
    assert iou_from_counts(0, 4, 4, 0, BOTH_EMPTY_NAN) == 0.0
    # both empty: NaN under every rule
    assert np.isnan(iou_from_counts(0, 0, 0, 0, BOTH_EMPTY_NAN))
    assert np.isnan(dice_from_counts(0, 0, 0, rule=BOTH_EMPTY_NAN))


def test_dice_counts_summed_box_twos():
    # AFLoc MS-CXR: two boxes overlapping in 2 px -> GT values 1,1,2,2,1; prediction = all 5
    gt = np.array([1, 1, 2, 2, 1, 0, 0])
    v = np.array([1, 1, 1, 1, 1, -1, -1], dtype=np.float32)
    c = threshold_counts(v, gt, [0.1])
    assert (c["gt"], c["gt_sum"]) == (5, 7)
    # official: 2 * sum(logical_and) / (sum(pred) + sum(gt)) = 10 / (5 + 7)
    assert dice_from_counts(c["inter"], c["pred"], c["gt"], c["gt_sum"])[0] == 10 / 12
    assert iou_from_counts(c["inter"], c["union"], c["pred"], c["gt"])[0] == 1.0


def official_cnr(gt2d, heat2d, nan2d):
    """Literal transcription of AFLoc `compute_cnr` + `norm_heatmap(mode=0)` (float32 maps,
    numpy 1.21 scalar promotion in the last step)."""
    h = heat2d.copy()
    w = h[~nan2d]
    w = (w - w.min()) / (w.max() - w.min())
    w = w * 2 - 1
    h[~nan2d] = w
    hw, gw = h[~nan2d], gt2d[~nan2d]
    a, b = hw[gw == 1], hw[gw == 0]
    va, vb = a.var(), b.var()
    if va + vb == 0:
        return 0
    # numpy 1.21 (the official runtime): pow(float32 scalar, 0.5) promotes to float64
    return np.float64(a.mean() - b.mean()) / np.power(np.float64(va + vb), 0.5)


def test_cnr_equals_official_transcription_and_brute_force():
    rng = np.random.default_rng(2)
    for _ in range(5):
        heat = rng.normal(size=(40, 40)).astype(np.float32)
        heat[:3] = np.nan
        gt = np.zeros((40, 40), np.uint8)
        gt[10:25, 5:30] = 1
        gt[12:14, 5:9] = 2  # summed-box overlap: in neither region
        nan = np.isnan(heat)
        v = minmax(heat[~nan], "pm1")
        ours = signed_cnr(v, gt[~nan])
        assert ours == float(official_cnr(gt, heat, nan))
        assert ours == pytest.approx(brute_cnr64(minmax(v, "pm1"), gt[~nan]), rel=1e-5)


def test_cnr_nan_and_zero_cases():
    v = np.array([-1.0, 1.0, 0.0], dtype=np.float32)
    assert np.isnan(signed_cnr(v, np.zeros(3)))  # no GT pixel: NaN (empty mean)
    assert signed_cnr(np.array([-1, -1, 1, 1], np.float32), np.array([0, 0, 1, 1])) == 0.0
    assert signed_cnr(np.array([-1, -1, 1, 1], np.float32), np.array([1, 1, 0, 0])) == 0.0


def test_minmax_constant_map_is_empty_prediction():
    v = np.full(10, 3.0, np.float32)
    assert (minmax(v, "pm1") == -1).all() and (minmax(v, "01") == 0).all()


def brute_hit(heat, gt):
    best, pos = -np.inf, (0, 0)
    for y in range(heat.shape[0]):
        for x in range(heat.shape[1]):
            if not np.isnan(heat[y, x]) and heat[y, x] > best:
                best, pos = heat[y, x], (y, x)
    if gt[pos] == 1:
        return 1.0
    return math.nan if gt.sum() == 0 else 0.0


def test_pointing_hit_matches_loop_first_occurrence():
    rng = np.random.default_rng(3)
    for _ in range(20):
        heat = rng.integers(0, 4, (9, 11)).astype(np.float32)  # many ties: first one wins
        gt = (rng.random((9, 11)) < 0.3).astype(np.uint8)
        got, want = pointing_hit(heat, gt), brute_hit(heat, gt)
        assert (np.isnan(got) and np.isnan(want)) or got == want
    assert np.isnan(pointing_hit(np.zeros((3, 3)), np.zeros((3, 3))))
    assert pointing_hit(np.zeros((3, 3)), np.eye(3)) == 1.0  # all-zero map points at (0, 0)


def test_auroc_equals_sklearn_with_ties():
    rng = np.random.default_rng(4)
    for _ in range(10):
        y = rng.integers(0, 2, 200)
        s = np.round(rng.random(200), 1)  # heavy ties
        assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert np.isnan(auroc(np.ones(5), np.arange(5.0)))


def test_auroc_replicates_equal_sklearn_loop():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 150)
    s = np.round(rng.normal(size=150), 1)
    idx = np.random.RandomState(0).randint(0, 150, size=(40, 150))
    got = auroc_replicates(y, s, idx)
    want = [roc_auc_score(y[i], s[i]) for i in idx]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


masks = arrays(np.uint8, (6, 7), elements=st.integers(0, 1))


@settings(max_examples=60, deadline=None)
@given(masks, masks)
def test_iou_symmetric_bounded_and_dice_relation(a, b):
    va = a.astype(np.float32)
    ca = threshold_counts(va, b, [0.5])
    cb = threshold_counts(b.astype(np.float32), a, [0.5])
    for rule in (EITHER_EMPTY_NAN, BOTH_EMPTY_NAN):
        i_ab = iou_from_counts(ca["inter"], ca["union"], ca["pred"], ca["gt"], rule)[0]
        i_ba = iou_from_counts(cb["inter"], cb["union"], cb["pred"], cb["gt"], rule)[0]
        ref = brute_iou(a, b, rule)
        assert (np.isnan(i_ab) and np.isnan(i_ba) and math.isnan(ref)) or (
            i_ab == i_ba == pytest.approx(ref, abs=1e-15) and 0 <= i_ab <= 1)
        d = dice_from_counts(ca["inter"], ca["pred"], ca["gt"], rule=rule)[0]
        if not np.isnan(i_ab):
            assert d == pytest.approx(2 * i_ab / (1 + i_ab), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, 30, elements=st.floats(-5, 5, width=32)),
       arrays(np.uint8, 30, elements=st.integers(0, 1)))
def test_cnr_sign_flips_when_mask_inverted(v, g):
    c1, c2 = signed_cnr(v, g), signed_cnr(v, 1 - g)
    if np.isnan(c1):
        assert np.isnan(c2)
    else:
        assert c1 == -c2


@pytest.mark.parametrize("workers", [1, 3])
def test_seeded_auroc_replicates_equal_the_official_resample_loop(monkeypatch, workers):
    """AFLoc's classification bootstrap, literally: per replicate i, `resample(random_state=
    seed + i)` then `roc_auc_score` per pathology (NaN labels dropped, one-class -> NaN)."""
    from sklearn.utils import resample

    import bench.eval.metrics as metrics

    monkeypatch.setattr(metrics, "_COUNT_ELEMS", 4 * 37)  # 4 replicates per block, 8 blocks
    rng = np.random.default_rng(8)
    n, k, n_boot, seed = 37, 3, 30, 5
    labels = rng.integers(0, 2, (n, k)).astype(float)
    labels[rng.random((n, k)) < 0.2] = np.nan
    labels[:, 2] = np.where(np.arange(n) < 3, 1.0, 0.0)  # rare positives: one-class replicates
    scores = np.round(rng.random((n, k)), 1)  # ties
    got = seeded_auroc_replicates(labels, scores, seed + np.arange(n_boot), workers=workers)
    for i in range(n_boot):
        j = resample(np.arange(n), replace=True, random_state=seed + i)
        for c in range(k):
            y, s = labels[j, c], scores[j, c]
            keep = ~np.isnan(y)
            if len(np.unique(y[keep])) < 2:
                assert np.isnan(got[i, c])
            else:
                assert got[i, c] == pytest.approx(roc_auc_score(y[keep], s[keep]), abs=1e-12)
    assert np.isnan(got[:, 2]).any() and not np.isnan(got[:, 2]).all()
