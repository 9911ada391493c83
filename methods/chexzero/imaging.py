"""CheXzero's input recipe (`bench.imaging.recipes`), from its ``data_process.py`` and
``zero_shot.py`` / ``train.py`` transforms.

- ``img_to_hdf5``: ``cv2.imread(path)`` (colour, so a grey radiograph's value in three equal
  channels; a 16-bit PNG keeps its high byte), RGB, then ``preprocess``: the longer side scaled to
  320 (both sides ``int(x * 320 / max)``) with PIL's Lanczos (``Image.ANTIALIAS``), pasted on a
  black 320 x 320 "L" canvas at ``((320 - w) // 2, (320 - h) // 2)``; stored as 0..255 floats.
  For a grey image this is the harness's ``cv2-gray`` reader and the ``pil_letterbox 320`` frame.
- at inference and in training (CLIP-pretrained model): the grey value in three channels,
  ``Normalize(101.48761, 83.43944)`` on the 0..255 scale, then ``Resize(224, BICUBIC)`` on the
  tensor. torchvision 0.11 (CheXzero's pin) had no antialiasing for tensors, so the harness
  passes ``antialias=False`` (torchvision >= 0.17 defaults to True, which is not the same input).

One recipe serves maps and scores; the 224 tensor covers the whole 320 frame, so the 7 x 7 patch
grid lies on the ``pil_letterbox 320`` frame and the protocols carry maps back through it.
"""

from __future__ import annotations

from bench.imaging.geometry import PIL_LETTERBOX, Frame
from bench.imaging.recipes import Recipe

PRE_SIZE = 320
SIZE = 224
EVAL = Recipe("cv2-gray", Frame(PIL_LETTERBOX, PRE_SIZE), "chexzero", tensor_resize=SIZE)
