"""CheXlocalize hit rate as the official `eval.py:get_hitrates` computes it, in both readings.

The official HEAD (rajpurkarlab/cheXlocalize) takes the "most representative point" as the
argmax of `get_map(pkl_path)`, the map upsampled to the image: the map's peak, as the paper
defines it. That is `hit="map"`, the harness's default. One commit, a9619f8 ("use pkl_to_mask
func"), took the argmax of ``pkl_to_mask(pkl_path)`` instead: with the defaults (threshold NaN,
prob_cutoff 0) that is the Otsu segmentation of the min-max map with its contours filled, so
the point is the first segmented pixel in row-major order. The next commit, ea1e035 ("refactor
CPU_Unpickler"), went back to the map. `hit="segmentation"` reproduces that one commit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from bench.eval.protocols import get_protocol
from bench.imaging.geometry import SQUARE, Frame
from bench.types import Finding, Sample

try:
    from tests.test_eval_protocols import o_otsu
except ImportError:  # tests/ is not always a package
    from test_eval_protocols import o_otsu


def o_pkl_to_mask(grid: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """`pkl_to_mask(pkl_path)` with its defaults: upsample, min-max, Otsu, fill contours."""
    cam = F.interpolate(torch.from_numpy(grid)[None, None], size=hw, mode="bilinear",
                        align_corners=False).squeeze()
    return o_otsu(cam)  # then `cam_to_segmentation`, Otsu by default


def o_hit(sal_map: np.ndarray, gt: np.ndarray) -> float:
    x = np.unravel_index(np.argmax(sal_map, axis=None), sal_map.shape)[0]
    y = np.unravel_index(np.argmax(sal_map, axis=None), sal_map.shape)[1]
    if gt[x][y] == 1:
        return 1
    if np.sum(gt) == 0:
        return np.nan
    return 0


def test_hit_from_the_map_as_get_hitrates_and_from_the_segmentation_as_a9619f8():
    hw = (60, 80)
    grid = np.zeros((12, 12), np.float32)
    grid[1:4, 1:11] = 0.8  # a broad high band near the top, outside the GT
    grid[8, 6] = 1.0  # the peak, inside the GT
    gt = np.zeros(hw, np.uint8)
    gt[35:50, 30:50] = 1
    s = Sample(id="patient1_study1_view1_frontal", image=None, meta={"hw": hw, "in_gt": True})
    f = Finding("Edema", "q", mask=gt)
    want_seg = o_hit(o_pkl_to_mask(grid, hw), gt)
    cam = F.interpolate(torch.from_numpy(grid)[None, None], size=hw, mode="bilinear",
                        align_corners=False).squeeze().numpy()
    want_map = o_hit(cam, gt)
    assert (want_seg, want_map) == (0, 1)  # the two readings disagree on this map
    frame = Frame(kind=SQUARE, size=12)
    seg_rows = get_protocol("chexlocalize", hit="segmentation").localization_rows(
        s, [f], [grid], frame, [None])
    map_rows = get_protocol("chexlocalize").localization_rows(s, [f], [grid], frame, [None])
    assert seg_rows[0]["hit"] == want_seg and map_rows[0]["hit"] == want_map


def test_segmentation_hit_random_maps_and_empty_gt():
    """`hit="segmentation"` against a transcription of a9619f8's `get_hitrates`."""
    rng = np.random.default_rng(5)
    proto = get_protocol("chexlocalize", hit="segmentation")
    rows, want = [], []
    for i in range(12):
        hw = (int(rng.integers(30, 70)), int(rng.integers(30, 70)))
        grid = rng.normal(size=(8, 8)).astype(np.float32)
        gt = np.zeros(hw, np.uint8)
        if i % 4:
            gt[5:int(rng.integers(10, hw[0])), 3:int(rng.integers(8, hw[1]))] = 1
        s = Sample(id=f"patient{i}_study1_view1_frontal", image=None,
                   meta={"hw": hw, "in_gt": True})
        rows += proto.localization_rows(s, [Finding("Edema", "q", mask=gt)], [grid],
                                        Frame(kind=SQUARE, size=8), [None])
        want.append(o_hit(o_pkl_to_mask(grid, hw), gt))
    got = pd.DataFrame(rows)["hit"].to_numpy()
    np.testing.assert_array_equal(got, np.array(want, dtype=float))
