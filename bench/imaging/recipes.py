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
  - ``equalize-hist``: MedKLIP's RSNA DICOM reader: the stored values (``pixel_array``, no
    MONOCHROME1 inversion) ``/ 255``, then ``skimage.exposure.equalize_hist`` (256 bins over the
    image's range, re-implemented in numpy), then ``(255 * x).astype(uint8)``; other files as
    ``cv2-gray``;
  - ``himl-load-image``: hi-ml's ``load_image`` (BioViL): the same min-max remap for every
    file, PNG and JPEG included, then PIL ``convert("L")``;
- a **frame** (`bench.imaging.geometry.Frame`): letterbox, square, short-side crop, ...;
- a **normalisation** of the 0..255 grey frame, repeated to 3 channels: ``half``
  (``ToTensor`` + ``Normalize(0.5, 0.5)``, GLoRIA and AFLoc), ``imagenet`` (ImageNet mean and
  std), ``unit`` (``ToTensor`` only, BioViL), ``chexzero`` (``Normalize(101.48761, 83.43944)``
  on the 0..255 values themselves, no ``ToTensor`` scaling: CheXzero's h5 pixels);
- optionally a **tensor resize** after the normalisation (``tensor_resize``): torchvision
  ``Resize(size, BICUBIC)`` on the normalised tensor with ``antialias=False``, as torchvision
  0.11 did and CheXzero's transform does (320 -> 224).

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
# (mean, std) applied to the 0..255 values (no division by 255 first), the same for every channel
NORMALIZATIONS_255: dict[str, tuple[float, float]] = {
    "chexzero": (101.48761, 83.43944),  # CheXzero's zero_shot.py / train.py
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


def read_himl_load_image(sample: Any) -> np.ndarray:
    """hi-ml's ``load_image`` (BioViL): every file's decoded values, DICOM or not, min-max
    remapped to uint8 (``remap_to_uint8``, truncated), a colour image over all its channels at
    once, then PIL's ``convert("L")``. As ``minmax-uint8``, the adapters' photometric fixes
    (MONOCHROME1 inverted) come first."""
    img = np.asarray(sample.image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    u8 = minmax_uint8(img)
    if u8.ndim == 3:
        from PIL import Image

        u8 = np.asarray(Image.fromarray(np.ascontiguousarray(u8)).convert("L"))
    return np.ascontiguousarray(u8)


def equalize_hist(image: np.ndarray, nbins: int = 256) -> np.ndarray:
    """``skimage.exposure.equalize_hist`` of a float image: the cumulative histogram of `nbins`
    bins over [min, max] (numpy's histogram), read at each value by linear interpolation
    between the bin centres."""
    x = np.asarray(image, dtype=np.float64)
    hist, edges = np.histogram(x.ravel(), bins=nbins)
    centers = (edges[:-1] + edges[1:]) / 2.0
    cdf = hist.cumsum() / float(hist.sum())
    return np.interp(x.ravel(), centers, cdf).reshape(x.shape)


def read_equalize_hist(sample: Any) -> np.ndarray:
    """MedKLIP's RSNA ``read_dcm``: ``pixel_array / 255`` -> ``equalize_hist`` -> uint8."""
    if not _is_dicom(sample):
        return read_cv2_gray(sample)
    info = _dicom_meta(sample)
    if info is None:
        import pydicom

        raw = pydicom.dcmread(sample.meta["path"]).pixel_array
    else:
        raw = stored_values(sample.image, info)
    out = equalize_hist(np.asarray(raw).astype(float) / 255.0)
    return np.ascontiguousarray((255 * out).astype(np.uint8))


READERS = {"cv2-gray": read_cv2_gray, "read_from_dicom": read_from_dicom,
           "minmax-uint8": read_minmax_uint8, "himl-load-image": read_himl_load_image,
           "equalize-hist": read_equalize_hist}


@dataclass(frozen=True)
class Recipe:
    """What a model sees of a Sample: reader, frame and normalisation, each named."""

    reader: str = "cv2-gray"
    frame: Frame = Frame()
    normalize: str = "half"
    # a final bicubic resize (antialias=False) of the normalised tensor to this side; None: none
    tensor_resize: int | None = None

    def __post_init__(self) -> None:
        if self.reader not in READERS:
            raise ValueError(f"unknown pixel reader {self.reader!r} "
                             f"(known: {', '.join(READERS)})")
        if self.normalize not in NORMALIZATIONS and self.normalize not in NORMALIZATIONS_255:
            raise ValueError(f"unknown normalisation {self.normalize!r} "
                             f"(known: {', '.join([*NORMALIZATIONS, *NORMALIZATIONS_255])})")

    def pixels(self, sample: Any) -> np.ndarray:
        """The frame's uint8 grey pixels of one sample."""
        return to_frame(READERS[self.reader](sample), self.frame)

    def tensor(self, samples: list[Any]):
        """float [N, 3, S, S]: the samples' frames, normalised (and resized: `tensor_resize`)."""
        return self.finish([self.pixels(s) for s in samples])

    def finish(self, frames: np.ndarray | list[np.ndarray]):
        """The model's input from uint8 frames [N, S, S]: normalised, then `tensor_resize`."""
        x = to_tensor(frames, self.normalize)
        if self.tensor_resize is None:
            return x
        if self.normalize in NORMALIZATIONS_255 or all(
                len(set(v)) == 1 for v in NORMALIZATIONS[self.normalize]):
            # three equal channels: one grey image, resized once
            return tensor_resize(x[:, :1], self.tensor_resize).expand(-1, 3, -1, -1).contiguous()
        return tensor_resize(x, self.tensor_resize)

    def describe(self) -> dict[str, str]:
        out = {"reader": self.reader, "frame": self.frame.describe(),
               "normalize": self.normalize}
        if self.tensor_resize is not None:  # only where set: other recipes read as before
            out["tensor_resize"] = f"{self.tensor_resize} bicubic antialias=False"
        return out


def tensor_resize(x: Any, size: int):
    """torchvision ``Resize(size, BICUBIC, antialias=False)`` on a float [N, C, H, W] tensor
    (the shorter side to `size`; no clamping of the float values)."""
    import torchvision.transforms.functional as TF

    return TF.resize(x, size, interpolation=TF.InterpolationMode.BICUBIC, antialias=False)


def to_tensor(frames: np.ndarray | list[np.ndarray], normalize: str = "half"):
    """uint8 [N, S, S] -> float [N, 3, S, S]: ``ToTensor`` then ``Normalize`` (grey repeated)."""
    import torch

    arr = torch.from_numpy(np.ascontiguousarray(np.stack(frames) if isinstance(frames, list)
                                                else frames))
    if normalize in NORMALIZATIONS_255:  # on the 0..255 values, one grey value per channel
        m255, s255 = NORMALIZATIONS_255[normalize]
        x = arr.float().sub_(m255).div_(s255)
        return x.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
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
