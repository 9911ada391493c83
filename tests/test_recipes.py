"""Named pixel recipes against independent readers (cv2, PIL + torchvision, pydicom) on small
files in the real formats."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from data_fixtures import write_dicom
from PIL import Image
from torchvision import transforms as T

from bench.imaging.geometry import LETTERBOX, SHORT_SIDE_CROP, Frame
from bench.imaging.io import read_image_meta, stored_values
from bench.imaging.recipes import READERS, Recipe
from bench.types import Sample


def _sample(path) -> Sample:
    image, meta = read_image_meta(path)
    return Sample(path.stem, image, meta={"path": str(path), **meta})


@pytest.mark.parametrize("name, dtype, suffix", [("a8", np.uint8, ".png"),
                                                 ("a16", np.uint16, ".png"),
                                                 ("j", np.uint8, ".jpg")])
def test_cv2_gray_is_cv2_imread_flag_0(tmp_path, name, dtype, suffix):
    rng = np.random.default_rng(3)
    top = 65535 if dtype == np.uint16 else 255
    path = tmp_path / f"{name}{suffix}"
    cv2.imwrite(str(path), rng.integers(0, top + 1, (37, 29)).astype(dtype))
    np.testing.assert_array_equal(READERS["cv2-gray"](_sample(path)), cv2.imread(str(path), 0))


def test_a_colour_jpg_is_read_grey_as_cv2_does(tmp_path):
    rng = np.random.default_rng(4)
    path = tmp_path / "c.jpg"
    cv2.imwrite(str(path), rng.integers(0, 256, (20, 24, 3)).astype(np.uint8))
    np.testing.assert_array_equal(READERS["cv2-gray"](_sample(path)), cv2.imread(str(path), 0))


@pytest.mark.parametrize("photometric, bits", [("MONOCHROME2", 8), ("MONOCHROME2", 12),
                                               ("MONOCHROME1", 12), ("MONOCHROME1", 16)])
def test_dicom_readers_against_pydicom(tmp_path, photometric, bits):
    """minmax-uint8 is hi-ml's remap_to_uint8 of pydicom's pixel_array (after the adapters'
    MONOCHROME1 inversion); the stored values come back exactly from the decoded image."""
    import pydicom

    rng = np.random.default_rng(bits)
    dtype = np.uint8 if bits == 8 else np.uint16
    raw = rng.integers(3, (1 << bits) - 5, (33, 41)).astype(dtype)
    path = write_dicom(tmp_path / "x.dcm", raw, photometric=photometric, bits_stored=bits)
    sample = _sample(path)
    x = pydicom.dcmread(str(path)).pixel_array.astype(np.float64)
    np.testing.assert_array_equal(stored_values(sample.image, sample.meta["dicom"]), x)
    if photometric == "MONOCHROME1":
        x = ((1 << bits) - 1) - x
    x -= x.min()
    want = (x / x.max() * 255).astype(np.uint8)
    np.testing.assert_array_equal(READERS["minmax-uint8"](sample), want)


def test_frames_and_normalisations_against_torchvision(tmp_path):
    rng = np.random.default_rng(5)
    path = tmp_path / "p.png"
    cv2.imwrite(str(path), rng.integers(0, 256, (61, 47)).astype(np.uint8))
    sample = _sample(path)
    pil = Image.open(path).convert("RGB")
    # short side 224 then CenterCrop, as torchvision does on a PIL image
    crop = Recipe("cv2-gray", Frame(SHORT_SIDE_CROP, 224), "imagenet")
    ref = T.Compose([T.Resize(224), T.CenterCrop(224), T.ToTensor(),
                     T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])(pil)
    torch.testing.assert_close(crop.tensor([sample])[0], ref, rtol=0, atol=1e-6)
    # the GLoRIA / AFLoc letterbox (INTER_AREA, zero padding split floor/ceil), 0.5 norm
    box = Recipe("cv2-gray", Frame(LETTERBOX, 64), "half")
    grey = cv2.imread(str(path), 0)
    w = int(47 * 64 / 61)
    canvas = np.zeros((64, 64), np.uint8)
    left = (64 - w) // 2
    canvas[:, left:left + w] = cv2.resize(grey, (w, 64), interpolation=cv2.INTER_AREA)
    ref = T.Normalize((0.5,) * 3, (0.5,) * 3)(T.ToTensor()(Image.fromarray(canvas)
                                                          .convert("RGB")))
    torch.testing.assert_close(box.tensor([sample])[0], ref, rtol=0, atol=1e-6)
    unit = Recipe("cv2-gray", Frame(LETTERBOX, 64), "unit")
    torch.testing.assert_close(unit.tensor([sample])[0],
                               T.ToTensor()(Image.fromarray(canvas).convert("RGB")))


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown pixel reader 'cv3'"):
        Recipe("cv3")
    with pytest.raises(ValueError, match="unknown normalisation 'z'"):
        Recipe(normalize="z")
