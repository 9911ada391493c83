"""ConVIRT's pixels against torchvision (ViLMedic's transforms written out), the `resize` frame's
way back to the original image, and the training crop."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from bench.imaging.geometry import RESIZE, Frame, map_to_letterbox, map_to_original, to_frame
from bench.imaging.io import read_image_meta
from bench.methods.convirt.imaging import EVAL, TRAIN_PREFRAME, random_crop_flip
from bench.types import Sample

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _png(tmp_path, h, w, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w)).astype(np.uint8)
    img[h // 4:h // 2, w // 3:w // 2] = 255
    path = tmp_path / f"x{h}x{w}.png"
    cv2.imwrite(str(path), img)
    image, meta = read_image_meta(path)
    return path, Sample(path.stem, image, meta={"path": str(path), **meta})


@pytest.mark.parametrize("h, w", [(300, 250), (180, 400), (100, 100)])
def test_eval_recipe_is_vilmedic_eval_transform(tmp_path, h, w):
    path, sample = _png(tmp_path, h, w)
    official = T.Compose([T.Resize((224, 224)), T.ToTensor(), T.Normalize(MEAN, STD)])
    want = official(Image.open(path).convert("RGB"))
    got = EVAL.tensor([sample])[0]
    assert got.shape == (3, 224, 224)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("h, w", [(300, 250), (180, 400)])
def test_training_pre_frame_is_resize_256_then_center_crop_256(tmp_path, h, w):
    path, sample = _png(tmp_path, h, w)
    pil = Image.open(path).convert("L")
    want = np.asarray(T.CenterCrop(256)(T.Resize(256)(pil)))
    np.testing.assert_array_equal(TRAIN_PREFRAME.pixels(sample), want)


def test_resize_frame_carries_pixels_where_the_stretch_puts_them():
    """A block of the original lands on the frame rows/columns scaled by 224/H and 224/W."""
    h, w = 280, 420
    img = np.zeros((h, w), np.uint8)
    img[70:140, 210:315] = 255  # rows 1/4..1/2, columns 1/2..3/4
    frame = to_frame(img, Frame(RESIZE, 224))
    ys, xs = np.nonzero(frame > 127)
    assert (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1) == (56, 112, 112, 168)


@pytest.mark.parametrize("cell", [(0, 0), (3, 5), (6, 2)])
def test_a_one_hot_grid_cell_lands_on_its_pixels_of_the_original(cell):
    """A 7 x 7 map that is 1 in one cell, carried back through Resize((224, 224)) to a 350 x 280
    image: bilinear to 224 then to H x W (torch written out), peaking inside the cell's own
    rectangle of the original (rows r*H/7..(r+1)*H/7, columns c*W/7..(c+1)*W/7)."""
    h, w = 350, 280
    r, c = cell
    grid = np.zeros((7, 7), np.float32)
    grid[r, c] = 1.0
    back = map_to_original(grid, Frame(RESIZE, 224), (h, w))
    t = torch.from_numpy(grid)[None, None]
    want = F.interpolate(F.interpolate(t, size=(224, 224), mode="bilinear", align_corners=False),
                         size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_array_equal(back, want)
    ys, xs = np.nonzero(back >= 0.5 * back.max())
    assert r * h / 7 <= ys.min() and ys.max() < (r + 1) * h / 7
    assert c * w / 7 <= xs.min() and xs.max() < (c + 1) * w / 7
    peak = np.unravel_index(np.argmax(back), back.shape)
    assert abs(peak[0] - (r + 0.5) * h / 7) <= h / 14
    assert abs(peak[1] - (c + 0.5) * w / 7) <= w / 14
    # the letterbox view the AFLoc protocol scores: the image is 224 x int(280 * 224 / 350) =
    # 224 x 179 from column 22 (padding 45, floor half before); NaN in the padding only
    lb = map_to_letterbox(grid, Frame(RESIZE, 224), (h, w))
    assert np.isnan(lb[:, :22]).all() and np.isnan(lb[:, 201:]).all()
    assert not np.isnan(lb[:, 22:201]).any()


def test_random_crop_flip_draws_as_written():
    pre = np.arange(256 * 256, dtype=np.int64).reshape(256, 256) % 251
    pre = pre.astype(np.uint8)
    for seed in range(6):
        got = random_crop_flip(pre, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        top, left = int(rng.integers(0, 33)), int(rng.integers(0, 33))
        want = pre[top:top + 224, left:left + 224]
        if rng.random() < 0.5:
            want = want[:, ::-1]
        np.testing.assert_array_equal(got, want)
        assert got.flags.c_contiguous
    never = {random_crop_flip(pre, np.random.default_rng(s), flip=False)[0, 0] for s in range(20)}
    flipped = {random_crop_flip(pre, np.random.default_rng(s))[0, 0] for s in range(20)}
    assert never != flipped
