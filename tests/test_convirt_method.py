"""The `convirt` method: its maps and zero-shot scores are exact functions of the model (written
out here from the modules' weights), deterministic, and shared by one forward pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from afloc_helpers import synthetic_sample

from bench.methods.convirt import checkpoint as ck
from bench.methods.convirt.imaging import EVAL
from bench.methods.convirt.method import ConVIRTMethod, convirt_prompts
from bench.methods.convirt.text import clean_text
from bench.types import Query

TEXTS = ["Opacity in the left lower lung.", "Large right pneumothorax."]


@pytest.fixture(scope="module")
def method():
    return ConVIRTMethod(seed=0)  # the tiny preset, random weights


def _by_hand(m, samples, texts):
    """Layer4 grid, vis_proj per location, pooled embedding and text embeddings, from the
    modules' weights (float64)."""
    model = m.model.double()
    try:
        x = EVAL.tensor(samples).double()
        with torch.no_grad():
            for i in range(8):  # conv1, bn1, relu, maxpool, layer1..4
                x = model.visual.model[i](x)
            w0, b0 = model.vis_proj[0].weight, model.vis_proj[0].bias
            w2, b2 = model.vis_proj[2].weight, model.vis_proj[2].bias
            local = torch.einsum("ed,bdhw->behw", w0, x) + b0[None, :, None, None]
            local = torch.einsum("fe,behw->bfhw", w2, local.clamp(min=0)) + b2[None, :, None,
                                                                                 None]
            pooled = x.mean((2, 3))
            glob = (pooled @ w0.t() + b0).clamp(min=0) @ w2.t() + b2
            enc = m.tokenizer([clean_text(t) for t in texts], add_special_tokens=False,
                              padding="max_length", truncation=True, max_length=128,
                              return_tensors="pt")
            pooler = model.linguistic.encoder(input_ids=enc["input_ids"],
                                              attention_mask=enc["attention_mask"]).pooler_output
            text = model.lin_proj(pooler)
    finally:
        m.model.float()
    return local, glob, text


def test_maps_are_the_cosine_of_vis_proj_per_location_with_the_text(method):
    samples = [synthetic_sample(i) for i in range(3)]
    maps = method.localize(samples, [[Query("a", "x", TEXTS[0]), Query("b", "y", TEXTS[1])]
                                     for _ in samples])
    local, _, text = _by_hand(method, samples, TEXTS)
    for i in range(3):
        for q in range(2):
            v, t = local[i], text[q]
            want = torch.einsum("dhw,d->hw", v, t) / (v.norm(dim=0) * t.norm())
            assert maps[i][q].shape == (7, 7) and maps[i][q].dtype == np.float32
            np.testing.assert_allclose(maps[i][q], want.numpy(), rtol=0, atol=2e-5)


def test_maps_are_deterministic_across_calls_and_instances(method, tmp_path):
    from bench.methods._shared.encoders import tokenizer_to_json

    path = tmp_path / "c.safetensors"
    ck.save_weights(path, method.model.state_dict(), method.model.cfg.to_json(),
                    tokenizer_to_json(method.tokenizer))
    samples = [synthetic_sample(i) for i in range(2)]
    qs = [[Query("a", "x", TEXTS[0])] for _ in samples]
    first = [ConVIRTMethod(checkpoint=str(path)).localize(samples, qs) for _ in range(2)]
    again = ConVIRTMethod(checkpoint=str(path))
    runs = first + [again.localize(samples, qs), again.localize(samples, qs)]
    for run in runs[1:]:
        for a, b in zip(run, runs[0]):
            np.testing.assert_array_equal(a[0], b[0])
    # the model it was saved from: the same function (float rounding aside: the loaded weights
    # sit elsewhere in memory, and the kernels may sum in another order)
    np.testing.assert_allclose(runs[0][0][0], method.localize(samples, qs)[0][0], atol=1e-6)


@pytest.mark.parametrize("pathology", ["Pneumothorax", "COVID-19"])
def test_zero_shot_by_hand(method, pathology):
    samples = [synthetic_sample(i) for i in range(3)]
    probs = method.classify(samples, [pathology])
    pos, neg = convirt_prompts(pathology)
    _, glob, text = _by_hand(method, samples, pos + neg)
    text = text / text.norm(dim=1, keepdim=True)
    p_vec, n_vec = text[:len(pos)].mean(0), text[len(pos):].mean(0)
    for i in range(3):
        g = glob[i]
        cos_p = float(g @ p_vec / (g.norm() * p_vec.norm()))
        cos_n = float(g @ n_vec / (g.norm() * n_vec.norm()))
        want = math.exp(cos_p / 0.1) / (math.exp(cos_p / 0.1) + math.exp(cos_n / 0.1))
        assert probs[i, 0] == pytest.approx(want, abs=1e-5)


def test_maps_and_scores_share_one_forward_pass(method, monkeypatch):
    calls = []
    real = method.model.image_features

    def counted(x, local=True):
        calls.append(local)
        return real(x, local)

    monkeypatch.setattr(method.model, "image_features", counted)
    method._last_batch = None
    samples = [synthetic_sample(i) for i in range(2)]
    method.localize(samples, [[Query("a", "x", TEXTS[0])] for _ in samples])
    method.classify(samples, ["Pneumonia"])
    assert calls == [True]


def test_describe_labels_the_map_an_adaptation(method):
    info = method.describe(("localize", "classify"))
    assert "not official" in info["config"]["heatmap"] or "not an official" in \
        info["config"]["heatmap"]
    assert info["inputs"]["localize"] == {"reader": "cv2-gray", "frame": "resize 224",
                                          "normalize": "imagenet"}
    assert "adaptation" in ConVIRTMethod.description


def test_a_random_paper_model_from_a_tokenizer_without_config(tmp_path, monkeypatch):
    """A text-encoder folder with a tokenizer only (benchmarks): roberta-base's architecture
    (made small here), said so in the info."""
    from bench.methods._shared.encoders import build_wordpiece
    from bench.methods.convirt import presets

    build_wordpiece(["no pneumonia"], 50).save_pretrained(tmp_path)
    small = {**presets.ROBERTA_BASE, "hidden_size": 32, "num_hidden_layers": 1,
             "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 10}
    monkeypatch.setattr(presets, "ROBERTA_BASE", small)
    m = ConVIRTMethod(preset="paper", text_encoder=str(tmp_path))
    enc = m.model.linguistic.encoder
    assert type(enc).__name__ == "RobertaModel" and enc.config.hidden_size == 32
    assert enc.config.vocab_size == len(m.tokenizer) > 10
    assert "roberta-base architecture" in m.info["text_config"]
    assert m.model.vis_proj[0].weight.shape == (768, 2048)
    assert m.config()["random_init"] is True
