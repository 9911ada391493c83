"""Pixels in, model tensors out: AFLoc's image preparation.

The official code reads images with ``cv2.imread(path, 0)`` (grayscale uint8), letterboxes
(``_resize_img``, INTER_AREA), converts to RGB, CenterCrops 224 and normalises with mean
and std 0.5. Localization uses the 224 letterbox; zero-shot classification uses torchvision
``Resize(224)`` + ``CenterCrop(224)`` (no letterbox); pretraining per the config letterboxes
to ``imsize`` 256 and center-crops 224 (``faithful``) or letterboxes to 224 (``corrected``).

``source_uint8`` gives what ``cv2.imread(path, 0)`` gives for the sample's file (a 16-bit
PNG keeps its high byte). Classification reads a DICOM the way the official RSNA loader does
(the only official classification set read from DICOM; NIH, SIIM and CXR-LT come as PNG/JPG):
``pixel_array`` min-max remapped to uint8 and truncated (hi-ml's ``remap_to_uint8``). One
difference: the adapters have already inverted MONOCHROME1, which that loader does not (every
RSNA image is MONOCHROME2).

Localization reads a DICOM as GLoRIA's and AFLoc's ``read_from_dicom`` do (``localize_uint8``):
``cv2.convertScaleAbs(pixel_array, alpha=255 / max)``, then ``bitwise_not`` for MONOCHROME1.
The official RSNA grounding run reads PNGs converted by a script that is not published; this
is the conversion the reference notes give for AFLoc localization (and the only DICOM reader in
AFLoc's ``localization/datasets.py``). An 8-bit image whose brightest pixel is below 255 is
stretched by it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from bench.imaging.geometry import Frame, to_frame
from bench.imaging.io import DICOM_SUFFIXES, RASTER_SUFFIXES, minmax_uint8, read_dicom_gloria

LOCALIZE_FRAME = Frame("letterbox", 224)
CLASSIFY_FRAME = Frame("short_side_crop", 224)
TRAIN_FRAMES = {"faithful": Frame("letterbox", 224, pre=256), "corrected": Frame("letterbox", 224)}


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
    """Grayscale uint8 as ``cv2.imread(path, 0)`` reads the image's file: a 16-bit PNG keeps
    its high byte (libpng strips the low one); other sources of more than 8 bits (16-bit
    DICOM) are min-max scaled."""
    img = np.asarray(image)
    if (img.dtype == np.uint16 and img.ndim == 2 and path is not None
            and Path(path).suffix.lower() in RASTER_SUFFIXES):
        return (img >> 8).astype(np.uint8)
    return to_uint8_gray(img)


def classify_uint8(image: np.ndarray, path: str | None) -> np.ndarray:
    """The uint8 pixels zero-shot classification starts from (module docstring)."""
    if path is not None and Path(path).suffix.lower() in DICOM_SUFFIXES:
        return minmax_uint8(image)
    return source_uint8(image, path)


def localize_uint8(image: np.ndarray, path: str | None) -> np.ndarray:
    """The uint8 pixels localization starts from (module docstring): a DICOM re-read from its
    stored values with the ``read_from_dicom`` mapping (``read_dicom_gloria``, one read), any
    other file as ``source_uint8``."""
    if path is not None and Path(path).suffix.lower() in DICOM_SUFFIXES:
        return read_dicom_gloria(path)
    return source_uint8(image, path)


def frame_uint8(image: np.ndarray, frame: Frame) -> np.ndarray:
    """The frame's 224 x 224 uint8 pixels of an original image."""
    return to_frame(to_uint8_gray(image), frame)


def to_tensor(frames: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    """uint8 [N, 224, 224] -> float [N, 3, 224, 224], ToTensor then Normalize(0.5, 0.5)."""
    arr = torch.from_numpy(np.ascontiguousarray(np.stack(frames) if isinstance(frames, list)
                                                else frames))
    x = arr.float().div_(255.0).sub_(0.5).div_(0.5)
    return x.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
