"""The medklip-rsna protocol (MedKLIP's score_cal) against a hand-worked example."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.errors import UsageError
from bench.eval.protocols import PROTOCOLS, get_protocol
from bench.eval.protocols.medklip import gt_canvas, nearest_224
from bench.imaging.geometry import RESIZE, Frame
from bench.types import Finding, Sample

FRAME = Frame(RESIZE, 224)


def grid_map(cells: dict[tuple[int, int], float], rest: float = 0.005) -> np.ndarray:
    g = np.full((14, 14), rest)
    for (r, c), v in cells.items():
        g[r, c] = v
    return np.kron(g, np.ones((16, 16)))


def test_registered_by_name():
    assert "medklip-rsna" in PROTOCOLS
    assert get_protocol("medklip-rsna").threshold == 0.008
    with pytest.raises(UsageError, match="unknown options"):
        get_protocol("medklip-rsna", margin=True)


def test_hand_worked_scores():
    proto = get_protocol("medklip-rsna")
    img = np.zeros((224, 224), np.uint8)
    # G = rows 32:64, cols 16:64 (|G| = 1536); the fractional parts are truncated as the
    # official loader does
    box = np.array([[16.9, 32.4, 48.7, 32.2]])
    s1 = Sample("a", img, [Finding("Pneumonia", "q1", boxes=box)])
    s2 = Sample("b", img, [Finding("Pneumonia", "q2", boxes=box)])
    s3 = Sample("c", img, [Finding("Pneumonia", "q3", positive=False)])
    # image a: three 0.02 cells inside G's rows 32:48 (cols 16:64) and one 0.009 cell outside
    m1 = grid_map({(2, 1): 0.02, (2, 2): 0.02, (2, 3): 0.02, (5, 5): 0.009})
    # image b: the only cell over the threshold (and the max) is outside G
    m2 = grid_map({(0, 0): 0.03})
    rows = []
    for s, m in ((s1, m1), (s2, m2), (s3, m1)):
        rows += proto.localization_rows(s, s.findings, [m], FRAME, None)
    r1, r2, r3 = rows
    assert (r1["gt"], r1["pred"], r1["inter"]) == (1536, 1024, 768)
    assert r1["iou"] == pytest.approx(768 / 1792) and r1["dice"] == pytest.approx(0.6)
    assert r1["pointing_game"] == 1.0
    assert (r2["iou"], r2["dice"], r2["pointing_game"]) == (0.0, 0.0, 0.0)
    assert np.isnan(r3["iou"])  # negative images are not scored
    summary = proto.summarize(pd.DataFrame(rows), n_boot=0, seed=0)
    m = summary["metrics"]
    assert m["iou"]["overall"]["mean"] == pytest.approx((768 / 1792) / 2)
    assert m["dice"]["overall"]["mean"] == pytest.approx(0.3)
    assert m["pointing_game"]["overall"]["mean"] == pytest.approx(0.5)
    assert m["iou"]["overall"]["n"] == 2 and summary["n_rows"] == 2
    boot = proto.summarize(pd.DataFrame(rows), n_boot=200, seed=1)["metrics"]["dice"]
    assert 0.0 <= boot["overall"]["lower"] <= 0.3 <= boot["overall"]["upper"] <= 0.6


def test_gt_is_resized_nearest_on_odd_sizes():
    f = Finding("Pneumonia", "q", boxes=np.array([[10.7, 20.2, 30.9, 15.5]]))
    canvas = gt_canvas(f, (101, 83))
    want_canvas = np.zeros((101, 83))
    want_canvas[20:35, 10:40] = 1
    np.testing.assert_array_equal(canvas, want_canvas)
    rows = np.floor(np.arange(224) * (101 / 224)).astype(int)
    cols = np.floor(np.arange(224) * (83 / 224)).astype(int)
    np.testing.assert_array_equal(nearest_224(canvas), want_canvas[rows][:, cols])
    # a mask where there are no boxes
    mask = np.zeros((101, 83), np.uint8)
    mask[5:9, 7:11] = 1
    np.testing.assert_array_equal(gt_canvas(Finding("P", "q", mask=mask), (101, 83)), mask)
