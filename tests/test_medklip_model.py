"""MedKLIP's scores, maps, new queries and loss, against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.methods.medklip.method import MedKLIPMethod
from bench.methods.medklip.model import (
    MedKLIPConfig,
    MedKLIPModel,
    extra_query_mask,
    medklip_loss,
)
from bench.methods.medklip.names import OBSERVATIONS
from bench.types import Query, Sample


@pytest.fixture(scope="module")
def method():
    m = MedKLIPMethod(preset="tiny", batch_size=4)
    yield m
    m.close()


def samples(n=2, hw=(231, 187)):
    rng = np.random.default_rng(0)
    return [Sample(f"s{i}", rng.integers(0, 256, hw, dtype=np.uint8)) for i in range(n)]


def test_zero_shot_is_softmax_present(method, monkeypatch):
    d = method.model.cfg.d_model
    q = len(OBSERVATIONS)
    out = torch.zeros(2, q, d)
    out[0, 20, 0] = 1.0  # image 0, pneumonia
    out[1, 20, 1] = 1.0  # image 1, pneumonia
    out[0, 8, 0] = -1.0  # image 0, effusion
    with torch.no_grad():
        method.model.classifier.weight.zero_()
        method.model.classifier.bias.copy_(torch.tensor([0.5, 0.0]))
        method.model.classifier.weight[1, 0] = 2.0
        method.model.classifier.weight[1, 1] = -1.0
    monkeypatch.setattr(method.model, "decode", lambda p, book, n_base=None: (out, []))
    probs = method.classify(samples(), ["Pneumonia", "Pleural Effusion"])
    # logits (absent, present): image 0 pneumonia (0.5, 2.0), image 1 (0.5, -1.0),
    # image 0 effusion (0.5, -2.0), image 1 effusion (0.5, 0.0)
    want = np.array([[math.exp(2.0) / (math.exp(0.5) + math.exp(2.0)),
                      math.exp(-2.0) / (math.exp(0.5) + math.exp(-2.0))],
                     [math.exp(-1.0) / (math.exp(0.5) + math.exp(-1.0)),
                      1.0 / (math.exp(0.5) + 1.0)]])
    np.testing.assert_allclose(probs, want, rtol=1e-6)


def test_grounding_map_is_mean_of_four_layers_block_upsampled(method, monkeypatch):
    rng = np.random.default_rng(3)
    q = len(OBSERVATIONS) + 1  # the 75 and one new query (the phrase)
    layers = [rng.random((2, q, 196)).astype(np.float32) for _ in range(4)]
    weights = [torch.from_numpy(w) for w in layers]
    monkeypatch.setattr(method.model, "decode",
                        lambda p, book, n_base=None: (torch.zeros(2, q, 64), weights))
    qs = [[Query("a", "Pneumonia", "Pneumonia")],
          [Query("b", "Pneumonia", "patchy left lower lobe opacity"),
           Query("c", "Pneumothorax", "pneumothorax")]]
    maps = method.localize(samples(), qs)
    for i, row, m in ((0, 20, maps[0][0]), (1, 75, maps[1][0]), (1, 10, maps[1][1])):
        mean = (layers[0][i, row] + layers[1][i, row] + layers[2][i, row]
                + layers[3][i, row]) / 4
        want = np.kron(mean.reshape(14, 14), np.ones((16, 16), dtype=np.float32))
        assert m.shape == (224, 224) and m.dtype == np.float32
        np.testing.assert_allclose(m, want, rtol=1e-6)


def test_query_resolution(method):
    assert method.resolve("Pneumonia", "Pneumonia") == (20, "")
    assert method.resolve("Pleural Effusion", None) == (8, "")
    assert method.resolve("Lung Opacity", None) == (9, "")
    assert method.resolve("Fibrosis", None) == (OBSERVATIONS.index("tail_abnorm_obs"), "")
    assert method.resolve("Pleural Thickening", None) == (OBSERVATIONS.index("thicken"), "")
    assert method.resolve("COVID-19", None) == (None, "COVID-19")
    assert method.resolve("Pneumonia", "small right basal opacity") == (
        None, "small right basal opacity")


def test_new_queries_leave_the_75_unchanged_and_do_not_see_each_other():
    torch.manual_seed(0)
    cfg = MedKLIPConfig(arch="small", d_model=32, heads=4, layers=4, ffn=64, text_dim=16)
    model = MedKLIPModel(cfg).eval()
    memory = torch.randn(2, 196, 32)
    book = torch.randn(75, 16)
    extra = torch.randn(3, 16)
    with torch.no_grad():
        base, wb = model.decode(memory, book)
        both, wx = model.decode(memory, torch.cat([book, extra]), n_base=75)
        alone, wa = model.decode(memory, torch.cat([book, extra[1:2]]), n_base=75)
    torch.testing.assert_close(both[:, :75], base, rtol=0, atol=1e-5)
    torch.testing.assert_close(both[:, 76], alone[:, 75], rtol=0, atol=1e-5)
    torch.testing.assert_close(wx[3][:, 76], wa[3][:, 75], rtol=0, atol=1e-6)
    mask = extra_query_mask(2, 4)
    assert mask.tolist() == [[False, False, True, True], [False, False, True, True],
                             [False, False, False, True], [False, False, True, False]]
    # cross-attention rows are distributions over the 196 patches
    torch.testing.assert_close(wb[0].sum(-1), torch.ones(2, 75))


def test_loss_on_a_hand_computed_case():
    torch.manual_seed(0)
    cfg = MedKLIPConfig(arch="small", d_model=4, heads=1, layers=1, ffn=8, text_dim=2,
                        num_queries=2)
    model = MedKLIPModel(cfg)
    with torch.no_grad():
        model.classifier.weight.copy_(torch.tensor([[0.0, 0, 0, 0], [1.0, 0, 0, 0]]))
        model.classifier.bias.zero_()
        model.cl_fc.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0.0, 1, 0, 0]]))
        model.cl_fc.bias.zero_()
    out = torch.tensor([[[1.0, 0, 0, 0], [2.0, 1, 0, 0]]])  # one image, two entities
    labels = torch.tensor([[1.0, -1.0]])  # entity 0 present, entity 1 not mentioned
    index = torch.tensor([[[0, 1] + [1] * 6, [0] * 8]])
    book = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # position 0 -> (1, 0), 1 -> (0, 1)
    got = medklip_loss(model, out, labels, index, book)
    # existence: entity 0 logits (0, 1), label 1
    ce = -math.log(math.exp(1) / (1 + math.exp(1)))
    # position: cl_fc(out) = (1, 0); scores (1, 0, 0, 0, 0, 0, 0, 0), target 0
    cl = -math.log(math.exp(1) / (math.exp(1) + 7))
    assert got["loss_ce"].item() == pytest.approx(ce, rel=1e-6)
    assert got["loss_cl"].item() == pytest.approx(cl, rel=1e-6)
    assert got["loss"].item() == pytest.approx(ce + cl, rel=1e-6)


def test_training_path_without_weights_gives_the_same_outputs():
    torch.manual_seed(1)
    cfg = MedKLIPConfig(arch="small", d_model=32, heads=4, layers=4, ffn=64, text_dim=16)
    model = MedKLIPModel(cfg).eval()
    memory, book = torch.randn(2, 196, 32), torch.randn(75, 16)
    with torch.no_grad():
        a, wa = model.decode(memory, book)
        b, wb = model.decode(memory, book, need_weights=False)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert len(wa) == 4 and wb == []
