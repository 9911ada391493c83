"""`rdpp` and `recontrast` as methods: official and anomalib files load into them (or are
refused with the reason), maps are query-agnostic and equal the official pipeline's."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from bench.datasets.shapes import Shapes
from bench.errors import CheckpointError
from bench.methods.anomaly.maps import anomaly_maps
from bench.methods.anomaly.networks import TINY
from bench.methods.rdpp.model import RDPP
from bench.methods.recontrast.model import ReContrastNet
from bench.registry import get_method
from bench.types import Query

QUERIES = [Query("a", "Nodule", "Nodule"), Query("b", "Opacity", "Opacity")]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _sample():
    return Shapes(split="test", n=2).load(0)


def test_an_anomalib_file_runs_as_plain_reverse_distillation(tmp_path):
    torch.manual_seed(0)
    src = RDPP(replace(TINY, size=256), projection=False)
    state = {"encoder.feature_extractor." + k: v for k, v in src.encoder.state_dict().items()}
    state |= {"bottleneck." + k: v for k, v in src.bn.state_dict().items()}
    state |= {"decoder." + k: v for k, v in src.decoder.state_dict().items()}
    torch.save(state, tmp_path / "rd.pth")
    m = get_method("rdpp")(str(tmp_path / "rd.pth"))
    info = m.config()["weights"]
    assert info["format"] == "anomalib" and info["projection"] is False
    assert info["model"].startswith("plain Reverse Distillation")
    s = _sample()
    maps = m.localize([s], [QUERIES])[0]
    assert maps[0].shape == (256, 256) and np.array_equal(maps[0], maps[1])
    x = m.recipes["localize"].tensor([s])
    src.eval()
    with torch.no_grad():
        t = src.encoder(x)
        want = anomaly_maps(t, src.decoder(src.bn(t)), 256)[0]
    np.testing.assert_allclose(maps[0], want, rtol=1e-5, atol=1e-6)


def test_an_official_rdpp_file_needs_the_imagenet_teacher(tmp_path):
    torch.manual_seed(0)
    src = RDPP(replace(TINY, size=256))
    torch.save({"proj": src.proj.state_dict(), "bn": src.bn.state_dict(),
                "decoder": src.decoder.state_dict()}, tmp_path / "rdpp.pth")
    with pytest.raises(CheckpointError, match="holds no teacher"):
        get_method("rdpp")(str(tmp_path / "rdpp.pth"))


def test_recontrast_state_dicts_load_in_recontrast_only(tmp_path):
    torch.manual_seed(0)
    src = ReContrastNet(replace(TINY, size=256, output_conv=2))
    torch.save({"state_dict": src.state_dict()}, tmp_path / "rc.pth")
    m = get_method("recontrast")(str(tmp_path / "rc.pth"))
    assert m.config()["weights"]["format"] == "recontrast"
    s = _sample()
    got = m.classify([s], ["Nodule", "Opacity", "Effusion"])
    assert got.shape == (1, 3) and len(set(got[0].tolist())) == 1
    with pytest.raises(CheckpointError, match="load it with method 'recontrast'"):
        get_method("rdpp")(str(tmp_path / "rc.pth"))


def test_without_a_checkpoint_the_random_tiny_network_says_so():
    m = get_method("recontrast")()
    cfg = m.config()
    assert cfg["random_init"] is True and "RANDOM" in cfg["notice"]
    assert m.frame.kind == "resize" and m.frame.size == TINY.size


def test_options_are_checked():
    from bench.errors import UsageError

    with pytest.raises(UsageError):
        get_method("rdpp")(smoothing="box")
    m = get_method("rdpp")(smoothing="5x5", max_ratio=0.01)
    assert m.config()["smoothing"] == "5x5" and m.max_ratio == 0.01


def test_the_map_cache_never_drops_what_a_call_asks_for(monkeypatch):
    from bench.methods.anomaly import method as am

    monkeypatch.setattr(am, "CACHE_SIZE", 2)
    m = get_method("recontrast")()
    data = [Shapes(split="test", n=4).load(i) for i in range(4)]
    first = m.maps_and_scores(data[:2])
    calls = []
    real = m.model.pairs
    monkeypatch.setattr(m.model, "pairs", lambda x: calls.append(len(x)) or real(x))
    both = m.maps_and_scores([data[0], data[2], data[3]])  # one cached, two new: 3 > 2 kept
    assert calls == [2] and both[0][1] == first[0][1]
    assert len(m._cache) == 2
