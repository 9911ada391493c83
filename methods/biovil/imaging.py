"""BioViL's pixels and maps, as hi-ml-multimodal makes them.

**Input** (``image/data/io.py`` ``load_image``, ``image/data/transforms.py``
``create_chest_xray_transform_for_inference(512, 480)``): the decoded values min-max remapped
to uint8 for every file type (the ``himl-load-image`` reader), PIL "L", ``Resize(512)`` (short
side, PIL bilinear, antialiased), ``CenterCrop(480)``, ``ToTensor`` ([0, 1]), the grey channel
repeated three times; no mean/std normalisation (``unit``). Maps and scores share it.

**Map** (``vlp/inference_engine.py``, ``get_similarity_map_from_raw_data``): L2-normalised
patch embeddings x the L2-normalised query embedding (a cosine per patch, 15 x 15 at 480),
``scipy.ndimage.gaussian_filter(sigma=1.5)`` in patch units (float32, scipy's default
``mode="reflect"``, ``truncate=4``), then ``convert_similarity_to_image_size``: interpolated
(``nearest`` by default, ``bilinear`` with align_corners=False as an option) to the crop's
footprint in the original image, ``int(crop * min(H, W) / resize)`` square, and padded with NaN
to H x W, floor(margin / 2) before and ceil(margin / 2) after on each axis. The map is returned
in the original frame (`bench.imaging.geometry.ORIGINAL`).

**Training** (the harness's; hi-ml publishes no training transforms): a square pre-frame,
``Resize(resize)`` + ``CenterCrop(resize)``, from which each step draws a random ``crop``
square (no flip: reports name sides); validation uses the evaluation recipe.
"""

from __future__ import annotations

from math import ceil, floor

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from bench.imaging.geometry import SHORT_SIDE_CROP, Frame
from bench.imaging.recipes import Recipe

READER = "himl-load-image"
SIGMA = 1.5
INTERPOLATIONS = ("nearest", "bilinear")


def eval_recipe(resize: int = 512, crop: int = 480) -> Recipe:
    return Recipe(READER, Frame(SHORT_SIDE_CROP, crop, resize), "unit")


def train_preframe(resize: int) -> Recipe:
    return Recipe(READER, Frame(SHORT_SIDE_CROP, resize, resize), "unit")


EVAL = eval_recipe()


def random_crop(pre_frame: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """A `size` square of a pre-frame at offsets uniform in [0, side - size]."""
    h, w = pre_frame.shape[:2]
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    return np.ascontiguousarray(pre_frame[top:top + size, left:left + size])


def patch_similarity(patch: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """[Q, h, w] cosines of each location of `patch` [D, h, w] with each row of `text` [Q, D]
    (both L2-normalised here, as ``F.normalize``: eps 1e-12)."""
    return torch.einsum("dhw,qd->qhw", F.normalize(patch.float(), dim=0),
                        F.normalize(text.float(), dim=1))


def smooth(grid: np.ndarray, sigma: float = SIGMA) -> np.ndarray:
    """``ndimage.gaussian_filter(grid, sigma=(sigma, sigma), order=0)`` (float32 in, out)."""
    return ndimage.gaussian_filter(np.asarray(grid, dtype=np.float32), sigma=(sigma, sigma),
                                   order=0)


def footprint(hw: tuple[int, int], resize: int = 512, crop: int = 480) -> int:
    """The side of the crop in original pixels: ``int(crop * min(H, W) / resize)``."""
    return int(crop * min(hw) / resize)


def to_image_size(grid: np.ndarray, hw: tuple[int, int], resize: int = 512, crop: int = 480,
                  interpolation: str = "nearest") -> np.ndarray:
    """``convert_similarity_to_image_size``: the smoothed grid resized to the footprint square,
    then NaN-padded to H x W (float32)."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    h, w = hw
    side = footprint(hw, resize, crop)
    align = False if interpolation == "bilinear" else None
    t = torch.from_numpy(np.ascontiguousarray(grid, dtype=np.float32))[None, None]
    m = F.interpolate(t, size=(side, side), mode=interpolation, align_corners=align)[0, 0]
    mw, mh = w - side, h - side
    m = F.pad(m, (floor(mw / 2), ceil(mw / 2), floor(mh / 2), ceil(mh / 2)), value=float("nan"))
    return m.numpy()


def similarity_maps(patch: torch.Tensor, text: torch.Tensor, hw: tuple[int, int],
                    resize: int = 512, crop: int = 480,
                    interpolation: str = "nearest") -> list[np.ndarray]:
    """The inference engine's map of one image (patch embeddings [D, h, w]) for each query
    embedding (rows of `text`), in the original H x W frame with NaN outside the crop."""
    sims = patch_similarity(patch, text).cpu().numpy()
    return [to_image_size(smooth(s), hw, resize, crop, interpolation) for s in sims]
