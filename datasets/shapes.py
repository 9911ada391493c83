"""`shapes`: a tiny built-in set of generated images and masks (synthetic), for smoke tests.

Each image holds up to three bright ellipses, one per pathology, on a noisy background; the GT
masks are exact. It exists so the evaluator, protocols and CLI can
be exercised in seconds without the full synthetic world; it says nothing about real methods.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.datasets.base import CheckReport, Dataset
from bench.registry import register_dataset
from bench.types import CLASSIFICATION, LOCALIZATION, Finding, Sample

PATHOLOGIES = ("Opacity", "Nodule", "Effusion")


@register_dataset("shapes")
class Shapes(Dataset):
    tasks = (LOCALIZATION, CLASSIFICATION)
    pathologies = PATHOLOGIES
    splits = ("val", "test", "train")  # a split's seed is its position: appended, not moved
    default_split = "test"
    synthetic = True
    needs_root = False
    description = "synthetic: tiny generated ellipses with exact masks (smoke tests)"

    def __init__(self, root=None, split=None, on_error="raise", n: int | str = 48,
                 seed: int | str = 0, height: int | str = 120, width: int | str = 150,
                 **options: Any):
        super().__init__(root, split, on_error, **options)
        self.n, self.seed = int(n), int(seed)
        self.height, self.width = int(height), int(width)
        self._split_code = self.splits.index(self.split)

    def __len__(self) -> int:
        return self.n

    def config(self) -> dict[str, Any]:
        return {"n": self.n, "seed": self.seed, "height": self.height, "width": self.width}

    def load(self, index: int) -> Sample:
        rng = np.random.default_rng([self.seed, self._split_code, index])
        h, w = self.height, self.width
        image = rng.normal(60, 12, (h, w))
        yy, xx = np.mgrid[0:h, 0:w]
        findings, labels = [], {}
        present = rng.random(len(PATHOLOGIES)) < 0.45
        for k, name in enumerate(PATHOLOGIES):
            labels[name] = int(present[k])
            if not present[k]:
                continue
            cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.2, 0.8) * w
            ry, rx = rng.uniform(0.08, 0.2) * h, rng.uniform(0.08, 0.2) * w
            mask = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.uint8)
            image += mask * rng.uniform(60, 120)
            findings.append(Finding(pathology=name, query_id=name, mask=mask,
                                    phrase=f"{'large' if rx * ry > 0.02 * h * w else 'small'} "
                                           f"{name.lower()}"))
        image = np.clip(image, 0, 255).astype(np.uint8)
        return Sample(id=f"synthetic-shapes-{self.split}-{index:04d}", image=image,
                      findings=findings, labels=labels,
                      meta={"split": self.split, "synthetic": True})

    def check(self) -> CheckReport:
        return CheckReport(self.name, "(generated)", self.split, counts={"images": self.n},
                           notes=["generated in memory; nothing to check on disk"])
