"""CheXzero's pixels against its preprocessing written out with PIL and torchvision
(``data_process.preprocess``, then ``Normalize(101.48761, 83.43944)`` and ``Resize(224,
BICUBIC)`` on the tensor, antialias off as in torchvision 0.11), and the frame's way back."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from bench.imaging.geometry import (
    PIL_LETTERBOX,
    Frame,
    map_to_original,
    pil_letterbox_placement,
    resize_map,
    to_frame,
)
from bench.imaging.io import read_image_meta
from bench.imaging.recipes import Recipe, to_tensor
from bench.methods.chexzero.imaging import EVAL
from bench.types import Sample


def _png(tmp_path, h, w, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w)).astype(np.uint8)
    img[h // 4:h // 2, w // 3:w // 2] = 255
    path = tmp_path / f"x{h}x{w}.png"
    cv2.imwrite(str(path), img)
    image, meta = read_image_meta(path)
    return path, Sample(path.stem, image, meta={"path": str(path), **meta})


def _official_h5_pixels(path, desired=320) -> np.ndarray:
    """img_to_hdf5 + preprocess, written out: cv2 colour read, RGB, PIL resize of both sides to
    int(x * ratio) with Lanczos (Image.ANTIALIAS), pasted on a black 'L' canvas."""
    img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    pil = Image.fromarray(img)
    ratio = float(desired) / max(pil.size)
    new_size = tuple(int(x * ratio) for x in pil.size)
    pil = pil.resize(new_size, Image.Resampling.LANCZOS)
    canvas = Image.new("L", (desired, desired))
    canvas.paste(pil, ((desired - new_size[0]) // 2, (desired - new_size[1]) // 2))
    return np.asarray(canvas).astype(np.float32)  # the h5 dataset's float32


def _official_tensor(path) -> torch.Tensor:
    img = torch.from_numpy(np.repeat(_official_h5_pixels(path)[None], 3, axis=0))
    transform = T.Compose([
        T.Normalize((101.48761, 101.48761, 101.48761), (83.43944, 83.43944, 83.43944)),
        T.Resize(224, interpolation=T.InterpolationMode.BICUBIC, antialias=False)])
    return transform(img)


# (303, 200) and (77, 50): the long side comes out 319 (int(303 * 320 / 303) == 319)
@pytest.mark.parametrize("h, w", [(303, 200), (150, 401), (97, 97), (77, 50), (641, 513)])
def test_eval_recipe_is_chexzero_preprocessing(tmp_path, h, w):
    path, sample = _png(tmp_path, h, w)
    np.testing.assert_array_equal(EVAL.pixels(sample).astype(np.float32),
                                  _official_h5_pixels(path))
    got = EVAL.tensor([sample])[0]
    assert got.shape == (3, 224, 224)
    torch.testing.assert_close(got, _official_tensor(path), rtol=0, atol=0)


def test_placement_truncates_as_the_official_ratio_does():
    p = pil_letterbox_placement(303, 200, 320)
    assert (p.new_h, p.new_w, p.top, p.left) == (319, 211, 0, 54)
    p = pil_letterbox_placement(150, 401, 320)
    assert (p.new_h, p.new_w, p.top, p.left) == (119, 320, 100, 0)
    p = pil_letterbox_placement(97, 97, 320)
    assert (p.new_h, p.new_w, p.top, p.left) == (320, 320, 0, 0)


def test_normalisation_is_on_the_0_255_scale():
    frames = np.array([[[0, 101], [255, 200]]], dtype=np.uint8)
    x = to_tensor(frames, "chexzero")
    want = (np.array([[0, 101], [255, 200]], np.float32) - np.float32(101.48761)) \
        / np.float32(83.43944)
    assert x.shape == (1, 3, 2, 2)
    for c in range(3):
        np.testing.assert_allclose(x[0, c].numpy(), want, rtol=1e-7, atol=0)
    assert abs(float(x[0, 0, 1, 0]) - (255 - 101.48761) / 83.43944) < 1e-6


def test_antialias_false_is_what_the_recipe_does_and_it_matters(tmp_path):
    """Stripes one pixel wide: antialiasing averages them away, the old tensor resize does not."""
    img = np.zeros((320, 320), np.uint8)
    img[:, ::2] = 255
    path = tmp_path / "stripes.png"
    cv2.imwrite(str(path), img)
    image, meta = read_image_meta(path)
    got = EVAL.tensor([Sample("s", image, meta={"path": str(path), **meta})])[0]
    norm = torch.from_numpy((img.astype(np.float32) - np.float32(101.48761))
                            / np.float32(83.43944))[None].repeat(3, 1, 1)
    no_aa = T.Resize(224, interpolation=T.InterpolationMode.BICUBIC, antialias=False)(norm)
    with_aa = T.Resize(224, interpolation=T.InterpolationMode.BICUBIC, antialias=True)(norm)
    torch.testing.assert_close(got, no_aa, rtol=0, atol=1e-6)
    assert float((no_aa - with_aa).abs().max()) > 0.5
    assert float(no_aa.std()) > 2 * float(with_aa.std())


def test_describe_names_the_tensor_resize_only_where_set():
    assert EVAL.describe() == {"reader": "cv2-gray", "frame": "pil_letterbox 320",
                               "normalize": "chexzero",
                               "tensor_resize": "224 bicubic antialias=False"}
    assert "tensor_resize" not in Recipe().describe()
    with pytest.raises(ValueError, match="chexzero"):
        Recipe(normalize="nope")


@pytest.mark.parametrize("h, w", [(303, 200), (150, 401)])
def test_maps_go_back_through_the_padding(h, w):
    frame = Frame(PIL_LETTERBOX, 320)
    grid = np.arange(49, dtype=np.float32).reshape(7, 7)
    p = pil_letterbox_placement(h, w, 320)
    full = resize_map(grid, (320, 320))
    want = resize_map(full[p.top:p.top + p.new_h, p.left:p.left + p.new_w], (h, w))
    np.testing.assert_array_equal(map_to_original(grid, frame, (h, w)), want)


def test_a_bright_block_lands_where_the_letterbox_puts_it():
    img = np.zeros((400, 200), np.uint8)
    img[100:200, 50:150] = 255  # rows 1/4..1/2, columns 1/4..3/4
    out = to_frame(img, Frame(PIL_LETTERBOX, 320))  # 320 x 160, pasted at column 80
    ys, xs = np.nonzero(out > 127)
    assert (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1) == (80, 160, 120, 200)


def test_a_tensor_resize_after_a_per_channel_normalisation_resizes_each_channel():
    frames = np.random.default_rng(1).integers(0, 256, (2, 40, 40)).astype(np.uint8)
    got = Recipe(normalize="imagenet", tensor_resize=28).finish(frames)
    want = T.Resize(28, interpolation=T.InterpolationMode.BICUBIC, antialias=False)(
        to_tensor(frames, "imagenet"))
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not torch.equal(got[:, 0], got[:, 1])
