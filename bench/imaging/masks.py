"""Ground-truth masks in the original image frame, from every annotation format, in one place.

- boxes x, y, w, h (RSNA, MS-CXR) and x1, y1, x2, y2 (ChestX-Det10): coordinates floored to
  int and `mask[y:y+h, x:x+w] = 1`, the rule GLoRIA/AFLoc and torchxrayvision use;
- polygons: PIL `ImageDraw.polygon(outline=1, fill=1)` on a (w, h) canvas, as CheXlocalize's
  `annotation_to_segmentation.py` rasterises them (also used for LabelMe and ChestX-Det);
- COCO RLE (CheXlocalize `gt_segmentations_*.json`): `pycocotools.mask.decode`;
- SIIM "relative" RLE: (offset, length) pairs, the cursor advancing by offset then length,
  column-major at 1024 x 1024 (decode to (W, H) and transpose), instances OR-ed.

The `*_problem` helpers return a one-line description of what is wrong with an annotation
(or None) so adapters can raise or skip with file and row.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence

import numpy as np

Polygon = Sequence[Sequence[float]]


# -- boxes -----------------------------------------------------------------------------------

def xyxy_to_xywh(box: Sequence[float]) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return x1, y1, x2 - x1, y2 - y1


def box_problem(box_xywh: Sequence[float], hw: tuple[int, int] | None) -> str | None:
    """'zero-area box', 'box outside the image', 'non-numeric box' or None (box is usable).

    A box that overhangs an edge is usable: the official loaders fill it by array slicing,
    which clips it to the image. A box that would fill no pixel of an `hw` image (exactly as
    `boxes_to_mask` floors and clips it) is refused: it would be an empty ground truth."""
    try:
        x, y, w, h = (float(v) for v in box_xywh)
    except (TypeError, ValueError):
        return f"non-numeric box {list(box_xywh)!r}"
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return f"non-numeric box {[x, y, w, h]}"
    if w <= 0 or h <= 0 or math.floor(w) == 0 or math.floor(h) == 0:
        return f"zero-area box x={x:g} y={y:g} w={w:g} h={h:g}"
    if hw is not None:
        H, W = hw
        x0, y0 = math.floor(x), math.floor(y)
        x1, y1 = x0 + math.floor(w), y0 + math.floor(h)  # `boxes_to_mask`'s slice ends
        if min(x1, W) <= max(x0, 0) or min(y1, H) <= max(y0, 0):
            return f"box outside the image x={x:g} y={y:g} w={w:g} h={h:g} (image {W}x{H})"
    return None


def boxes_to_mask(boxes_xywh: Iterable[Sequence[float]], hw: tuple[int, int]) -> np.ndarray:
    """Union of boxes (x, y, w, h in original pixels): floor each value, fill [y:y+h, x:x+w]."""
    H, W = hw
    mask = np.zeros((H, W), dtype=np.uint8)
    for box in boxes_xywh:
        x, y, w, h = (int(math.floor(float(v))) for v in box)
        x0, y0 = max(x, 0), max(y, 0)  # a negative start must not wrap around
        mask[y0:max(y + h, 0), x0:max(x + w, 0)] = 1
    return mask


def boxes_xyxy_to_mask(boxes_xyxy: Iterable[Sequence[float]], hw: tuple[int, int]) -> np.ndarray:
    """Union of x1, y1, x2, y2 boxes (x2/y2 exclusive after flooring)."""
    return boxes_to_mask([xyxy_to_xywh(b) for b in boxes_xyxy], hw)


# -- polygons --------------------------------------------------------------------------------

def polygon_problem(polygon: Polygon, hw: tuple[int, int] | None = None) -> str | None:
    """'empty polygon' (fewer than 3 vertices), 'malformed polygon', outside the image, or None."""
    try:
        pts = [(float(p[0]), float(p[1])) for p in polygon]
    except (TypeError, ValueError, IndexError):
        return "malformed polygon (expected a list of [x, y] points)"
    if len(pts) < 3:
        return f"empty polygon ({len(pts)} vertices)"
    if not all(math.isfinite(v) for pt in pts for v in pt):
        return "malformed polygon (non-finite vertex)"
    if hw is not None:
        H, W = hw
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        if max(xs) < 0 or max(ys) < 0 or min(xs) > W or min(ys) > H:
            return f"polygon outside the image (image {W}x{H})"
    return None


def polygons_to_mask(polygons: Iterable[Polygon], hw: tuple[int, int]) -> np.ndarray:
    """CheXlocalize's rasteriser: each polygon filled with outline=1, fill=1 on a 1-bit canvas."""
    from PIL import Image, ImageDraw

    H, W = hw
    canvas = Image.new("1", (W, H))
    draw = ImageDraw.Draw(canvas)
    for polygon in polygons:
        draw.polygon([(float(p[0]), float(p[1])) for p in polygon], outline=1, fill=1)
    return np.array(canvas, dtype=np.uint8)


