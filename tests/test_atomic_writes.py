"""Every atomic writer leaves a shareable file (0644), not mkstemp's private 0600."""

from __future__ import annotations

import stat

import pandas as pd
import torch

from bench.methods.afloc.checkpoint import save_weights
from bench.store import FILE_MODE, atomic_write_bytes, atomic_write_json, atomic_write_parquet


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writers_make_0644_files(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    atomic_write_json(tmp_path / "a.json", {"a": 1})
    atomic_write_parquet(tmp_path / "a.parquet", pd.DataFrame({"a": [1]}))
    save_weights(tmp_path / "w.safetensors", {"w": torch.zeros(2)}, {"preset": "tiny"}, None)
    assert FILE_MODE == 0o644
    for name in ("a.bin", "a.json", "a.parquet", "w.safetensors"):
        assert mode(tmp_path / name) == 0o644, name
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.bin", "a.json", "a.parquet", "w.safetensors"]  # no temp file left
