"""AFLoc's input recipes (`bench.imaging.recipes`): what the model sees, per purpose.

The official code reads images with ``cv2.imread(path, 0)`` (grayscale uint8), letterboxes
(``_resize_img``, INTER_AREA), converts to RGB, CenterCrops 224 and normalises with mean
and std 0.5. Localization uses the 224 letterbox; zero-shot classification uses torchvision
``Resize(224)`` + ``CenterCrop(224)`` (no letterbox); pretraining per the config letterboxes
to ``imsize`` 256 and center-crops 224 (``faithful``) or letterboxes to 224 (``corrected``).

The ``cv2-gray`` reader gives what ``cv2.imread(path, 0)`` gives for the sample's file (a
16-bit PNG keeps its high byte). Classification reads a DICOM the way the official RSNA loader
does (the only official classification set read from DICOM; NIH, SIIM and CXR-LT are PNG/JPG):
``pixel_array`` min-max remapped to uint8 and truncated (hi-ml's ``remap_to_uint8``). One
difference: the adapters have already inverted MONOCHROME1, which that loader does not (every
RSNA image is MONOCHROME2).

Localization reads a DICOM as GLoRIA's and AFLoc's ``read_from_dicom`` do:
``cv2.convertScaleAbs(pixel_array, alpha=255 / max)``, then ``bitwise_not`` for MONOCHROME1.
The official RSNA grounding run reads PNGs converted by a script that is not published; this
is the conversion the reference notes give for AFLoc localization (and the only DICOM reader in
AFLoc's ``localization/datasets.py``). An 8-bit image whose brightest pixel is below 255 is
stretched by it.
"""

from __future__ import annotations

import numpy as np

from bench.imaging.geometry import Frame, center_crop
from bench.imaging.recipes import Recipe

LOCALIZE = Recipe("read_from_dicom", Frame("letterbox", 224), "half")
CLASSIFY = Recipe("minmax-uint8", Frame("short_side_crop", 224), "half")
# pretraining: the pre-frame prepared once (and cached), then a center crop per item
TRAIN_PREFRAMES = {"faithful": Recipe("cv2-gray", Frame("letterbox", 256), "half"),
                   "corrected": Recipe("cv2-gray", Frame("letterbox", 224), "half")}
TRAIN_SIZE = 224


def train_crop(pre_frame: np.ndarray) -> np.ndarray:
    """The 224 training input from a pre-frame: CenterCrop 224 of the 256 letterbox (faithful;
    the config's ``imsize: 256`` then ``CenterCrop(224)``), the letterbox itself (corrected)."""
    if pre_frame.shape[-1] == TRAIN_SIZE:
        return pre_frame
    return center_crop(pre_frame, TRAIN_SIZE)
