"""Where the harness keeps generated data and default checkpoints on this machine."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$BENCH_CACHE`, else `~/.cache/afloc-bench`."""
    env = os.environ.get("BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "afloc-bench"


def default_train_out(method: str, preset: str, dataset: str) -> Path:
    """Where `bench train METHOD --preset P --dataset D` writes when no --out is given."""
    return cache_dir() / "checkpoints" / f"{method}-{preset}-{dataset}"


def default_checkpoint(method: str) -> Path | None:
    """The tiny model of `method` trained on the synthetic MIMIC set by
    `bench train METHOD --dataset synthetic-mimic --preset tiny`, if any."""
    folder = default_train_out(method, "tiny", "synthetic-mimic")
    for name in ("best.safetensors", "best.pt", "best"):
        p = folder / name
        if p.exists():
            return p
    return None
