"""GLoRIA: the released checkpoints' layout, the loss against the official per-caption loop,
zero-shot as `get_similarities` computes it, the seeded prompts, the maps and their frame."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import torchvision
from afloc_helpers import PairsDataset, synthetic_sample
from click.testing import CliRunner

from bench.errors import CheckpointError, UsageError
from bench.imaging.geometry import Frame, map_to_original
from bench.methods._shared.bert_text import TextBatch
from bench.methods._shared.encoders import build_wordpiece
from bench.methods.gloria import prompts as P
from bench.methods.gloria.method import GLoRIAMethod, normalize_columns, zero_shot_mask
from bench.methods.gloria.model import (
    GLoRIAConfig,
    GLoRIAModel,
    local_max_similarity,
    local_max_similarity_loop,
)
from bench.types import Query

TINY_BERT = {"vocab_size": 0, "hidden_size": 32, "num_hidden_layers": 2,
             "num_attention_heads": 2, "intermediate_size": 48, "max_position_embeddings": 128,
             "type_vocab_size": 2}


def _official_model(arch: str = "resnet18"):
    """A model in a release's layout (resnet_18: layer3 of 256, local embedder of 1024)."""
    tok = build_wordpiece(["findings suggesting pneumonia", "small left pleural effusion"], 100)
    bert = dict(TINY_BERT, vocab_size=tok.vocab_size)
    cfg = GLoRIAConfig(arch=arch, imagenet_weights=False, interm_channels=1024, bert=bert,
                       text_encoder="x")
    torch.manual_seed(3)
    return GLoRIAModel(cfg).eval(), tok


def _hp():
    omegaconf = pytest.importorskip("omegaconf")
    return omegaconf.OmegaConf.create({
        "model": {"norm": False, "gloria": {"local_loss_weight": 1.0, "global_loss_weight": 1.0,
                                            "temp1": 4.0, "temp2": 5.0, "temp3": 10.0},
                  "vision": {"model_name": "resnet_18", "freeze_cnn": False,
                             "pretrained": True},
                  "text": {"bert_type": "emilyalsentzer/Bio_ClinicalBERT", "last_n_layers": 4,
                           "aggregate_method": "sum", "norm": False, "embedding_dim": 32,
                           "freeze_bert": False, "agg_tokens": True}},
        "data": {"text": {"word_num": 97, "captions_per_image": 5, "full_report": False},
                 "image": {"imsize": 256}},
        "lightning": {"trainer": {"gpus": "1", "lr": 5e-5}}})


def _lightning(tmp_path, model, hp, extra=None, drop=None, name="chexpert_resnet18.ckpt"):
    state = {f"gloria.{k}": v.clone() for k, v in model.state_dict().items()}
    state["gloria.text_encoder.model.embeddings.position_ids"] = torch.arange(128)[None]
    state.update(extra or {})
    for k in drop or ():
        state.pop(k)
    path = tmp_path / name
    torch.save({"epoch": 20, "global_step": 999, "pytorch-lightning_version": "1.1.4",
                "state_dict": state, "hyper_parameters": hp,
                "optimizer_states": [{"state": {}, "param_groups": [{"lr": 5e-5,
                                                                     "params": [0]}]}]}, path)
    return path


def _expected_keys(arch: str, bert_cfg: dict) -> set[str]:
    """The GLoRIA module's keys, from torchvision and transformers (fc replaced by identity)."""
    from transformers import BertConfig, BertModel

    img = {f"img_encoder.model.{k}" for k in getattr(torchvision.models, arch)().state_dict()
           if not k.startswith("fc.")}
    txt = {f"text_encoder.model.{k}" for k in BertModel(BertConfig(**bert_cfg)).state_dict()}
    return img | txt | {"img_encoder.global_embedder.weight", "img_encoder.global_embedder.bias",
                        "img_encoder.local_embedder.weight"}


