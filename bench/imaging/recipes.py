"""Named pixel recipes: how a method's input tensor is made from a Sample's decoded pixels.

A `Recipe` is three named choices, each the way an official code base does it:

- a **reader**, the uint8 grey image the official loader starts from:
  - ``cv2-gray``: what ``cv2.imread(path, 0)`` gives (GLoRIA, AFLoc): 8-bit files unchanged, a
    16-bit PNG keeps its high byte (libpng strips the low one); a DICOM, which cv2 cannot read,
    and any other source of more than 8 bits are min-max scaled;
  - ``read_from_dicom``: GLoRIA's and AFLoc's DICOM reader: the stored values through
    ``cv2.convertScaleAbs(alpha=255 / max)``, then ``bitwise_not`` for MONOCHROME1; other files
    as ``cv2-gray``;
  - ``minmax-uint8``: hi-ml's ``remap_to_uint8`` for a DICOM (``(x - min) / (max - min) * 255``,
    truncated; AFLoc's RSNA classification loader); other files as ``cv2-gray``;
- a **frame** (`bench.imaging.geometry.Frame`): letterbox, square, short-side crop, ...;
- a **normalisation** of the 0..255 grey frame, repeated to 3 channels: ``half``
  (``ToTensor`` + ``Normalize(0.5, 0.5)``, GLoRIA and AFLoc), ``imagenet`` (ImageNet mean and
  std), ``unit`` (``ToTensor`` only, BioViL).

Every reader works from the Sample alone: a DICOM's stored values are recovered from the
decoded image and the photometry its adapter recorded in ``meta["dicom"]``
(`bench.imaging.io.read_image_meta`), so no file is read twice. A sample from an adapter outside
the harness that did not record it is re-read once, with a warning.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench.imaging.geometry import Frame, to_frame
from bench.imaging.io import (
    DICOM_SUFFIXES,
    RASTER_SUFFIXES,
    gloria_uint8,
    minmax_uint8,
    read_dicom_gloria,
    stored_values,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# per channel (mean, std) on the [0, 1] scale
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "unit": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


def to_uint8_gray(image: np.ndarray) -> np.ndarray:
    """Grayscale uint8 as ``cv2.imread(flag=0)`` gives it (other dtypes min-max scaled)."""
    img = np.asarray(image)
    if img.ndim == 3:
        if img.shape[2] == 1:
            img = img[..., 0]
        else:
            rgb = img[..., :3] if img.dtype == np.uint8 else _scale(img[..., :3])
            img = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)  # Sample is RGB
    if img.dtype != np.uint8:
        img = _scale(img)
    return np.ascontiguousarray(img)


def _scale(img: np.ndarray) -> np.ndarray:
    x = img.astype(np.float64)
    lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.uint8)
    return ((x - lo) / (hi - lo) * 255.0).round().astype(np.uint8)


def source_uint8(image: np.ndarray, path: str | None) -> np.ndarray:
    """The ``cv2-gray`` reader on raw arrays: a 16-bit PNG keeps its high byte; other sources
    of more than 8 bits (16-bit DICOM) are min-max scaled."""
    img = np.asarray(image)
    if (img.dtype == np.uint16 and img.ndim == 2 and path is not None
            and Path(path).suffix.lower() in RASTER_SUFFIXES):
        return (img >> 8).astype(np.uint8)
    return to_uint8_gray(img)


def _is_dicom(sample: Any) -> bool:
    path = sample.meta.get("path")
    return path is not None and Path(path).suffix.lower() in DICOM_SUFFIXES


def _dicom_meta(sample: Any) -> dict | None:
    info = sample.meta.get("dicom")
    if info is None:
        warnings.warn(f"sample {sample.id}: its adapter did not record the DICOM's photometry "
                      f"(meta['dicom'], see bench.imaging.io.read_image_meta), so the file is "
                      f"read again", stacklevel=3)
    return info


def read_cv2_gray(sample: Any) -> np.ndarray:
    return source_uint8(sample.image, sample.meta.get("path"))


def read_from_dicom(sample: Any) -> np.ndarray:
    if not _is_dicom(sample):
        return read_cv2_gray(sample)
    info = _dicom_meta(sample)
    if info is None:
        return read_dicom_gloria(sample.meta["path"])
    return gloria_uint8(stored_values(sample.image, info), info["photometric"])


def read_minmax_uint8(sample: Any) -> np.ndarray:
    """Min-max of the decoded values: the official loader does not invert MONOCHROME1, which
    the adapters already did (every RSNA image is MONOCHROME2, where the two agree)."""
    if not _is_dicom(sample):
        return read_cv2_gray(sample)
    return minmax_uint8(sample.image)


READERS = {"cv2-gray": read_cv2_gray, "read_from_dicom": read_from_dicom,
           "minmax-uint8": read_minmax_uint8}


@dataclass(frozen=True)
class Recipe:
    """What a model sees of a Sample: reader, frame and normalisation, each named."""

    reader: str = "cv2-gray"
    frame: Frame = Frame()
    normalize: str = "half"

    def __post_init__(self) -> None:
        if self.reader not in READERS:
            raise ValueError(f"unknown pixel reader {self.reader!r} "
                             f"(known: {', '.join(READERS)})")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"unknown normalisation {self.normalize!r} "
                             f"(known: {', '.join(NORMALIZATIONS)})")

    def pixels(self, sample: Any) -> np.ndarray:
        """The frame's uint8 grey pixels of one sample."""
        return to_frame(READERS[self.reader](sample), self.frame)

    def tensor(self, samples: list[Any]):
        """float [N, 3, S, S]: the samples' frames, normalised."""
        return to_tensor([self.pixels(s) for s in samples], self.normalize)

    def describe(self) -> dict[str, str]:
        return {"reader": self.reader, "frame": self.frame.describe(),
                "normalize": self.normalize}


def to_tensor(frames: np.ndarray | list[np.ndarray], normalize: str = "half"):
    """uint8 [N, S, S] -> float [N, 3, S, S]: ``ToTensor`` then ``Normalize`` (grey repeated)."""
    import torch

    arr = torch.from_numpy(np.ascontiguousarray(np.stack(frames) if isinstance(frames, list)
                                                else frames))
    x = arr.float().div_(255.0)
    mean, std = NORMALIZATIONS[normalize]
    if len(set(mean)) == 1 and len(set(std)) == 1:  # one grey value per channel: in place
        if mean[0] != 0.0 or std[0] != 1.0:
            x = x.sub_(mean[0]).div_(std[0])
        return x.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    x = x.unsqueeze(1).expand(-1, 3, -1, -1)
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous()
