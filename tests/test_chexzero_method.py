"""CheXzero's zero-shot rule and ensemble on hand-computed cases, the method's outputs against
an independent computation with open_clip's own forward, and the map adaptation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from chexzero_helpers import save_small

from bench.methods.chexzero.imaging import EVAL
from bench.methods.chexzero.method import CheXzeroMethod, ensemble_maps, ensemble_probs
from bench.types import Query, Sample


def test_zero_shot_is_the_softmax_of_raw_cosines():
    img = torch.tensor([[[1.0, 0.0]]])  # N=1, M=1, D=2
    pos = torch.tensor([[[0.6, 0.8]]])  # cos 0.6
    neg = torch.tensor([[[0.8, 0.6]]])  # cos 0.8
    want = math.exp(0.6) / (math.exp(0.6) + math.exp(0.8))  # no logit_scale
    assert ensemble_probs(img, pos, neg)[0, 0] == pytest.approx(want, abs=1e-7)
    assert want == pytest.approx(0.4501660, abs=1e-7)


def test_an_ensemble_averages_the_members_probabilities():
    img = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # one image, two members
    pos = torch.tensor([[[0.6, 0.8], [0.0, 1.0]]])  # member 1: cos 0.6; member 2: cos 1
    neg = torch.tensor([[[0.8, 0.6], [1.0, 0.0]]])  # member 1: cos 0.8; member 2: cos 0
    p1 = math.exp(0.6) / (math.exp(0.6) + math.exp(0.8))
    p2 = math.e / (math.e + 1.0)
    assert ensemble_probs(img, pos, neg)[0, 0] == pytest.approx((p1 + p2) / 2, abs=1e-7)
    assert (p1 + p2) / 2 == pytest.approx(0.5906123, abs=1e-7)


def test_ensemble_maps_average_the_members_cosines():
    local = torch.zeros(2, 1, 2, 2)  # M=2, 1 x 2 grid, D=2
    local[0, 0, 0], local[0, 0, 1] = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    local[1, 0, 0], local[1, 0, 1] = torch.tensor([0.6, 0.8]), torch.tensor([-1.0, 0.0])
    text = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # Q=1: member 1 (1, 0), member 2 (0, 1)
    got = ensemble_maps(local, text)
    np.testing.assert_allclose(got.numpy(), [[[(1.0 + 0.8) / 2, (0.0 + 0.0) / 2]]], atol=1e-7)


def _samples(n=2):
    rng = np.random.default_rng(0)
    out = []
    for i, (h, w) in enumerate([(300, 260), (250, 330)][:n]):
        img = rng.integers(0, 256, (h, w)).astype(np.uint8)
        out.append(Sample(f"s{i}", img, meta={}))
    return out


def _independent(model, samples, texts):
    """open_clip's own forward: encode_image, encode_text, and the patch tokens it returns with
    output_tokens (after ln_post) times proj; raw cosines."""
    from open_clip.tokenizer import tokenize

    x = EVAL.tensor(samples)
    with torch.no_grad():
        img = model.encode_image(x)
        model.visual.output_tokens = True
        _, tokens = model.visual(x)
        model.visual.output_tokens = False
        patches = tokens @ model.visual.proj
        txt = model.encode_text(tokenize(texts))
    img = img / img.norm(dim=-1, keepdim=True)
    patches = patches / patches.norm(dim=-1, keepdim=True)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    return img.double().numpy(), patches.double().numpy(), txt.double().numpy()


def _official_probs(img, pos, neg):
    """zero_shot.run_softmax_eval: np.exp of the cosines."""
    cp, cn = img @ pos.T, img @ neg.T
    return np.exp(cp) / (np.exp(cp) + np.exp(cn))


def test_the_method_scores_and_maps_as_computed_independently(tmp_path):
    model = save_small(tmp_path / "m.safetensors", seed=4)
    samples = _samples()
    method = CheXzeroMethod(checkpoint=str(tmp_path / "m.safetensors"))
    labels = ["Pneumonia", "No Finding"]
    img, patches, txt = _independent(model, samples,
                                     ["Pneumonia", "no Pneumonia", "No Finding",
                                      "no No Finding", "small left apical pneumothorax"])
    want = _official_probs(img, txt[[0, 2]], txt[[1, 3]])
    np.testing.assert_allclose(method.classify(samples, labels), want, rtol=0, atol=1e-6)
    assert method.class_prompts("No Finding") == (["No Finding"], ["no No Finding"])
    query = Query("q0", "Pneumothorax", "small left apical pneumothorax")
    maps = method.localize(samples, [[query], []])
    assert maps[1] == [] and maps[0][0].shape == (7, 7) and maps[0][0].dtype == np.float32
    want_map = (patches[0] @ txt[4]).reshape(7, 7)
    np.testing.assert_allclose(maps[0][0], want_map, rtol=0, atol=1e-6)
    cfg = method.config()
    assert "adaptation" in cfg["heatmap"] and "not official" in cfg["heatmap"]
    assert cfg["templates"] == ["{}", "no {}"] and cfg["n_members"] == 1
    method.close()


def test_an_ensemble_method_averages_probabilities_and_maps(tmp_path):
    a = save_small(tmp_path / "b_member.safetensors", seed=1)
    b = save_small(tmp_path / "a_member.safetensors", seed=2)
    samples = _samples()
    method = CheXzeroMethod(checkpoint=f"{tmp_path / 'b_member.safetensors'},"
                                       f"{tmp_path / 'a_member.safetensors'}")
    assert [m["file"] for m in method.config()["members"]] == ["a_member.safetensors",
                                                               "b_member.safetensors"]
    texts = ["Edema", "no Edema", "bilateral edema"]
    probs, maps = [], []
    for model in (b, a):  # sorted order: a_member (model b) first
        img, patches, txt = _independent(model, samples, texts)
        probs.append(_official_probs(img, txt[[0]], txt[[1]]))
        maps.append((patches[1] @ txt[2]).reshape(7, 7))
    np.testing.assert_allclose(method.classify(samples, ["Edema"]), np.mean(probs, axis=0),
                               rtol=0, atol=1e-6)
    got = method.localize(samples, [[], [Query("q1", "Edema", "bilateral edema")]])
    np.testing.assert_allclose(got[1][0], np.mean(maps, axis=0), rtol=0, atol=1e-6)
    method.close()


def test_long_texts_are_cut_like_chexzero_training_cuts_them():
    method = CheXzeroMethod()  # the tiny preset, random weights
    assert method.config()["random_init"] is True
    ids = method.tokenizer(["word " * 200])
    assert ids.shape == (1, 77) and int(ids[0, -1]) == 49407  # <|endoftext|> last
    assert method.text_embeddings(["word " * 200], "query").shape == (1, 1, 64)
    method.close()
