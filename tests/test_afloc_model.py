"""AFLoc model: shapes of every level, ablation combinations, learning on a tiny batch."""

from __future__ import annotations

import itertools

import pytest
import torch
from afloc_helpers import tiny_batch, tiny_model

from bench.methods._shared.encoders import BERT_BASE
from bench.methods.afloc import presets
from bench.methods.afloc.model import LEVELS, AFLocConfig, AFLocModel, parse_levels


def test_paper_geometry_layer2_38_layer3_19():
    """ResNet-50 at 224 -> 299: layer2 38x38 (words), layer3 19x19, global D (D=768)."""
    bert = dict(BERT_BASE, num_hidden_layers=1, vocab_size=50)
    cfg = AFLocConfig(arch="resnet50", imagenet_weights=False, bert=bert)
    m = AFLocModel(cfg).eval()
    with torch.no_grad():
        out = m.img_encoder(torch.zeros(1, 3, 224, 224))
    assert out["local2"].shape == (1, 768, 38, 38)
    assert out["local"].shape == (1, 768, 19, 19)
    assert out["global"].shape == (1, 768)
    keys = set(m.state_dict())
    for k in ("img_encoder.model.layer4.2.conv3.weight", "img_encoder.global_embedder.bias",
              "img_encoder.local_embedder.weight", "img_encoder.local2_embedder.weight",
              "text_encoder.model.pooler.dense.weight"):
        assert k in keys
    assert m.img_encoder.local2_embedder.weight.shape == (768, 512, 1, 1)
    assert m.img_encoder.local_embedder.weight.shape == (768, 1024, 1, 1)


def test_tiny_shapes_and_masks():
    m, tok = tiny_model(input_size=224)
    images, text = tiny_batch(tok)
    enc = m(images, text)
    d = m.text_encoder.dim
    assert enc["img"]["local2"].shape == (4, d, 28, 28)
    assert enc["img"]["local"].shape == (4, d, 14, 14)
    assert enc["txt"]["words"].shape == (4, d, 32)
    assert enc["txt"]["sentences"].shape == (4, d, 32)
    assert enc["txt"]["report"].shape == (4, d)
    # word slots past [SEP] and sentence slots past the [SEP] copy are exact zeros
    for i, words in enumerate(text.words):
        sep = words.index("[SEP]")
        assert torch.all(enc["txt"]["words"][i, :, sep + 1:] == 0)
        k = int(text.sent_mask[i].sum())
        assert torch.all(enc["txt"]["sentences"][i, :, k + 1:] == 0)
        torch.testing.assert_close(enc["txt"]["sentences"][i, :, k],
                                   enc["txt"]["words"][i, :, sep])


def test_local_init_scale_multiplies_only_the_local_embedders():
    """The tiny preset starts its 1x1 local embedders at 0.1x the default init, so the
    attention's first softmax (over a caption's words or sentences, on raw dot products) is not
    saturated before training; every other weight is the default init of the same seed."""
    assert presets.preset_config("tiny").local_init_scale == 0.1
    assert presets.preset_config("paper").local_init_scale == 1.0
    cfg = presets.preset_config("tiny")
    cfg.bert["vocab_size"] = 50
    base = AFLocConfig.from_json(dict(cfg.to_json(), local_init_scale=1.0))
    torch.manual_seed(3)
    scaled = AFLocModel(cfg).state_dict()
    torch.manual_seed(3)
    plain = AFLocModel(base).state_dict()
    local = {"img_encoder.local_embedder.weight", "img_encoder.local2_embedder.weight"}
    for k, v in plain.items():
        if k in local:
            torch.testing.assert_close(scaled[k], 0.1 * v, rtol=0, atol=0)
        else:
            assert torch.equal(scaled[k], v), k
    # a checkpoint written before the field existed reads as the default init
    old = {k: v for k, v in cfg.to_json().items() if k != "local_init_scale"}
    assert AFLocConfig.from_json(old).local_init_scale == 1.0
    assert AFLocConfig.from_json(cfg.to_json()) == cfg


