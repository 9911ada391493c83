"""Reference baselines that bound every real method: `random`, `center` and `oracle`.

They need no weights, so they run anywhere and anchor each table: a method that does not beat
`center` has learned nothing about location, and `oracle` shows the ceiling a protocol allows.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from bench.imaging.geometry import (
    LETTERBOX,
    ORIGINAL,
    Frame,
    boxes_to_letterbox_mask,
    mask_to_letterbox,
)
from bench.methods.base import Method, Option
from bench.registry import register_method
from bench.types import Capabilities, Finding, Query, Sample


def stable_seed(*parts: object) -> int:
    """A seed that depends only on its inputs (not on batching, order or the Python hash salt)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


@register_method("random")
class RandomBaseline(Method):
    """Seeded uniform noise maps and a constant 0.5 score: the chance level of every metric."""

    capabilities = Capabilities(localize=True, classify=True, free_text=True)
    query_agnostic = True
    frame = Frame(LETTERBOX, 224)
    description = "uniform noise maps (seeded per sample and query), constant 0.5 scores"

    def localize(self, samples: list[Sample], queries: list[list[Query]]) -> list[list[np.ndarray]]:
        out = []
        for sample, qs in zip(samples, queries):
            maps = []
            for q in qs:
                rng = np.random.default_rng(stable_seed(self.seed, sample.id, q.id))
                maps.append(rng.random((self.frame.size, self.frame.size), dtype=np.float32))
            out.append(maps)
        return out

    def classify(self, samples: list[Sample], pathologies: list[str]) -> np.ndarray:
        return np.full((len(samples), len(pathologies)), 0.5, dtype=np.float64)

    def config(self) -> dict[str, Any]:
        return {"seed": self.seed}


@register_method("center")
class CenterPrior(Method):
    """A fixed centred Gaussian on the input frame: what a method gets for 'look in the middle'."""

    capabilities = Capabilities(localize=True, free_text=True)
    query_agnostic = True
    frame = Frame(LETTERBOX, 224)
    description = "fixed centred Gaussian prior (sigma = size/4)"
    option_specs = {"sigma": Option(0.25, "standard deviation as a fraction of the frame",
                                    float)}

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.sigma = float(self.option("sigma"))
        n = self.frame.size
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
        c = (n - 1) / 2.0
        s = self.sigma * n
        self._map = np.exp(-((yy - c) ** 2 + (xx - c) ** 2) / (2 * s * s)).astype(np.float32)

    def localize(self, samples: list[Sample], queries: list[list[Query]]) -> list[list[np.ndarray]]:
        return [[self._map for _ in qs] for qs in queries]

    def config(self) -> dict[str, Any]:
        return {"sigma": self.sigma}


@register_method("oracle")
class GroundTruthOracle(Method):
    """The ground truth itself as the heatmap: the ceiling each protocol allows.

    The map is made in the frame the protocol evaluates in (AFLoc: the 224 letterbox, built with
    the same box/mask mapping as the protocol's GT; CheXlocalize: the original frame), so that
    the only losses left are the protocol's own (margin, thresholds on an empty map).
    """

    # free text: the map is the ground truth of the query's finding, whatever its wording
    capabilities = Capabilities(localize=True, classify=True, free_text=True)
    frame = Frame(LETTERBOX, 224)
    description = "ground-truth mask as heatmap, labels as scores"

    def bind(self, dataset: Any, protocol: str) -> None:
        self.frame = Frame(ORIGINAL) if protocol.startswith("chexlocalize") else Frame()

    def _gt(self, sample: Sample, f: Finding) -> np.ndarray:
        hw = sample.hw
        if self.frame.kind == ORIGINAL:
            if f.mask is not None:
                return (f.mask > 0).astype(np.float32)
            m = np.zeros(hw, dtype=np.float32)
            boxes = f.boxes if f.boxes is not None else np.zeros((0, 4))
            for x, y, w, h in np.asarray(boxes, float).reshape(-1, 4):
                m[int(y):int(y + h), int(x):int(x + w)] = 1
            return m
        if f.boxes is not None and len(f.boxes):
            return (boxes_to_letterbox_mask(f.boxes, hw, self.frame.size) > 0).astype(np.float32)
        if f.mask is not None:
            return mask_to_letterbox(f.mask, self.frame.size).astype(np.float32)
        return np.zeros((self.frame.size, self.frame.size), dtype=np.float32)

    def localize(self, samples: list[Sample], queries: list[list[Query]]) -> list[list[np.ndarray]]:
        out = []
        for sample, qs in zip(samples, queries):
            by_id = {f.query_id: f for f in sample.findings}
            out.append([self._gt(sample, by_id[q.id]) for q in qs])
        return out

    def classify(self, samples: list[Sample], pathologies: list[str]) -> np.ndarray:
        return np.array([[float(s.labels.get(p, 0)) for p in pathologies] for s in samples])
