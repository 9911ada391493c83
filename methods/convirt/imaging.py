"""ConVIRT's input recipes (`bench.imaging.recipes`), ViLMedic's ``ImageDataset`` transforms.

Evaluation (ViLMedic's transform for every split but train): ``Resize((224, 224))`` (both sides,
the aspect ignored; PIL bilinear, antialiased), ``ToTensor``, ImageNet mean and std. Maps and
scores share it, so one forward pass serves both.

Training: ``Resize(256)`` (short side), ``RandomCrop(224)``, ``RandomHorizontalFlip``, then the
same normalisation. The harness prepares each image once as a square pre-frame: torchvision's
``Resize(256)`` then ``CenterCrop(256)``, from which each step draws the 224 crop and the flip;
so the crop ranges over the central 256 x 256 of the resized image, where ViLMedic's ranges
over the whole long side (307 pixels for MIMIC-CXR's common 2544 x 3056 images): a deviation,
because the prepared frames of a training set are one array of equal squares.

Images are read grey (``cv2-gray``): ViLMedic opens a JPG with PIL and converts it to RGB, which
for a grey radiograph repeats the grey value in the three channels, as the recipe does.
"""

from __future__ import annotations

import numpy as np

from bench.imaging.geometry import RESIZE, SHORT_SIDE_CROP, Frame
from bench.imaging.recipes import Recipe

SIZE = 224
PRE_SIZE = 256
EVAL = Recipe("cv2-gray", Frame(RESIZE, SIZE), "imagenet")
TRAIN_PREFRAME = Recipe("cv2-gray", Frame(SHORT_SIDE_CROP, PRE_SIZE, PRE_SIZE), "imagenet")


def random_crop_flip(pre_frame: np.ndarray, rng: np.random.Generator, size: int = SIZE,
                     flip: bool = True) -> np.ndarray:
    """RandomCrop(size) of a pre-frame, then a horizontal flip with probability 1/2 (`flip`):
    offsets uniform in [0, side - size] as torchvision draws them."""
    h, w = pre_frame.shape[:2]
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    out = pre_frame[top:top + size, left:left + size]
    if flip and rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)
