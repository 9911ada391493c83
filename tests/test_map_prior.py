"""The map-prior diagnostic (benchmarks/map_prior.py) on hand-made maps."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_path = Path(__file__).resolve().parents[1] / "benchmarks" / "map_prior.py"
_spec = importlib.util.spec_from_file_location("map_prior", _path)
map_prior = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(map_prior)


def _boxes(n: int, size: int = 12) -> np.ndarray:
    g = np.zeros((n, size, size), bool)
    for i in range(n):
        g[i, i % 8: i % 8 + 3, (2 * i) % 9: (2 * i) % 9 + 3] = True
    return g


def test_a_fixed_map_is_all_prior():
    gts = _boxes(6)
    blob = np.exp(-((np.arange(12) - 5.5) ** 2) / 8)
    maps = np.stack([np.outer(blob, blob) * (i + 1) for i in range(6)])  # scale is z-scored away
    st = map_prior.stats(maps, gts)
    assert st["common"] == pytest.approx(1.0)
    assert st["map~gt"] == pytest.approx(st["prior~gt"])


def test_the_gt_itself_is_all_image_specific():
    gts = _boxes(6)
    st = map_prior.stats(gts.astype(float), gts)
    assert st["map~gt"] == pytest.approx(1.0)
    assert st["own~gt"] == pytest.approx(1.0)
    # the prior of these maps is the mean GT, and corr(prior, each GT) is computed by hand here
    prior = gts.mean(0).ravel()
    want = np.mean([np.corrcoef(prior, g.ravel())[0, 1] for g in gts])
    assert st["prior~gt"] == pytest.approx(want)


def test_pixels_a_method_never_saw_are_left_out():
    gts = _boxes(4)
    maps = gts.astype(float)
    maps[:, :, 0] = np.nan  # a column outside every map's frame
    st = map_prior.stats(maps, gts)
    assert st["map~gt"] == pytest.approx(1.0)