# -- COCO RLE --------------------------------------------------------------------------------

def coco_rle_to_mask(rle: dict) -> np.ndarray:
    """pycocotools decode of {"size": [h, w], "counts": str|bytes|list}; raises ValueError."""
    from pycocotools import mask as mask_utils

    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError("RLE must be an object with 'size' and 'counts'")
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        if sum(int(c) for c in counts) != h * w:
            raise ValueError(f"uncompressed RLE covers {sum(counts)} pixels, not {h}x{w}")
        obj = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    else:
        obj = {"size": [h, w], "counts": counts.encode() if isinstance(counts, str) else counts}
    try:
        with warnings.catch_warnings():  # pycocotools' numpy-2 copy-keyword notice
            warnings.simplefilter("ignore", DeprecationWarning)
            out = mask_utils.decode(obj)
    except Exception as exc:
        raise ValueError(f"undecodable COCO RLE ({exc})") from exc
    if out.shape != (h, w):
        raise ValueError(f"COCO RLE decoded to {out.shape}, not {(h, w)}")
    return np.ascontiguousarray(out, dtype=np.uint8)


def mask_to_coco_rle(mask: np.ndarray) -> dict:
    """Encode as CheXlocalize does (Fortran-ordered uint8), counts as str."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


# -- SIIM relative RLE -----------------------------------------------------------------------

def siim_rle_problem(rle: str, hw: tuple[int, int] = (1024, 1024)) -> str | None:
    """What is wrong with one EncodedPixels value, or None ('-1' is a valid negative)."""
    text = str(rle).strip()
    if text == "-1":
        return None
    parts = text.split()
    if not parts:
        return "empty EncodedPixels"
    try:
        nums = [int(v) for v in parts]
    except ValueError:
        return "non-integer EncodedPixels"
    if len(nums) % 2:
        return "odd number of values in EncodedPixels"
    if any(v < 0 for v in nums):
        return "negative value in EncodedPixels"
    if sum(nums) > hw[0] * hw[1]:
        return f"EncodedPixels runs past the end of a {hw[1]}x{hw[0]} image"
    return None


def siim_rle_to_mask(rle: str, hw: tuple[int, int] = (1024, 1024)) -> np.ndarray:
    """One instance: '-1' gives an empty mask. Raises ValueError on malformed input."""
    problem = siim_rle_problem(rle, hw)
    if problem:
        raise ValueError(problem)
    H, W = hw
    flat = np.zeros(H * W, dtype=np.uint8)
    text = str(rle).strip()
    if text != "-1":
        nums = np.array(text.split(), dtype=np.int64)
        starts = np.cumsum(nums[0::2] + np.concatenate(([0], nums[1::2][:-1])))
        for s, n in zip(starts, nums[1::2]):
            flat[s:s + n] = 1
    return np.ascontiguousarray(flat.reshape(W, H).T)


def siim_rles_to_mask(rles: Iterable[str], hw: tuple[int, int] = (1024, 1024)) -> np.ndarray:
    """OR of every instance of one ImageId."""
    H, W = hw
    mask = np.zeros((H, W), dtype=np.uint8)
    for rle in rles:
        mask |= siim_rle_to_mask(rle, hw)
    return mask


def mask_to_siim_rle(mask: np.ndarray) -> str:
    """Encode one mask in the relative column-major form ('-1' when empty)."""
    flat = (np.asarray(mask).T.reshape(-1) > 0).astype(np.int8)
    if not flat.any():
        return "-1"
    d = np.diff(np.concatenate(([0], flat, [0])))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    out, cursor = [], 0
    for s, e in zip(starts, ends):
        out += [int(s - cursor), int(e - s)]
        cursor = e
    return " ".join(str(v) for v in out)
