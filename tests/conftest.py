"""Shared test settings: no network, a private cache, quiet progress bars."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
# One private cache for the whole session, set before any fixture or module-level code runs,
# so nothing a test generates or reads (synthetic world, anchors, checkpoints) comes from or
# goes to the user's ~/.cache.
SESSION_CACHE = os.environ.get("BENCH_TEST_CACHE", "")
if not SESSION_CACHE:
    SESSION_CACHE = tempfile.mkdtemp(prefix="bench-test-cache-")
    atexit.register(shutil.rmtree, SESSION_CACHE, True)
os.environ["BENCH_CACHE"] = SESSION_CACHE


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Restore the session cache and clear data locations a test may have changed."""
    monkeypatch.setenv("BENCH_CACHE", SESSION_CACHE)
    monkeypatch.delenv("BENCH_DATA", raising=False)
    monkeypatch.delenv("BENCH_DATA_TOML", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.getbasetemp() / "xdg"))