def test_the_released_layout_loads_strictly(tmp_path):
    model, tok = _official_model()
    tok_dir = tmp_path / "tok"
    tok.save_pretrained(tok_dir)
    path = _lightning(tmp_path, model, _hp())
    assert set(model.state_dict()) == _expected_keys("resnet18", model.cfg.bert)
    m = GLoRIAMethod(checkpoint=str(path), text_encoder=str(tok_dir))
    assert m.config()["checkpoint_format"].startswith("official")
    assert m.model.cfg.arch == "resnet18" and m.model.cfg.interm_channels == 1024
    for k, v in model.state_dict().items():
        assert torch.equal(m.model.state_dict()[k], v), k
    samples = [synthetic_sample(i, h=80, w=64) for i in range(2)]
    # the released resnet_18's local branch cannot run (1024 channels vs layer3's 256), in
    # GLoRIA's code as here: maps and local similarity say so, the global similarity works
    with pytest.raises(UsageError, match="takes 1024 channels but its backbone's layer3 gives 256"):
        m.localize(samples, [[Query("a", "Edema", "mild pulmonary edema")]] * 2)
    g = GLoRIAMethod(checkpoint=str(path), text_encoder=str(tok_dir), similarity="global")
    scores = g.classify(samples, ["Edema"])
    assert scores.shape == (2, 1) and np.all(np.abs(scores) <= 1)


def test_the_resnet50_release_layout(tmp_path):
    model, _ = _official_model("resnet50")
    assert set(model.state_dict()) == _expected_keys("resnet50", model.cfg.bert)
    assert model.state_dict()["img_encoder.local_embedder.weight"].shape == (32, 1024, 1, 1)
    assert model.img_encoder.local_branch_runs


@pytest.mark.parametrize("how, message", [
    ("renamed", "1 missing: img_encoder.global_embedder.bias; 1 unexpected: "
                "img_encoder.global_embedder.b"),
    ("shape", "img_encoder.global_embedder.weight: checkpoint (32, 100) vs model (32, 512)"),
])
def test_a_checkpoint_that_differs_is_refused_naming_the_key(tmp_path, how, message):
    model, tok = _official_model()
    tok_dir = tmp_path / "tok"
    tok.save_pretrained(tok_dir)
    if how == "renamed":
        v = model.state_dict()["img_encoder.global_embedder.bias"]
        path = _lightning(tmp_path, model, _hp(), {"gloria.img_encoder.global_embedder.b": v},
                          ["gloria.img_encoder.global_embedder.bias"])
    else:
        path = _lightning(tmp_path, model, _hp(),
                          {"gloria.img_encoder.global_embedder.weight": torch.zeros(32, 100)})
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        GLoRIAMethod(checkpoint=str(path), text_encoder=str(tok_dir))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        GLoRIAMethod(checkpoint=str(path))


def test_an_afloc_checkpoint_is_not_a_gloria_one(tmp_path):
    from bench.methods._shared.checkpoints import save_weights

    path = tmp_path / "a.safetensors"
    save_weights(path, {"w": torch.zeros(1)}, {}, None, method="afloc")
    with pytest.raises(CheckpointError, match="written by bench train afloc, not gloria"):
        GLoRIAMethod(checkpoint=str(path))


# -- the loss ------------------------------------------------------------------------------

