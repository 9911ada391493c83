"""The shared `Method` of the one-class anomaly detectors (RD++, ReContrast).

Maps are query-agnostic: the model never sees the query, so every pathology query of an image
gets the image's one anomaly map (`bench list` and table footnotes say so), and zero-shot
diagnosis is the image's anomaly score for every pathology, as the paper's Table 2 uses it. Maps
and scores follow the official test code (`maps`): sum over scales of 1 - cosine, bilinear
(align_corners=True) to the input side, Gaussian sigma 4, score = max.

A run computes each image once: `localize` and `classify` of the same images share one forward
pass (a small cache keyed by sample id).
"""

from __future__ import annotations

import gc
from collections import OrderedDict
from typing import Any, ClassVar

import numpy as np
import torch

from bench.errors import UsageError
from bench.imaging.geometry import Frame
from bench.imaging.recipes import Recipe
from bench.methods.base import ONE_CLASS, Method, Option, parse_bool
from bench.types import Capabilities, Query, Sample

from .maps import SMOOTHINGS, anomaly_maps, image_scores

CACHE_SIZE = 256


def one_class_train_options(imagenet_help: str, block_unit: str) -> dict[str, Option]:
    """The `bench train` options RD++ and ReContrast share (each adds its own)."""
    return {
        "network": Option(None, "paper (WRN50-2) or tiny (default: the preset's)",
                          choices=("paper", "tiny")),
        "size": Option(None, "input side (paper 256, tiny 128)", int),
        "imagenet": Option(None, imagenet_help, parse_bool),
        "block": Option(None, f"{block_unit} per epoch, i.e. between validations (default: "
                        f"the preset's)", int),
        "val_images": Option(1000, "at most this many validation images for checkpoint "
                             "selection", int),
    }


class AnomalyMethod(Method):
    """Subclasses set `frame_kind` and `build(checkpoint, seed) -> (model, info)`; the model has
    a `cfg` with the input `size` and `pairs(x) -> (teacher features, student features)`."""

    learning = ONE_CLASS
    query_agnostic = True
    # any query text is accepted (and ignored), as by `center` and `random`: MS-CXR's own
    # phrases (--prompt precise) score these methods too
    capabilities = Capabilities(localize=True, classify=True, free_text=True, trainable=True)
    frame_kind: ClassVar[str] = "resize"
    option_specs: ClassVar[dict[str, Option]] = {
        "checkpoint": Option(None, "weights: bench train's file or an official layout"),
        "smoothing": Option("scipy", "map smoothing: scipy (gaussian_filter sigma 4, the "
                            "official test code) or 5x5 (ReContrast's evaluation_batch: mean "
                            "over pairs, 5x5 sigma-4 kernel)", choices=SMOOTHINGS),
        "max_ratio": Option(0.0, "image score: 0 = map maximum (official default); r > 0 = "
                            "mean of the top r of the pixels (ReContrast's option)", float),
        "batch_size": Option(8, "images per forward pass", int),
    }

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", seed: int = 0,
                 **options: Any):
        super().__init__(checkpoint, device, seed, **options)
        torch.manual_seed(seed)
        self.model, self.info = self.build(checkpoint, seed)
        self.model.to(device).eval()
        self.size = int(self.model.cfg.size)
        self.frame = Frame(self.frame_kind, self.size)
        recipe = Recipe("cv2-gray", self.frame, "imagenet")
        self.recipes = {"localize": recipe, "classify": recipe}
        self.smoothing = self.option("smoothing")
        self.max_ratio = float(self.option("max_ratio"))
        if self.max_ratio < 0 or self.max_ratio > 1:
            raise UsageError(f"method '{self.name}': max_ratio must be in [0, 1]")
        self.batch_size = int(self.option("batch_size"))
        self._cache: OrderedDict[str, tuple[np.ndarray, float]] = OrderedDict()

    def build(self, checkpoint: str | None, seed: int) -> tuple[torch.nn.Module, dict[str, Any]]:
        raise NotImplementedError

    def _check_open(self) -> None:
        if self.closed:
            raise UsageError(f"method '{self.name}' was closed; build a new one")

    @torch.no_grad()
    def maps_and_scores(self, samples: list[Sample]) -> list[tuple[np.ndarray, float]]:
        """Per sample: the anomaly map on the frame (float32) and the image score."""
        self._check_open()
        found = {s.id: self._cache[s.id] for s in samples if s.id in self._cache}
        todo = [s for s in samples if s.id not in found]
        for a in range(0, len(todo), self.batch_size):
            chunk = todo[a:a + self.batch_size]
            x = self.recipes["localize"].tensor(chunk).to(self.device)
            t, s = self.model.pairs(x)
            maps = anomaly_maps(t, s, self.size, self.smoothing)
            scores = image_scores(maps, self.max_ratio)
            for sample, m, v in zip(chunk, maps, scores):
                found[sample.id] = (m.astype(np.float32), float(v))
        for sid, value in found.items():  # the newest at the end; the oldest leave first
            self._cache[sid] = value
            self._cache.move_to_end(sid)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return [found[s.id] for s in samples]

    def localize(self, samples: list[Sample], queries: list[list[Query]]) -> list[list[np.ndarray]]:
        out = self.maps_and_scores(samples)
        return [[m for _ in qs] for (m, _), qs in zip(out, queries)]

    def classify(self, samples: list[Sample], pathologies: list[str]) -> np.ndarray:
        scores = np.array([v for _, v in self.maps_and_scores(samples)], dtype=np.float64)
        return np.repeat(scores[:, None], len(pathologies), axis=1)

    def config(self) -> dict[str, Any]:
        return {**self.options, "smoothing": self.smoothing, "max_ratio": self.max_ratio,
                "network": self.model.cfg.to_json(), "weights": self.info,
                "score": "image anomaly score, the same for every pathology",
                "maps": "query-agnostic: one anomaly map per image, every query gets it",
                "random_init": bool(self.info.get("random_init")),
                "notice": self.info.get("notice")}

    def close(self) -> None:
        self.model = None
        self._cache.clear()
        super().close()
        gc.collect()
