"""benchmarks/inference_speed.py: one row per (method, batch size) for every method with a model,
tiny models on a few tiny images on the CPU; a method that cannot be built says why in its row."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from bench.methods.catalog import CATALOG

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "inference_speed.py"
TINY = ["--preset", "tiny", "--device", "cpu", "--size", "64", "--n", "2", "--repeats", "1"]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("inference_speed_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_all_is_every_registered_method_with_a_model(script):
    with_model = {m.name for m in CATALOG.values()
                  if m.module and m.family != "reference"}
    assert set(script.MODEL_METHODS) == with_model
    assert script.parse_methods("all") == list(script.MODEL_METHODS)
    assert script.parse_methods("gloria,all")[0] == "gloria"


def test_every_method_gets_a_row_with_positive_rates(script, tmp_path, capsys):
    out = tmp_path / "rows.json"
    rows = script.main(["--methods", "all", "--batch", "1,2", "--json", str(out), *TINY])
    want = [(m, b) for m in script.MODEL_METHODS for b in (1, 2)]
    assert [(r["method"], r["batch"]) for r in rows] == want
    for r in rows:
        caps = CATALOG[r["method"]].capabilities
        assert "note" not in r, r
        assert r["preset"] == "tiny" and r["images"] == 2
        for kind in ("localize", "classify"):
            if kind in caps:
                assert r[f"{kind}_img_s"] > 0, r
            else:
                assert f"{kind}_img_s" not in r, r
    saved = json.loads(out.read_text())
    assert saved["rows"] == rows and saved["device"] == "CPU"
    table = capsys.readouterr().out
    assert "localize img/s" in table and "classify img/s" in table
    assert sum(line.startswith("recontrast ") for line in table.splitlines()) == 2


def test_a_method_that_cannot_be_built_says_why(script, monkeypatch, tmp_path):
    real = script.method_args

    def broken(name, *a, **k):
        if name == "biovil":
            raise FileNotFoundError("no CXR-BERT folder")
        return real(name, *a, **k)

    monkeypatch.setattr(script, "method_args", broken)
    rows = script.main(["--methods", "biovil,convirt", "--batch", "2", *TINY])
    assert rows[0]["method"] == "biovil" and "cannot build" in rows[0]["note"]
    assert "no CXR-BERT folder" in rows[0]["note"]
    assert rows[1]["method"] == "convirt" and rows[1]["localize_img_s"] > 0


def test_passes_never_reuse_cached_features(script):
    """Fresh ids each pass: the anomaly methods' id-keyed cache must not serve a timed pass."""
    m = script.build("rdpp", "tiny", "cpu", script.RandomWeights("/nonexistent"), 2)
    data = script.samples(2, 64)
    a, b = script.fresh(data, "l"), script.fresh(data, "l")
    assert {s.id for s in a}.isdisjoint(s.id for s in b)
    m.localize(a, [[]] * 2)
    assert len(m._cache) == 2
    m.localize(b, [[]] * 2)  # computed again, not served from the cache
    assert len(m._cache) == 4
    m.close()