def _official_loss(img_l, img_g, words, report, cap_lens, t1=4.0, t2=5.0, t3=10.0):
    """``gloria_loss.local_loss`` + ``global_loss``, one caption at a time, written out."""
    b = img_l.shape[0]
    regions = img_l.flatten(2)  # [B, D, R]
    cols = []
    for i in range(words.shape[0]):
        w = words[i, :, :cap_lens[i]].unsqueeze(0).repeat(b, 1, 1)  # [B, D, T]
        attn = torch.softmax(torch.bmm(regions.transpose(1, 2), w), dim=-1)  # over words
        attn = torch.softmax(attn.transpose(1, 2) * t1, dim=-1)  # over regions, [B, T, R]
        ctx = torch.bmm(regions, attn.transpose(1, 2))  # [B, D, T]
        cos = (w * ctx).sum(1) / (w.norm(dim=1) * ctx.norm(dim=1)).clamp(min=1e-8)
        cols.append(torch.log(torch.exp(cos * t2).sum(1, keepdim=True)))
    sim = torch.cat(cols, 1) * t3
    labels = torch.arange(b)
    ce = torch.nn.functional.cross_entropy
    local = ce(sim, labels) + ce(sim.t(), labels)
    g = (img_g @ report.t()) / (img_g.norm(dim=1, keepdim=True)
                                @ report.norm(dim=1, keepdim=True).t()).clamp(min=1e-8) * t3
    return local + ce(g, labels) + ce(g.t(), labels)


def test_the_loss_equals_the_official_per_caption_loop():
    torch.manual_seed(0)
    b, d, t = 4, 6, 9
    cap_lens = [3, 9, 5, 1]
    model = GLoRIAModel(GLoRIAConfig(arch="small", imagenet_weights=False, interm_channels=64,
                                     bert=dict(TINY_BERT, vocab_size=50), input_size=224))
    model = model.double()
    img_l = torch.randn(b, d, 3, 4, dtype=torch.float64, requires_grad=True)
    img_g = torch.randn(b, d, dtype=torch.float64, requires_grad=True)
    words = torch.randn(b, d, t, dtype=torch.float64, requires_grad=True)
    report = torch.randn(b, d, dtype=torch.float64, requires_grad=True)
    mask = torch.arange(t)[None] < torch.tensor(cap_lens)[:, None]
    text = TextBatch(*(torch.zeros(b, t, dtype=torch.long),) * 5, word_mask=mask,
                     sent_mask=mask, words=[[]] * b)
    ours = model.loss({"img": {"local": img_l, "global": img_g},
                       "txt": {"words": words, "report": report}, "text": text})["loss"]
    ref = _official_loss(img_l, img_g, words, report, cap_lens)
    # the batched local loss takes its log-sum-exp in float32 (as under autocast): 1e-6
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)
    grads = torch.autograd.grad(ours, (img_l, img_g, words, report))
    want = torch.autograd.grad(ref, (img_l, img_g, words, report))
    for a, r in zip(grads, want):
        torch.testing.assert_close(a, r, rtol=1e-6, atol=1e-6)


# -- zero-shot -------------------------------------------------------------------------------

def test_the_local_similarity_equals_the_official_loop():
    torch.manual_seed(1)
    regions = torch.randn(3, 5, 7, dtype=torch.float64)
    words = torch.randn(4, 5, 8, dtype=torch.float64)
    words[:, :, 6:] = 0  # padding past [SEP] is zeros, as the text encoder leaves it
    caps = torch.tensor([2, 9, 4, 1])
    mask = zero_shot_mask([""] * 4, caps, 8, "corrected")
    assert mask.tolist()[0] == [False, True, True, False, False, False, False, False]
    assert mask.tolist()[1] == [False] + [True] * 7  # [1 : 10] cut at the 8 slots there are
    torch.testing.assert_close(local_max_similarity(regions, words, mask),
                               local_max_similarity_loop(regions, words, mask))


def test_faithful_cap_lens_count_the_prompt_characters():
    """``process_text`` counts the characters of the raw prompt that are not "[", so the slice
    ``[1 : cap_len + 1]`` runs past the words into [SEP] and the zero padding."""
    raw = ["mild edema", "[x] a"]
    m = zero_shot_mask(raw, torch.tensor([2, 1]), 97, "faithful")
    assert m[0].sum() == 10 and m[0, 1:11].all() and not m[0, 0] and not m[0, 11]
    assert m[1].sum() == 4  # "[x] a": 5 characters, one "["


