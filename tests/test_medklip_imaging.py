"""MedKLIP's input recipe against independent PIL / torchvision / skimage computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bench.imaging.recipes import READERS, Recipe
from bench.methods.medklip.imaging import EVAL, random_resized_crop
from bench.types import Sample

skimage_exposure = pytest.importorskip("skimage.exposure")
transforms = pytest.importorskip("torchvision.transforms")

NORM = transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def official_png(grey: np.ndarray) -> torch.Tensor:
    """Official test transform of a grey JPG/PNG: PIL RGB, Resize([224, 224]), ToTensor,
    ImageNet Normalize."""
    img = Image.fromarray(grey).convert("RGB")
    t = transforms.Compose([transforms.Resize([224, 224]), transforms.ToTensor(), NORM])
    return t(img)


def official_dicom(pixel_array: np.ndarray) -> torch.Tensor:
    """The RSNA loader's read_dcm then the same transform."""
    img = pixel_array.astype(float) / 255.0
    img = skimage_exposure.equalize_hist(img)
    img = (255 * img).astype(np.uint8)
    pil = Image.fromarray(img).convert("RGB")
    t = transforms.Compose([transforms.Resize([224, 224]), transforms.ToTensor(), NORM])
    return t(pil)


def test_recipe_names():
    assert "equalize-hist" in READERS
    assert EVAL.describe() == {"reader": "equalize-hist", "frame": EVAL.frame.describe(),
                               "normalize": "imagenet"}


@pytest.mark.parametrize("hw", [(301, 257), (97, 413)])
def test_png_matches_official_transform(hw):
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, hw, dtype=np.uint8)
    got = EVAL.tensor([Sample("x", grey, meta={"path": "x.png"})])[0]
    want = official_png(grey)
    assert got.shape == want.shape == (3, 224, 224)
    # PIL's resize in both, then the same arithmetic
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_dicom_matches_official_read_dcm(photometric):
    rng = np.random.default_rng(2)
    stored = (rng.gamma(2.0, 400.0, (333, 271)).clip(0, 4095)).astype(np.uint16)
    # the adapters hand over MONOCHROME1 images inverted; the reader undoes it, as the
    # official code reads pydicom's pixel_array (no inversion)
    image = (4095 - stored) if photometric == "MONOCHROME1" else stored
    sample = Sample("d", image, meta={"path": "x.dcm", "dicom": {"bits_stored": 12,
                                                                "photometric": photometric}})
    eq = READERS["equalize-hist"](sample)
    want_eq = (255 * skimage_exposure.equalize_hist(stored.astype(float) / 255.0)).astype(
        np.uint8)
    np.testing.assert_array_equal(eq, want_eq)
    got = EVAL.tensor([sample])[0]
    want = official_dicom(stored)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_random_resized_crop_shape_and_determinism():
    frame = np.arange(256 * 256, dtype=np.uint32).reshape(256, 256).astype(np.uint8)
    a = random_resized_crop(frame, np.random.default_rng(5))
    b = random_resized_crop(frame, np.random.default_rng(5))
    assert a.shape == (224, 224) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert isinstance(Recipe("equalize-hist").pixels(Sample("y", frame)), np.ndarray)
