"""A tiny synthetic world shared by the test_synth_* files (generated once per session)."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=4)
def tiny_world(seed: int = 0) -> Path:
    from bench.synth.world import generate

    out = Path(tempfile.mkdtemp(prefix=f"synth-tiny-{seed}-"))
    atexit.register(shutil.rmtree, out, True)
    generate(out, "tiny", seed)
    return out


def truth(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]