def test_zero_shot_on_a_hand_worked_example():
    """Two prompts, three images: global cosine and the local similarity averaged, the best
    prompt per image, then the official per-class z-score over the images (ddof 0)."""
    d = 2
    img_g = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    rep = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # one region per image and one word per prompt: the attention is 1, the context is the
    # region, so the local similarity is log exp(5 cos(word, region)) = 5 cos
    regions = torch.tensor([[[1.0]], [[0.0]], [[-1.0]]]).expand(3, d, 1).clone()
    regions[:, 1, 0] = torch.tensor([0.0, 1.0, 0.0])
    words = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]]).permute(0, 2, 1)  # [Q, D, T=2]
    mask = torch.tensor([[False, True], [False, True]])
    words = torch.cat([torch.zeros(2, d, 1), words[:, :, :1]], 2)
    words[0, :, 1] = torch.tensor([1.0, 0.0])
    words[1, :, 1] = torch.tensor([0.0, 1.0])
    local = local_max_similarity(regions, words, mask)
    # cos(region, word): image 0 (1,0): (1, 0); image 1 (0,1): (0, 1); image 2 (-1,0): (-1, 0)
    torch.testing.assert_close(local, 5 * torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    from bench.methods.gloria.method import _cosine

    glob = _cosine(img_g, rep)
    s2 = 1 / math.sqrt(2)
    torch.testing.assert_close(glob, torch.tensor([[1.0, s2], [0.0, s2], [s2, 1.0]]))
    best = ((local + glob) / 2).max(dim=1).values
    want = np.array([3.0, (5 + s2) / 2, max((-5 + s2) / 2, 0.5)])
    np.testing.assert_allclose(best.numpy(), want, rtol=1e-6)
    z = normalize_columns(best.numpy()[:, None])[:, 0]
    np.testing.assert_allclose(z, (want - want.mean()) / want.std(), rtol=1e-6)


def test_the_official_prompts_for_seed_6():
    got = P.official_prompts()
    assert list(got) == ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
                         "Pleural Effusion"]
    assert all(len(v) == 5 for v in got.values())
    # as gloria.generate_chexpert_class_prompts() gives them right after `import gloria`
    assert got["Atelectasis"][0] == "minimal residual atelectasis at the left lung zone"
    assert got["Cardiomegaly"][0] == " portable view of the chest demonstrates mild cardiomegaly "
    assert got["Consolidation"][4] == "increased airspace consolidation at the upper lung zone"
    assert got["Edema"] == [" pulmonary edema ", "improvement in pulmonary interstitial edema ",
                            "decreased pulmonary edema ", "moderate pulmonary edema ",
                            "mild pulmonary edema "]
    assert got["Pleural Effusion"][0] == "increased left subpulmonic pleural effusion"
    assert P.class_prompts("Effusion") == (got["Pleural Effusion"], "gloria")
    pneumonia, source = P.class_prompts("Pneumonia")
    assert source == "harness" and len(pneumonia) == 54


# -- maps ------------------------------------------------------------------------------------

def test_maps_are_deterministic_and_come_back_through_the_256_crop():
    samples = [synthetic_sample(i, h=90, w=70) for i in range(2)]
    q = [[Query("a", "Edema", "left lower opacity")]] * 2
    a, b = GLoRIAMethod(), GLoRIAMethod()
    for x, y in zip(a.localize(samples, q), b.localize(samples, q)):
        np.testing.assert_array_equal(x[0], y[0])
    assert a.localize(samples, q)[0][0].shape == (224, 224)
    att = GLoRIAMethod(map="attention").localize(samples, q)[0][0]
    assert att.shape == (14, 14) and att.sum() == pytest.approx(1.0, rel=1e-5)
    # one hot cell of a 19 x 19 grid on the crop lands where the crop put it in the image
    frame = GLoRIAMethod.frame
    assert frame == Frame("letterbox", 224, pre=256)
    grid = np.zeros((19, 19), np.float32)
    grid[4, 12] = 1
    back = map_to_original(grid, frame, (512, 512))
    y, x = np.unravel_index(np.nanargmax(back), back.shape)
    # cell centre on the 224 crop, +16 for the crop's offset in the 256 letterbox, x 2 to 512
    assert abs(x - (16 + (12 + 0.5) * 224 / 19) * 2) <= 2
    assert abs(y - (16 + (4 + 0.5) * 224 / 19) * 2) <= 2
    assert np.isnan(back[:30]).all() and np.isnan(back[:, -30:]).all()  # the cropped border


