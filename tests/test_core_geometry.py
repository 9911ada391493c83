"""Frames: GLoRIA/AFLoc letterbox arithmetic, torchvision parity, and maps carried back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from bench.imaging.geometry import (
    LETTERBOX,
    ORIGINAL,
    SHORT_SIDE_CROP,
    SQUARE,
    Frame,
    letterbox,
    letterbox_placement,
    map_to_original,
    to_frame,
)


def test_letterbox_placement_hand_worked():
    # MIMIC portrait 3056 x 2544: width int(2544 * 224 / 3056) = 186, pad 38 -> 19 left, 19 right
    p = letterbox_placement(3056, 2544, 224)
    assert (p.new_h, p.new_w, p.top, p.left) == (224, 186, 0, 19)
    # landscape 2320 x 2828 (CheXlocalize sample): height int(2320 * 224 / 2828) = 183, pad 41
    p = letterbox_placement(2320, 2828, 224)
    assert (p.new_h, p.new_w, p.top, p.left) == (183, 224, 20, 0)
    # a square image keeps the height branch (size.index(max) -> 0) and needs no pad
    p = letterbox_placement(1024, 1024, 224)
    assert (p.new_h, p.new_w, p.top, p.left) == (224, 224, 0, 0)


def test_letterbox_pads_with_zeros_around_the_resized_image():
    img = np.full((100, 50), 200, np.uint8)
    out = letterbox(img, 224)
    assert out.shape == (224, 224)
    assert (out[:, :56] == 0).all() and (out[:, 56 + 112:] == 0).all()
    assert (out[:, 56:168] == 200).all()


def test_short_side_crop_is_torchvision_resize_and_center_crop():
    rng = np.random.default_rng(0)
    img = (rng.random((300, 410)) * 255).astype(np.uint8)
    expected = np.asarray(T.CenterCrop(224)(T.Resize(224)(Image.fromarray(img))))
    np.testing.assert_array_equal(to_frame(img, Frame(SHORT_SIDE_CROP, 224)), expected)


@settings(max_examples=30, deadline=None)
@given(h=st.integers(40, 400), w=st.integers(40, 400))
def test_constant_map_comes_back_constant_and_covers_the_image(h, w):
    for frame in (Frame(LETTERBOX, 224), Frame(SQUARE, 320), Frame(ORIGINAL)):
        back = map_to_original(np.full((19, 19), 3.0, np.float32), frame, (h, w))
        assert back.shape == (h, w)
        np.testing.assert_allclose(back, 3.0, rtol=1e-6)


def test_center_crop_frames_leave_nan_outside_the_crop():
    back = map_to_original(np.ones((224, 224), np.float32), Frame(LETTERBOX, 224, 256), (256, 256))
    assert np.isnan(back[0, 0]) and np.isnan(back[-1, -1])
    assert np.isfinite(back[128, 128])
    assert np.isfinite(back[16:240, 16:240]).all()


def test_letterbox_map_round_trip_keeps_the_region():
    h, w = 200, 120
    gt = np.zeros((h, w), np.float32)
    gt[50:150, 30:90] = 1
    framed = letterbox(gt, 224, interpolation=1)
    back = map_to_original(framed, Frame(LETTERBOX, 224), (h, w))
    assert ((back > 0.5) == (gt > 0.5)).mean() > 0.99


def test_resize_map_is_torch_bilinear_align_corners_false():
    from bench.imaging.geometry import resize_map

    m = np.random.default_rng(1).random((19, 19)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(m)[None, None], size=(224, 224),
                                          mode="bilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_array_equal(resize_map(m, (224, 224)), ref)
    assert pytest.approx(float(resize_map(m, (19, 19)).sum())) == float(m.sum())


def test_square_linear_is_cv2_linear_and_maps_stretch_back():
    """RD++'s frame: ``cv2.resize(img, (S, S))`` with its default INTER_LINEAR (not the
    INTER_AREA of `square`), and a map on it covers the whole image like `square`'s."""
    import cv2

    from bench.imaging.geometry import SQUARE_LINEAR, map_to_original, to_frame

    img = np.random.default_rng(0).integers(0, 256, (300, 200), dtype=np.uint8)
    got = to_frame(img, Frame(SQUARE_LINEAR, 96))
    assert np.array_equal(got, cv2.resize(img, (96, 96), interpolation=cv2.INTER_LINEAR))
    assert not np.array_equal(got, to_frame(img, Frame("square", 96)))
    m = np.random.default_rng(1).random((96, 96)).astype(np.float32)
    assert np.array_equal(map_to_original(m, Frame(SQUARE_LINEAR, 96), (300, 200)),
                          map_to_original(m, Frame("square", 96), (300, 200)))
