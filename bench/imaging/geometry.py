"""Input frames: how a method's square input is made from the original image, and back.

Every method declares a `Frame`; its maps come back on that frame. Protocols use the same
object to carry maps to their evaluation frame (AFLoc: the 224 letterbox; CheXlocalize: native
resolution), and to carry GT boxes and masks from the original frame to the evaluation frame.

The letterbox follows GLoRIA/AFLoc `_resize_img` exactly: the *first* longest axis (height for a
square) is set to `size`, the other becomes `int(other * size / longest)`, cv2 INTER_AREA, then
zero padding with floor(pad/2) before and ceil(pad/2) after.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

LETTERBOX = "letterbox"  # long side to `size`, zero-pad the short side (GLoRIA/AFLoc)
SQUARE = "square"  # plain resize to size x size, aspect ignored (CheXlocalize Grad-CAM, 320)
SHORT_SIDE_CROP = "short_side_crop"  # Resize(short side) + CenterCrop (torchvision, AFLoc cls)
RESIZE = "resize"  # torchvision Resize((size, size)) on a PIL image, aspect ignored (ConVIRT)
PIL_LETTERBOX = "pil_letterbox"  # long side to `size`, PIL Lanczos, zero pad (CheXzero)
SQUARE_LINEAR = "square_linear"  # cv2 INTER_LINEAR to size x size, aspect ignored (RD++)
ORIGINAL = "original"  # map is already at original resolution
STRETCHED = (SQUARE, RESIZE, SQUARE_LINEAR)  # the whole image stretched to the square


@dataclass(frozen=True)
class Frame:
    """A square model input of side `size` made from an H x W image.

    `pre` is an intermediate letterbox size before a center crop to `size` (GLoRIA and the
    official AFLoc config letterbox to 256, then CenterCrop 224); None means no crop.
    """

    kind: str = LETTERBOX
    size: int = 224
    pre: int | None = None

    def describe(self) -> str:
        if self.kind == ORIGINAL:
            return "original"
        crop = f" -> crop {self.size}" if self.pre else ""
        return f"{self.kind} {self.pre or self.size}{crop}"


@dataclass(frozen=True)
class Placement:
    """Where the resized image sits inside a square canvas of side `canvas`."""

    canvas: int
    new_h: int
    new_w: int
    top: int
    left: int


def letterbox_placement(h: int, w: int, size: int) -> Placement:
    if h >= w:  # `size.index(max)` picks the height on ties
        new_h, new_w = size, int(float(w) * (size / float(h)))
        pad = size - new_w
        return Placement(size, new_h, new_w, 0, int(math.floor(pad / 2)))
    new_h, new_w = int(float(h) * (size / float(w))), size
    pad = size - new_h
    return Placement(size, new_h, new_w, int(math.floor(pad / 2)), 0)


def pil_letterbox_placement(h: int, w: int, size: int) -> Placement:
    """CheXzero's ``data_process.preprocess``: both sides scaled by ``size / max(h, w)`` and
    truncated (``int(x * ratio)``, so the long side can come out one short: 319 for a 77, 303 or
    319 pixel side at 320), pasted at ``((size - new_w) // 2, (size - new_h) // 2)``."""
    ratio = float(size) / max(h, w)
    new_h, new_w = int(h * ratio), int(w * ratio)
    return Placement(size, new_h, new_w, (size - new_h) // 2, (size - new_w) // 2)


def pil_letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """CheXzero's ``preprocess`` on a uint8 grey image: PIL resize with Lanczos (the official
    ``Image.ANTIALIAS``, its old name), pasted on a black ``size`` x ``size`` "L" canvas."""
    from PIL import Image

    h, w = image.shape[:2]
    p = pil_letterbox_placement(h, w, size)
    resized = np.asarray(Image.fromarray(image).resize((p.new_w, p.new_h), Image.LANCZOS))
    out = np.zeros((size, size) + image.shape[2:], dtype=image.dtype)
    out[p.top:p.top + p.new_h, p.left:p.left + p.new_w] = resized
    return out


def letterbox(image: np.ndarray, size: int, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """GLoRIA/AFLoc `_resize_img`: resize the long side to `size` and zero-pad symmetrically."""
    h, w = image.shape[:2]
    p = letterbox_placement(h, w, size)
    resized = cv2.resize(image, (p.new_w, p.new_h), interpolation=interpolation)
    out = np.zeros((size, size) + image.shape[2:], dtype=image.dtype)
    out[p.top:p.top + p.new_h, p.left:p.left + p.new_w] = resized
    return out


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """torchvision CenterCrop on a square array: offset int(round((H - size) / 2))."""
    h, w = image.shape[:2]
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return image[top:top + size, left:left + size]


def to_frame(image: np.ndarray, frame: Frame, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """The method's input pixels for an original image (grayscale or channels-last)."""
    if frame.kind == ORIGINAL:
        return image
    if frame.kind == LETTERBOX:
        out = letterbox(image, frame.pre or frame.size, interpolation)
        return center_crop(out, frame.size) if frame.pre else out
    if frame.kind == SQUARE:
        return cv2.resize(image, (frame.size, frame.size), interpolation=interpolation)
    if frame.kind == SQUARE_LINEAR:  # RD++'s cv2.resize default, whatever the caller's choice
        return cv2.resize(image, (frame.size, frame.size), interpolation=cv2.INTER_LINEAR)
    if frame.kind == SHORT_SIDE_CROP:
        return short_side_crop(image, frame.pre or frame.size, frame.size)
    if frame.kind == RESIZE:
        return pil_resize(image, frame.size)
    if frame.kind == PIL_LETTERBOX:
        return pil_letterbox(image, frame.size)
    raise ValueError(f"unknown frame kind {frame.kind!r}")


def short_side_crop(image: np.ndarray, short: int, size: int) -> np.ndarray:
    """torchvision `Resize(short)` + `CenterCrop(size)` on a PIL image, as AFLoc's classifier does.

    Done through torchvision itself (PIL bilinear with antialiasing) so the pixels are the
    official ones, not an approximation.
    """
    import torchvision.transforms.functional as TF
    from PIL import Image

    pil = Image.fromarray(image)
    pil = TF.resize(pil, short, interpolation=TF.InterpolationMode.BILINEAR)
    return np.asarray(TF.center_crop(pil, size))


def pil_resize(image: np.ndarray, size: int) -> np.ndarray:
    """torchvision `Resize((size, size))` on a PIL image (bilinear, antialiased when shrinking),
    as ViLMedic's evaluation transform does: both sides to `size`, the aspect ignored. Unlike
    `SQUARE` (cv2 INTER_AREA), the pixels are torchvision's own."""
    import torchvision.transforms.functional as TF
    from PIL import Image

    pil = TF.resize(Image.fromarray(image), [size, size],
                    interpolation=TF.InterpolationMode.BILINEAR)
    return np.asarray(pil)


def resize_map(heatmap: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear, align_corners=False (torch `F.interpolate`), as AFLoc and CheXlocalize do."""
    if tuple(heatmap.shape) == tuple(size_hw):
        return heatmap.astype(np.float32, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(heatmap, dtype=np.float32))[None, None]
    out = F.interpolate(t, size=tuple(size_hw), mode="bilinear", align_corners=False)
    return out[0, 0].numpy()


def map_to_original(heatmap: np.ndarray, frame: Frame, hw: tuple[int, int]) -> np.ndarray:
    """Carry a map on `frame` back to the original H x W image (NaN where the frame saw nothing).

    The map is first resized to the frame's side, then the padding (letterbox) is cut away and
    the content resized to H x W; a center crop leaves a NaN border outside the crop.
    """
    h, w = hw
    if frame.kind == ORIGINAL:
        return resize_map(heatmap, (h, w))
    m = resize_map(heatmap, (frame.size, frame.size))
    if frame.kind in STRETCHED:  # the whole image, stretched to the square
        return resize_map(m, (h, w))
    if frame.kind == PIL_LETTERBOX:
        p = pil_letterbox_placement(h, w, frame.size)
        return resize_map(m[p.top:p.top + p.new_h, p.left:p.left + p.new_w], (h, w))
    if frame.kind == LETTERBOX:
        canvas = frame.pre or frame.size
        if frame.pre:
            full = np.full((canvas, canvas), np.nan, dtype=np.float32)
            off = int(round((canvas - frame.size) / 2.0))
            full[off:off + frame.size, off:off + frame.size] = m
            m = full
        p = letterbox_placement(h, w, canvas)
        inner = m[p.top:p.top + p.new_h, p.left:p.left + p.new_w]
        return resize_map(inner, (h, w))
    if frame.kind == SHORT_SIDE_CROP:
        short = frame.pre or frame.size
        if h <= w:
            nh, nw = short, int(short * w / h)
        else:
            nh, nw = int(short * h / w), short
        full = np.full((nh, nw), np.nan, dtype=np.float32)
        top, left = int(round((nh - frame.size) / 2.0)), int(round((nw - frame.size) / 2.0))
        full[top:top + frame.size, left:left + frame.size] = m
        return resize_map(full, (h, w))
    raise ValueError(f"unknown frame kind {frame.kind!r}")


def map_to_letterbox(heatmap: np.ndarray, frame: Frame, hw: tuple[int, int],
                     size: int = 224) -> np.ndarray:
    """A method's map on the `size` letterbox of the original image (float32, NaN where the
    method saw nothing): what the AFLoc protocol scores and what figures draw.

    A map already on a plain letterbox frame is only resized (bilinear, align_corners=False, as
    the official `F.interpolate` from the patch grid). Any other frame is carried to the
    original image and letterboxed; the padding it never saw is NaN.
    """
    if frame.kind == LETTERBOX and frame.pre is None:
        return resize_map(np.asarray(heatmap, dtype=np.float32), (size, size))
    orig = map_to_original(np.asarray(heatmap, dtype=np.float32), frame, hw)
    p = letterbox_placement(hw[0], hw[1], size)
    out = np.full((size, size), np.nan, dtype=np.float32)
    out[p.top:p.top + p.new_h, p.left:p.left + p.new_w] = resize_map(orig, (p.new_h, p.new_w))
    return out


def boxes_to_letterbox_mask(
    boxes_xywh: np.ndarray, hw: tuple[int, int], size: int = 224, accumulate: bool = False
) -> np.ndarray:
    """AFLoc's box -> 224 mask: scale by size/max(h, w), shift by floor(pad/2), floor, fill.

    With `accumulate`, overlapping boxes add up (AFLoc's MS-CXR merge sums masks); otherwise
    the union is taken.
    """
    h, w = hw
    p = letterbox_placement(h, w, size)
    scale = size / float(max(h, w))
    mask = np.zeros((size, size), dtype=np.uint8)
    for x, y, bw, bh in np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4):
        x0 = int(math.floor(x * scale + p.left))
        y0 = int(math.floor(y * scale + p.top))
        ww = int(math.floor(bw * scale))
        hh = int(math.floor(bh * scale))
        region = mask[y0:y0 + hh, x0:x0 + ww]
        if accumulate:
            region += 1
        else:
            region[...] = 1
    return mask


def mask_to_letterbox(
    mask: np.ndarray, size: int = 224, threshold: float = 1e-5, dtype: type = np.float32
) -> np.ndarray:
    """AFLoc's mask -> 224: letterbox the mask as an image (INTER_AREA), then >= threshold -> 1.

    `dtype` is the array type the official loader resizes: COVID Rural casts the PNG to float32
    (any covered fraction survives), CheXlocalize resizes the uint8 0/1 mask from pycocotools
    (cv2 rounds each INTER_AREA average, so a pixel survives only if >= half covered).
    """
    m = letterbox(mask.astype(dtype), size, cv2.INTER_AREA)
    return (m >= threshold).astype(np.uint8)