def test_channels_last_is_a_layout_not_a_different_function():
    """`bench train` runs the backbone in NHWC: every output level, the loss and every gradient
    equal those of the NCHW model with the same weights (in float64, so that only rounding
    could tell them apart), and the weights load back into a plain model unchanged."""
    m, tok = tiny_model(input_size=112)
    images, text = tiny_batch(tok)
    m = m.double()
    plain = AFLocModel(m.cfg).double()
    plain.load_state_dict(m.state_dict())
    m.img_encoder.use_channels_last()
    assert m.img_encoder.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    runs = []
    for model in (plain, m):
        model.train()
        torch.manual_seed(0)  # the same BERT dropout masks in both runs
        enc = model(images.double(), text)
        loss = model.loss(enc)["loss"]
        model.zero_grad()
        loss.backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        runs.append((enc["img"], loss.detach(), grads))
    (img0, loss0, g0), (img1, loss1, g1) = runs
    assert img1["local"].is_contiguous(memory_format=torch.channels_last)
    for k in ("local", "local2", "global"):
        torch.testing.assert_close(img1[k], img0[k], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(loss1, loss0, rtol=1e-12, atol=1e-12)
    assert g0.keys() == g1.keys() and len(g0) > 50
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], rtol=1e-7, atol=1e-9,
                                   msg=lambda msg, k=k: f"{k}: {msg}")
    back = AFLocModel(m.cfg).double()
    back.load_state_dict({k: v.contiguous() for k, v in m.state_dict().items()})
    for k, v in back.state_dict().items():
        assert torch.equal(v, m.state_dict()[k]), k
    m.img_encoder.use_channels_last(False)
    assert m.img_encoder.model.conv1.weight.is_contiguous()


def test_text_encoder_on_trimmed_tokens_equals_the_full_padding():
    """BERT runs on the longest caption's tokens only; the embeddings must equal those of the
    official 97-slot (here 32) padded input, report mean over all T slots included."""
    from bench.methods._shared.bert_text import aggregate

    m, tok = tiny_model()
    _, text = tiny_batch(tok)
    assert int(text.attention_mask.sum(1).max()) < text.input_ids.shape[1]
    enc = m.text_encoder.eval()
    with torch.no_grad():
        got = enc(text)
        out = enc.model(input_ids=text.input_ids, attention_mask=text.attention_mask,
                        token_type_ids=text.token_type_ids, output_hidden_states=True)
        want = aggregate(torch.stack(out.hidden_states[-4:], 0).sum(0), text)
    for k in ("words", "sentences", "report"):
        torch.testing.assert_close(got[k], want[k], atol=1e-5, rtol=1e-5)


COMBOS = [c for n in (1, 2, 3) for c in itertools.combinations(LEVELS, n)]


@pytest.mark.parametrize("levels", COMBOS)
def test_each_level_combination_trains_a_step(levels):
    m, tok = tiny_model(levels)
    images, text = tiny_batch(tok)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    terms = m.loss(m(images, text))
    names = {"word": "local_word_loss", "sentence": "local_sent_loss",
             "report": "global_report_loss"}
    assert set(terms) == {names[lv] for lv in levels} | {"loss"}
    assert torch.isfinite(terms["loss"])
    terms["loss"].backward()
    opt.step()
    assert hasattr(m.img_encoder, "local2_embedder") == ("word" in levels)
    if "word" in levels:
        assert m.img_encoder.local2_embedder.weight.grad.abs().sum() > 0
    if "report" in levels:
        assert m.img_encoder.global_embedder.weight.grad.abs().sum() > 0


def test_seven_combinations():
    assert len(COMBOS) == 7


def test_parse_levels():
    assert parse_levels("report,word") == ("word", "report")
    with pytest.raises(ValueError):
        parse_levels("words")
    with pytest.raises(ValueError):
        parse_levels("")


@pytest.mark.parametrize("mode", ["faithful", "corrected"])
def test_loss_decreases_on_a_tiny_batch(mode):
    m, tok = tiny_model(text_mode=mode, seed=3)
    images, text = tiny_batch(tok, text_mode=mode)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3, betas=(0.5, 0.999), weight_decay=1e-6)
    m.train()
    losses = []
    for _ in range(6):
        terms = m.loss(m(images, text))
        opt.zero_grad()
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 0.25)
        opt.step()
        losses.append(float(terms["loss"].detach()))
    assert losses[-1] < losses[0] - 0.5, losses