def test_bench_train_gloria_tiny_and_the_checkpoint_runs(tmp_path):
    from bench.cli.main import cli
    from bench.registry import DATASETS

    DATASETS.add("synthetic-test-pairs", PairsDataset)
    out = tmp_path / "g"
    res = CliRunner().invoke(cli, [
        "train", "gloria", "--dataset", "synthetic-test-pairs", "--root", str(tmp_path),
        "--preset", "tiny", "--batch-size", "8", "--max-steps", "2", "--epochs", "2",
        "--out", str(out), "--device", "cpu", "--quiet"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    import json

    hist = json.loads((out / "history.json").read_text())
    assert [o.get("scheduler") for o in hist["config"]["optimization"]
            if "scheduler" in o] == ["ReduceLROnPlateau"]
    info = json.loads((out / "train.json").read_text())
    assert info["settings"]["lr"] == 1e-3 and info["pairs"]["train"] == 24
    m = GLoRIAMethod(checkpoint=str(out / "best.safetensors"))
    assert m.config()["random_init"] is False
    s = [synthetic_sample(0)]
    assert m.localize(s, [[Query("a", "x", "opacity in the left lung")]])[0][0].shape == (224,
                                                                                          224)
    assert m.classify(s, ["Pneumonia"]).shape == (1, 1)


def test_one_random_sentence_and_crop_per_item():
    from bench.methods.gloria.train import SentencePairs

    frames = np.arange(2 * 256 * 256, dtype=np.uint8).reshape(2, 256, 256) % 251
    sents = [["a b", "c d", "e f"], ["g h"]]
    ds = SentencePairs(frames, np.arange(2), sents, train=True, seed=1)
    seen = {ds[0][1] for _ in range(3)}
    assert len(seen) == 1  # a function of (seed, epoch, index)
    crops, caps = set(), set()
    for epoch in range(20):
        ds.epoch = epoch
        img, cap = ds[0]
        assert img.shape == (224, 224) and cap in sents[0]
        caps.add(cap)
        crops.add(int(img[0, 0]))
    assert caps == set(sents[0]) and len(crops) > 1
    val = SentencePairs(frames, np.arange(2), sents, train=False, seed=1)
    np.testing.assert_array_equal(val[1][0], frames[1, 16:240, 16:240])


def test_maps_and_scores_of_one_batch_share_one_image_pass(monkeypatch):
    """GLoRIA's localization and zero-shot read the same 256/224 input: the runner's localize
    then classify of a batch encode the images once; a new run (bind) starts afresh."""
    m = GLoRIAMethod()
    calls = []
    real = m.encode_images
    monkeypatch.setattr(m, "encode_images", lambda x, p: calls.append(sorted(p)) or real(x, p))
    batch = [synthetic_sample(i, h=60, w=50) for i in range(2)]
    m.localize(batch, [[Query("a", "Edema", "mild pulmonary edema")]] * 2)
    m.classify(batch, ["Edema"])
    assert calls == [["classify", "localize"]]
    m.bind(None, "afloc")
    m.classify(batch, ["Edema"])
    assert len(calls) == 2
    other = [synthetic_sample(i + 5, h=60, w=50) for i in range(2)]
    for s, o in zip(other, batch):
        s.id = o.id  # the same ids, other images (another dataset): not mistaken for them
    m.classify(other, ["Edema"])
    assert len(calls) == 3
