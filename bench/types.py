"""Core types that flow between dataset adapters, methods, protocols and the results store.

A dataset yields `Sample`s in the image's *original* frame; a method turns images and text
queries into raw maps on its own input frame (`bench.imaging.geometry.Frame`); a protocol maps
those to its evaluation frame and produces metric rows. Keeping every GT in the original frame
is what lets one sample serve protocols with different frames (AFLoc's 224 letterbox,
CheXlocalize's native resolution).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Tasks a dataset can serve and capabilities a method can have.
LOCALIZATION = "localization"
CLASSIFICATION = "classification"
PRETRAINING = "pretraining"


@dataclass
class Finding:
    """One localization query on one image: a pathology, optional phrase, and its ground truth.

    `mask` is the GT in the original image frame (H x W, uint8). It is usually 0/1; AFLoc's
    MS-CXR loader *sums* overlapping boxes, so a protocol that reproduces that quirk may see 2s.
    `boxes` (k x 4, x, y, w, h in original pixels) are kept when the GT came from boxes, because
    AFLoc maps boxes (not masks) to its 224 frame and floors the coordinates there.
    A negative finding (pathology absent) has an all-zero mask, or `mask=None` and no boxes.
    """

    pathology: str
    query_id: str
    mask: np.ndarray | None = None
    boxes: np.ndarray | None = None
    phrase: str | None = None
    positive: bool = True
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Sample:
    """One image with everything the harness knows about it, in the image's original frame."""

    id: str
    image: np.ndarray | None  # H x W (uint8 or uint16/float), photometric fixes applied
    findings: list[Finding] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)  # pathology -> 0/1 for classification
    report: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # split, view, patient id, path, ...

    @property
    def hw(self) -> tuple[int, int]:
        if self.image is not None:
            return int(self.image.shape[0]), int(self.image.shape[1])
        return tuple(self.meta["hw"])  # type: ignore[return-value]


@dataclass(frozen=True)
class Query:
    """A text query sent to a method for one image; `id` is the finding's query_id."""

    id: str
    pathology: str
    text: str


@dataclass(frozen=True)
class Capabilities:
    localize: bool = False
    classify: bool = False
    free_text: bool = False
    trainable: bool = False

    def as_list(self) -> list[str]:
        names = ("localize", "classify", "free_text", "trainable")
        return [n.replace("_", "-") for n in names if getattr(self, n)]
