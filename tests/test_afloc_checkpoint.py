"""AFLoc checkpoints: our safetensors round trip, the official Lightning layout, refusals."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from afloc_helpers import synthetic_sample, tiny_model

from bench.errors import CheckpointError
from bench.methods._shared import checkpoints as shared_ck
from bench.methods._shared.encoders import build_wordpiece, tokenizer_to_json
from bench.methods.afloc import checkpoint as ck
from bench.methods.afloc.method import AFLocMethod
from bench.methods.afloc.model import AFLocConfig, AFLocModel
from bench.types import Query

QUERIES = [Query("q0", "Pneumonia", "Findings suggesting pneumonia."),
           Query("q1", "Pneumothorax", "large right pneumothorax")]


def _maps(method, n=2):
    samples = [synthetic_sample(i) for i in range(n)]
    return method.localize(samples, [QUERIES] * n)


def test_round_trip_gives_identical_heatmaps(tmp_path):
    model, tok = tiny_model(text_mode="corrected")
    path = tmp_path / "m.safetensors"
    ck.save_weights(path, model.state_dict(), model.cfg.to_json(), tokenizer_to_json(tok))
    loaded = AFLocMethod(checkpoint=str(path))
    assert loaded.config()["text_mode"] == "corrected"
    assert loaded.config()["random_init"] is False
    # the same weights in memory give bit-identical maps
    ref = AFLocMethod()
    ref.model, ref.tokenizer = model.eval(), tok
    ref.text = type(loaded.text)(tok, "corrected", model.cfg.word_num)
    a, b = _maps(loaded), _maps(ref)
    for la, lb in zip(a, b):
        for x, y in zip(la, lb):
            assert x.shape == (224, 224)
            np.testing.assert_array_equal(x, y)
    assert not np.allclose(a[0][0], a[0][1])  # different queries, different maps


def _official_ckpt(tmp_path, model: AFLocModel, extra_key=False, hp=None):
    state = {f"afloc.{k}": v.clone() for k, v in model.state_dict().items()}
    state["afloc.text_encoder.model.embeddings.position_ids"] = torch.arange(128)[None]
    if extra_key:
        state["afloc.img_encoder.local_f_embedder.weight"] = torch.zeros(4, 4, 1, 1)
    ckpt = {"epoch": 3, "global_step": 120, "pytorch-lightning_version": "1.1.4",
            "state_dict": state, "hyper_parameters": hp,
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 2e-5, "params": [0]}]}],
            "lr_schedulers": [{"step_size": 1, "gamma": 0.9}]}
    path = tmp_path / "official.ckpt"
    torch.save(ckpt, path)
    return path


def _official_model():
    bert = {"vocab_size": 0, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 1,
            "intermediate_size": 96, "max_position_embeddings": 128, "type_vocab_size": 2}
    tok = build_wordpiece(["findings suggesting pneumonia", "large right pneumothorax"],
                                  100)
    bert["vocab_size"] = tok.vocab_size
    cfg = AFLocConfig(arch="resnet18", imagenet_weights=False, bert=bert, text_encoder="x",
                      word_num=97)
    torch.manual_seed(5)
    return AFLocModel(cfg).eval(), tok


def _hp():
    omegaconf = pytest.importorskip("omegaconf")
    return omegaconf.OmegaConf.create({
        "model": {"afloc": {"temp1": 4.0, "temp2": 5.0, "temp3": 10.0,
                            "use_global_report_loss": True, "use_local_sent_loss": True,
                            "use_local_word_loss": True},
                  "vision": {"model_name": "resnet_18", "pretrained": True},
                  "text": {"bert_type": "emilyalsentzer/Bio_ClinicalBERT", "last_n_layers": 4,
                           "embedding_dim": 768}},
        "data": {"text": {"word_num": 97, "captions_per_image": 5}, "image": {"imsize": 256}},
        "lightning": {"trainer": {"gpus": "0,1"}}, "seeds": [1, 2]})


def test_official_lightning_checkpoint_loads(tmp_path):
    model, tok = _official_model()
    tok_dir = tmp_path / "tok"
    tok.save_pretrained(tok_dir)
    path = _official_ckpt(tmp_path, model, hp=_hp())
    state, hp = ck.read_official(path)
    assert hp["model"]["afloc"]["temp1"] == 4.0 and hp["seeds"] == [1, 2]
    assert "text_encoder.model.embeddings.position_ids" in state
    cfg = ck.config_from_official(hp, state)
    assert cfg["arch"] == "resnet18" and cfg["bert"]["num_hidden_layers"] == 2
    assert cfg["bert"]["hidden_size"] == 64
    m = AFLocMethod(checkpoint=str(path), text_encoder=str(tok_dir))
    assert m.config()["checkpoint_format"].startswith("official")
    for k, v in model.state_dict().items():
        assert torch.equal(m.model.state_dict()[k], v), k
    maps = _maps(m, 1)
    assert maps[0][0].shape == (224, 224) and np.isfinite(maps[0][0]).all()


def test_official_checkpoint_with_plain_dict_hparams(tmp_path):
    model, tok = _official_model()
    tok_dir = tmp_path / "tok"
    tok.save_pretrained(tok_dir)
    hp = {"model": {"vision": {"model_name": "resnet_18"}, "text": {"last_n_layers": 4}}}
    path = _official_ckpt(tmp_path, model, hp=hp)
    m = AFLocMethod(checkpoint=str(path), text_encoder=str(tok_dir))
    assert m.model.cfg.arch == "resnet18"


@pytest.mark.parametrize("section, key, value", [
    ("text", "norm", True), ("text", "aggregate_method", "mean"), ("text", "agg_tokens", False)])
def test_hyper_parameters_this_loader_does_not_implement_are_refused(section, key, value):
    """A checkpoint trained with normalised or mean-aggregated text embeddings would compute
    other embeddings than ours: refused with the key named, not run as if it matched."""
    model, _ = _official_model()
    hp = {"model": {"norm": False, section: {key: value, "last_n_layers": 4}}}
    with pytest.raises(CheckpointError, match=f"model.{section}.{key}={value!r}"):
        ck.config_from_official(hp, model.state_dict())
    hp["model"][section][key] = {"norm": False, "aggregate_method": "sum",
                                 "agg_tokens": True}[key]
    assert ck.config_from_official(hp, model.state_dict())["last_n_layers"] == 4
    with pytest.raises(CheckpointError, match="model.norm=True"):
        ck.config_from_official({"model": {"norm": True}}, model.state_dict())


def test_mismatch_names_keys_and_shapes(tmp_path):
    model, _ = _official_model()
    sd = model.state_dict()
    sd.pop("img_encoder.global_embedder.bias")
    sd["img_encoder.local_embedder.weight"] = torch.zeros(64, 3, 1, 1)
    sd["img_encoder.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        shared_ck.load_into(model, sd, "x.ckpt")
    msg = str(err.value)
    assert "1 missing: img_encoder.global_embedder.bias" in msg
    assert "1 unexpected: img_encoder.extra.weight" in msg
    assert "img_encoder.local_embedder.weight: checkpoint (64, 3, 1, 1) vs model (64, 256, 1, 1)" \
        in msg


def test_not_strict_loads_what_matches_warns_and_still_refuses_shapes(tmp_path):
    """strict=false as the official builder's load_state_dict(strict=False): missing and
    unexpected keys are allowed and named in a warning; another shape is still an error."""
    model, _ = _official_model()
    sd = {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    sd.pop("img_encoder.global_embedder.bias")
    sd["img_encoder.extra.weight"] = torch.zeros(1)
    target, _ = _official_model()
    before = target.state_dict()["img_encoder.global_embedder.bias"].clone()
    with pytest.warns(UserWarning, match="strict=false; 1 missing: img_encoder.global_embedder"
                                         ".bias; 1 unexpected: img_encoder.extra.weight"):
        diff = shared_ck.load_into(target, sd, "x.ckpt", strict=False)
    assert diff["missing"] == ["img_encoder.global_embedder.bias"]
    got = target.state_dict()
    assert torch.equal(got["img_encoder.global_embedder.bias"], before)  # kept its init
    assert torch.equal(got["img_encoder.local_embedder.weight"],
                       sd["img_encoder.local_embedder.weight"])
    sd["img_encoder.local_embedder.weight"] = torch.zeros(64, 3, 1, 1)
    with pytest.raises(CheckpointError, match="local_embedder.weight: checkpoint"):
        shared_ck.load_into(target, sd, "x.ckpt", strict=False)


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_malicious_pickle_is_refused(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": _Evil(target)}, path)
    with pytest.raises(CheckpointError, match="refused"):
        ck.read_official(path)
    with pytest.raises(CheckpointError):
        AFLocMethod(checkpoint=str(path))
    assert not target.exists()


def test_safetensors_without_our_metadata_is_refused(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "other.safetensors"
    save_file({"a": torch.zeros(2)}, p)
    assert shared_ck.is_safetensors(p)
    with pytest.raises(CheckpointError, match="without the harness.s metadata"):
        ck.read_weights(p)
