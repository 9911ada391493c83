"""The one-class detectors' shared parts: maps and scores against an independent computation,
the hard-mining loss and alpha ramp by hand, the block sampler, validation data, the test guard."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.errors import UsageError
from bench.methods.anomaly.maps import anomaly_maps, gaussian_kernel_5x5, image_scores
from bench.methods.anomaly.train import BlockSampler, normalized, one_class_data
from bench.methods.recontrast.model import alpha_at, global_cosine_hm
from bench.train.data import NoTestSamples, TrainingData, is_test_split
from bench.types import Sample

# -- an independent computation of the official map ---------------------------------------------


def _one_minus_cos(t: np.ndarray, s: np.ndarray) -> np.ndarray:
    """[C, h, w] x2 -> [h, w] in float64 with torch's eps rule (norms clamped at 1e-8)."""
    num = (t * s).sum(0)
    den = np.maximum(np.linalg.norm(t, axis=0), 1e-8) * np.maximum(np.linalg.norm(s, axis=0),
                                                                     1e-8)
    return 1 - num / den


def _bilinear_align_corners(m: np.ndarray, size: int) -> np.ndarray:
    h, w = m.shape
    ys = np.arange(size) * (h - 1) / (size - 1)
    xs = np.arange(size) * (w - 1) / (size - 1)
    y0 = np.clip(np.floor(ys).astype(int), 0, h - 1)
    x0 = np.clip(np.floor(xs).astype(int), 0, w - 1)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = m[y0][:, x0] * (1 - fx) + m[y0][:, x1] * fx
    bottom = m[y1][:, x0] * (1 - fx) + m[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


def _gaussian_reflect(m: np.ndarray, sigma: float = 4.0, truncate: float = 4.0) -> np.ndarray:
    """Separable Gaussian with the half-sample-symmetric border scipy calls 'reflect'."""
    r = int(truncate * sigma + 0.5)
    x = np.arange(-r, r + 1)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    p = np.pad(m, r, mode="symmetric")
    rows = np.stack([np.convolve(row, k, mode="valid") for row in p])
    return np.stack([np.convolve(col, k, mode="valid") for col in rows.T]).T


def _features(seed: int, shapes: list[tuple[int, int]], b: int = 2):
    g = torch.Generator().manual_seed(seed)
    t = [torch.randn(b, c, n, n, generator=g) for c, n in shapes]
    s = [x + 0.7 * torch.randn(x.shape, generator=g) for x in t]
    return t, s


def test_map_equals_an_independent_computation():
    t, s = _features(0, [(8, 8), (16, 4), (32, 2)])
    got = anomaly_maps(t, s, 40)
    for i in range(2):
        want = np.zeros((40, 40))
        for a, b in zip(t, s):
            d = _one_minus_cos(a[i].double().numpy(), b[i].double().numpy())
            want += _bilinear_align_corners(d, 40)
        want = _gaussian_reflect(want)
        np.testing.assert_allclose(got[i], want, atol=2e-6)


def test_5x5_variant_is_the_mean_smoothed_by_the_zero_padded_kernel():
    k = gaussian_kernel_5x5().numpy()[0, 0]
    xx, yy = np.meshgrid(np.arange(5) - 2, np.arange(5) - 2)
    want = np.exp(-(xx ** 2 + yy ** 2) / 32.0)
    np.testing.assert_allclose(k, want / want.sum(), rtol=1e-6)
    t, s = _features(1, [(8, 4), (16, 2)], b=1)
    got = anomaly_maps(t, s, 12, smoothing="5x5")[0]
    mean = sum(_bilinear_align_corners(_one_minus_cos(a[0].double().numpy(),
                                                      b[0].double().numpy()), 12)
               for a, b in zip(t, s)) / 2
    p = np.pad(mean, 2)
    want = np.array([[(p[y:y + 5, x:x + 5] * k).sum() for x in range(12)] for y in range(12)])
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_image_scores_max_and_top_ratio():
    m = np.arange(16, dtype=float).reshape(1, 4, 4)
    assert image_scores(m)[0] == 15
    assert image_scores(m, 0.25)[0] == pytest.approx((12 + 13 + 14 + 15) / 4)
    assert image_scores(m, 0.01)[0] == pytest.approx(7.5)  # int(0.16) = 0: every pixel


def test_normalized_equals_the_recipe_tensor():
    from bench.imaging.recipes import to_tensor

    frames = np.random.default_rng(0).integers(0, 256, (2, 6, 6), dtype=np.uint8)
    got = normalized(torch.from_numpy(frames).float().div_(255.0), "imagenet")
    assert torch.equal(got, to_tensor(frames, "imagenet"))


# -- ReContrast's loss ---------------------------------------------------------------------------


def test_alpha_ramp():
    assert alpha_at(0, 1000) == -3
    assert alpha_at(50, 1000) == pytest.approx(-1)
    assert alpha_at(100, 1000) == 1
    assert alpha_at(900, 1000) == 1


def test_global_cosine_hm_value_and_masked_gradient():
    # one pair, one image, two channels, 1 x 3 locations
    a = torch.tensor([[[[1.0, 0.0, 1.0]], [[0.0, 1.0, 1.0]]]])
    b = torch.tensor([[[[1.0, 1.0, 2.0]], [[0.0, 1.0, -1.0]]]], requires_grad=True)
    loss = global_cosine_hm([a], [b], alpha=0.0)
    fa, fb = a.flatten().numpy(), b.detach().flatten().numpy()
    want = 1 - fa @ fb / (np.linalg.norm(fa) * np.linalg.norm(fb))
    assert float(loss.detach()) == pytest.approx(want, rel=1e-6)
    # per-location distances: 0, 1 - 1/sqrt(2), 1 - 1/sqrt(10); mean + 0 * std keeps only
    # the locations at or above the mean
    d = np.array([0.0, 1 - 1 / math.sqrt(2), 1 - 1 / math.sqrt(10)])
    keep = (d >= d.mean()).astype(np.float32)
    loss.backward()
    b2 = b.detach().clone().requires_grad_(True)
    plain = 1 - torch.nn.functional.cosine_similarity(a.reshape(1, -1), b2.reshape(1, -1))
    plain.sum().backward()
    want_grad = b2.grad.numpy() * keep.reshape(1, 1, 1, 3)
    np.testing.assert_allclose(b.grad.numpy(), want_grad, rtol=1e-6)


# -- training data ---------------------------------------------------------------------------------


@given(n=st.integers(3, 40), batch=st.integers(1, 6), block=st.integers(1, 5),
       epochs=st.integers(1, 4))
@settings(max_examples=40, deadline=None)
def test_block_sampler_is_a_stream_of_full_passes(n, batch, block, epochs):
    stream = np.concatenate([BlockSampler(n, batch, block, 7, e).positions()
                             for e in range(epochs)])
    assert len(stream) == epochs * batch * block
    for k in range(len(stream) // n):  # every complete pass visits each item once
        assert sorted(stream[k * n:(k + 1) * n].tolist()) == list(range(n))
    again = BlockSampler(n, batch, block, 7, epochs - 1).positions()
    assert np.array_equal(again, stream[-batch * block:])  # resumable: block e alone


def test_one_class_data_uses_the_validation_split(tmp_path):
    data = TrainingData("shapes", None, {"n": 60}, cache=None, progress=False)
    from bench.methods.anomaly.networks import TINY
    from bench.methods.rdpp.train import recipe_of

    oc = one_class_data(data, recipe_of(TINY), seed=0, val_images=None)
    train = data.prepared("train", recipe_of(TINY), "all")
    val = data.prepared("val", recipe_of(TINY), "all")
    normal_train = [i for i, lab in enumerate(train.labels) if not any(lab.values())]
    assert oc.train_index.tolist() == normal_train
    want = [0 if not any(lab.values()) else 1 for lab in val.labels]
    assert oc.val_labels.tolist() == want and oc.val_source == "split val"


def test_is_test_split():
    assert is_test_split("test") and is_test_split("gloria-test") and is_test_split("image-test")
    assert not is_test_split("train") and not is_test_split("validate")
    assert not is_test_split("contest-train") and not is_test_split(None)


class _Leaky:
    """An adapter whose training split hands out a test image at row 2."""

    split = "train"

    def __len__(self):
        return 4

    def load(self, i):
        return Sample(id=f"s{i}", image=np.zeros((4, 4), np.uint8),
                      meta={"split": "test" if i == 2 else "train"})


def test_training_never_reads_test_samples():
    ds = NoTestSamples(_Leaky(), "leaky")
    assert ds.load(0).id == "s0"
    with pytest.raises(UsageError, match="row 2"):
        ds.load(2)
    leaky_test = _Leaky()
    leaky_test.split = "test"
    with pytest.raises(UsageError, match="never reads a test split"):
        NoTestSamples(leaky_test, "leaky")

