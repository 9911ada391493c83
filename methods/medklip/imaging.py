"""MedKLIP's input recipe (`bench.imaging.recipes`), the official test transforms.

Evaluation: ``Resize([224, 224])`` (both sides, the aspect ignored; PIL bilinear, antialiased),
``ToTensor``, ImageNet mean and std. The official loaders open a JPG/PNG with PIL and convert it
to RGB (a grey radiograph repeats its grey value in the three channels, as the recipe does), and
read an RSNA DICOM as ``pixel_array / 255 -> skimage.exposure.equalize_hist -> uint8``: the
``equalize-hist`` reader, which reads every other file as ``cv2-gray``.

Training (official: ``RandomResizedCrop(224, scale=(0.2, 1.0), bicubic)``,
``RandomHorizontalFlip``, ``RandomAugment(2, 7, ...)``): the harness prepares each image once at
``Resize((256, 256))`` and draws a random resized crop (scale 0.2-1, aspect 3/4-4/3, bicubic) to
224 and a flip from it; RandAugment is left out (a deviation: it is not part of the shared
platform and the tiny preset's budget).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from bench.imaging.geometry import RESIZE, Frame
from bench.imaging.recipes import Recipe

SIZE = 224
PRE_SIZE = 256
EVAL = Recipe("equalize-hist", Frame(RESIZE, SIZE), "imagenet")
TRAIN_PREFRAME = Recipe("equalize-hist", Frame(RESIZE, PRE_SIZE), "imagenet")


def random_resized_crop(frame: np.ndarray, rng: np.random.Generator, size: int = SIZE,
                        scale: tuple[float, float] = (0.2, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: bool = True
                        ) -> np.ndarray:
    """torchvision's RandomResizedCrop sampling (10 tries, then the centre crop), bicubic
    resize, then a horizontal flip with probability 1/2."""
    h, w = frame.shape[:2]
    area = h * w
    box = None
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            box = (int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw)
            break
    if box is None:
        side = min(h, w)
        box = ((h - side) // 2, (w - side) // 2, side, side)
    top, left, ch, cw = box
    out = cv2.resize(np.ascontiguousarray(frame[top:top + ch, left:left + cw]), (size, size),
                     interpolation=cv2.INTER_CUBIC)
    if flip and rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)
