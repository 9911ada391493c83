"""The `Method` contract: what every adapter provides, and the shared machinery around it.

An adapter says only what is particular to its model: its input `frame`, how it makes a map
for (image, query) pairs, and how it scores pathologies. Batching, query caching, device
placement and provenance live here or in the evaluator.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bench.errors import UsageError
from bench.imaging.geometry import Frame
from bench.types import Capabilities, Query, Sample


class Method:
    """Base class. Subclasses set `capabilities` and `frame` and override what they can do.

    `localize(samples, queries)` returns, per sample, one float32 map per query on the method's
    frame (any H x W covering the frame; the protocol resizes bilinearly). Higher = more likely.
    `classify(samples, pathologies)` returns an N x P array of probabilities.
    """

    name: ClassVar[str] = "method"
    capabilities: ClassVar[Capabilities] = Capabilities()
    frame: Frame = Frame()
    description: ClassVar[str] = ""

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", seed: int = 0,
                 **options: Any):
        self.checkpoint = checkpoint
        self.device = device
        self.seed = seed
        self.options = options

    # -- what adapters override ---------------------------------------------------------
    def localize(self, samples: list[Sample], queries: list[list[Query]]) -> list[list[np.ndarray]]:
        raise UsageError(f"method '{self.name}' cannot localize")

    def classify(self, samples: list[Sample], pathologies: list[str]) -> np.ndarray:
        raise UsageError(f"method '{self.name}' cannot classify")

    def config(self) -> dict[str, Any]:
        """Everything that changes this method's outputs, for run.json and the run key."""
        return dict(self.options)

    # -- shared -------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {
            "method": self.name,
            "capabilities": self.capabilities.as_list(),
            "frame": self.frame.describe(),
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "checkpoint_sha256": sha256_file(self.checkpoint) if self.checkpoint else None,
            "config": self.config(),
        }


def sha256_file(path: str | Path | None) -> str | None:
    """Content hash of a checkpoint, computed once per (file, size, mtime) in a process: the run
    identity and `describe` both ask for it, once per run, and checkpoints are large."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        return None
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


_SHA_CACHE: dict[tuple[str, int, int], str] = {}
