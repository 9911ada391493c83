"""`human`: the CheXlocalize radiologist benchmark, scored as if it were a method.

CheXlocalize ships, for its test split, the segmentations (`hb_segmentations_test.json`) and
most salient points (`hb_salient_pt_test.json`) that a third radiologist drew. Served through
the Method contract, they go through the same protocol code as every model: the maps are the
benchmark's binary masks at native resolution (any threshold in (0, 1) recovers them exactly, so
no validation tuning is run), and the hit rate uses the radiologist's points instead of a map
argmax, as CheXlocalize's `eval.py --if_human_benchmark` does.
"""

from __future__ import annotations

import numpy as np

from bench.errors import UsageError
from bench.imaging.geometry import ORIGINAL, Frame
from bench.methods.base import Method
from bench.registry import register_method
from bench.types import Capabilities, Query, Sample


@register_method("human")
class HumanBenchmark(Method):
    capabilities = Capabilities(localize=True)
    frame = Frame(ORIGINAL)
    description = "CheXlocalize human benchmark (test split): radiologist masks and points"
    tunes_on_val = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._source = None

    def bind(self, dataset, protocol: str) -> None:
        human = getattr(dataset, "human", None)
        if human is None or not hasattr(dataset, "hb_masks"):
            raise UsageError(f"the human benchmark exists only for CheXlocalize, not "
                             f"'{dataset.name}'")
        if dataset.split != "test" or not human.available():
            raise UsageError("the human benchmark covers the CheXlocalize test split only and "
                             "needs CheXlocalize/hb_segmentations_test.json")
        self._source = dataset

    def _masks(self, sample: Sample) -> dict[str, np.ndarray]:
        if self._source is None:
            raise UsageError("the human benchmark needs its CheXlocalize dataset bound first")
        return self._source.hb_masks(cxr_id(sample))

    def localize(self, samples: list[Sample], queries: list[list[Query]]) -> list[list[np.ndarray]]:
        out = []
        for s, qs in zip(samples, queries):
            masks = self._masks(s)
            empty = np.zeros(s.hw, np.float32)
            out.append([masks[q.pathology].astype(np.float32) if q.pathology in masks else empty
                        for q in qs])
        return out

    def points(self, samples: list[Sample], queries: list[list[Query]]) -> list[list]:
        """Per query the radiologist's salient point(s) [[x, y], ...]; [] when none was given."""
        if self._source is None:
            raise UsageError("the human benchmark needs its CheXlocalize dataset bound first")
        out = []
        for s, qs in zip(samples, queries):
            pts = self._source.hb_points(cxr_id(s))
            out.append([_as_points(pts.get(q.pathology)) for q in qs])
        return out


def cxr_id(sample: Sample) -> str:
    """The benchmark files' key of a sample: its CheXlocalize ``cxr_id`` (the synthetic world's
    ids carry a ``synthetic-`` prefix its files do not)."""
    return str(sample.meta.get("cxr_id", sample.id))


def _as_points(value) -> list[list[float]]:
    if value is None:
        return []
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 0:
        return []
    return arr.reshape(-1, 2).tolist()
