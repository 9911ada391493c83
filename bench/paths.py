"""Where the harness keeps generated data and default checkpoints on this machine."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$BENCH_CACHE`, else `~/.cache/afloc-bench`."""
    env = os.environ.get("BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "afloc-bench"


def default_afloc_checkpoint() -> Path | None:
    """The tiny AFLoc trained on the synthetic MIMIC set by the README's main command, if any."""
    folder = cache_dir() / "checkpoints" / "afloc-tiny-synthetic-mimic"
    for name in ("best.safetensors", "best.pt", "best"):
        p = folder / name
        if p.exists():
            return p
    return None
