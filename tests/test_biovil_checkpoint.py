"""BioViL's released weights: each file's exact key layout and count, a strict and safe load
that gives hi-ml's embeddings, the files it refuses (each named), and the harness's own format."""

from __future__ import annotations

import os
from collections import OrderedDict

import pytest
import torch
from biovil_helpers import (
    HimlCXRBert,
    HimlImageModel,
    cxr_bert_config,
    cxr_bert_folder,
    image_model,
    image_pt,
)

from bench.errors import CheckpointError
from bench.methods.biovil import checkpoint as ck
from bench.methods.biovil.method import BioViLMethod
from bench.methods.biovil.model import BioViLConfig, BioViLModel


def test_layouts_are_himls_key_for_key():
    """ImageModel: 328 keys (320 encoder.encoder.* with the unused fc, 8 projector.*);
    CXRBertModel with BERT-base's shape: 210 keys (bert 5 + 12 x 16, MLM head 7, projection 6)."""
    base = {**cxr_bert_config(), "hidden_size": 768, "intermediate_size": 3072,
            "num_attention_heads": 12, "max_position_embeddings": 512, "vocab_size": 30522}
    with torch.device("meta"):
        ours = BioViLModel(BioViLConfig(text_config=base))
        image, text = HimlImageModel(), HimlCXRBert(base)
    want_i = {k: tuple(v.shape) for k, v in image.state_dict().items()}
    want_t = {k: tuple(v.shape) for k, v in text.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.image.state_dict().items()} == want_i
    assert {k: tuple(v.shape) for k, v in ours.text.state_dict().items()} == want_t
    assert len(want_i) == 328 and len(want_t) == 210
    assert sum(k.startswith("encoder.encoder.") for k in want_i) == 320
    assert want_i["encoder.encoder.fc.weight"] == (1000, 2048)
    assert sorted(k for k in want_i if k.startswith("projector.")) == [
        "projector.model.0.weight", "projector.model.1.bias",
        "projector.model.1.num_batches_tracked", "projector.model.1.running_mean",
        "projector.model.1.running_var", "projector.model.1.weight",
        "projector.model.3.bias", "projector.model.3.weight"]
    assert want_i["projector.model.0.weight"] == (128, 2048, 1, 1)
    assert sum(k.startswith("bert.") for k in want_t) == 5 + 12 * 16
    assert sorted(k for k in want_t if k.startswith("cls.predictions.")) == [
        "cls.predictions.bias", "cls.predictions.decoder.bias",
        "cls.predictions.decoder.weight", "cls.predictions.transform.LayerNorm.bias",
        "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.dense.bias",
        "cls.predictions.transform.dense.weight"]
    assert sorted(k for k in want_t if k.startswith("cls_projection_head.")) == [
        "cls_projection_head.LayerNorm.bias", "cls_projection_head.LayerNorm.weight",
        "cls_projection_head.dense_to_hidden.bias", "cls_projection_head.dense_to_hidden.weight",
        "cls_projection_head.dense_to_output.bias", "cls_projection_head.dense_to_output.weight"]
    assert want_t["cls_projection_head.dense_to_hidden.weight"] == (128, 768)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("biovil-release")
    img = image_model()
    pt = image_pt(img, root / ck.IMAGE_FILE)
    folder, text = cxr_bert_folder(root / "CXR-BERT-specialized")
    return {"root": root, "image": img, "pt": pt, "folder": folder, "text": text}


def _method(release, **kw):
    return BioViLMethod(checkpoint=str(kw.pop("pt", release["pt"])),
                        text_encoder=str(kw.pop("folder", release["folder"])), **kw)


def test_release_loads_strictly_and_gives_himls_embeddings(release):
    state = torch.load(release["pt"], weights_only=True)
    assert isinstance(state, OrderedDict) and len(state) == 328
    text_state = torch.load(release["folder"] / "pytorch_model.bin", weights_only=True)
    assert len(text_state) == 211  # 210 + the position_ids buffer of 2022's transformers
    m = _method(release)
    assert m.info["key_diff"] == {"missing": 0, "unexpected": 0, "shape": 0}
    cfg = m.config()
    assert cfg["checkpoint_format"] == "hi-ml image .pt + CXR-BERT folder"
    assert (cfg["resize"], cfg["crop"], cfg["joint_dim"]) == (512, 480, 128)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 480, 480, generator=g)
    with torch.no_grad():
        want = release["image"].patches(x)
        got = m.model.image_features(x)
    assert tuple(got["patch"].shape) == (1, 128, 15, 15)
    torch.testing.assert_close(got["patch"], want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got["global"], want.mean(dim=(2, 3)), rtol=1e-4, atol=1e-4)
    prompts = ["Findings consistent with pneumonia.", "No evidence of pneumonia"]
    enc = m.tokenizer([p.rstrip("!?.") for p in prompts], add_special_tokens=True,
                      padding="longest", return_tensors="pt")
    with torch.no_grad():
        want_t = release["text"].projected(enc["input_ids"], enc["attention_mask"])
        got_t = m.encode_texts(prompts, "class")
        got_q = m.encode_texts(prompts, "query")
    torch.testing.assert_close(got_t, want_t, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_q, want_t / want_t.norm(dim=1, keepdim=True), rtol=1e-5,
                               atol=1e-5)


def test_a_safetensors_folder_without_tied_copies_loads(release, tmp_path):
    folder, text = cxr_bert_folder(tmp_path / "st", fmt="safetensors")
    m = _method(release, folder=folder)
    assert m.info["key_diff"]["missing"] == 0
    assert torch.equal(m.model.text.cls.predictions.decoder.weight,
                       text.bert.embeddings.word_embeddings.weight)


def _refused_image(release, tmp_path, state, match):
    path = tmp_path / "bad.pt"
    torch.save(OrderedDict(state), path)
    with pytest.raises(CheckpointError, match=match) as err:
        _method(release, pt=path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    return str(err.value)


def test_a_renamed_image_key_is_refused_naming_it(release, tmp_path):
    state = dict(torch.load(release["pt"], weights_only=True))
    state["projector.model.3.bias_renamed"] = state.pop("projector.model.3.bias")
    msg = _refused_image(release, tmp_path, state, "1 missing: projector.model.3.bias")
    assert "1 unexpected: projector.model.3.bias_renamed" in msg


def test_a_wrong_image_shape_is_refused_naming_it(release, tmp_path):
    state = dict(torch.load(release["pt"], weights_only=True))
    state["projector.model.0.weight"] = torch.zeros(64, 2048, 1, 1)
    _refused_image(release, tmp_path, state, r"projector.model.0.weight: checkpoint "
                                             r"\(64, 2048, 1, 1\) vs model \(128, 2048, 1, 1\)")


def test_a_missing_image_key_is_refused(release, tmp_path):
    state = dict(torch.load(release["pt"], weights_only=True))
    del state["encoder.encoder.layer4.2.bn3.running_var"]
    _refused_image(release, tmp_path, state, "1 missing: encoder.encoder.layer4.2.bn3.running_var")


def test_a_wrong_text_key_is_refused_naming_the_folder(release, tmp_path):
    folder, _ = cxr_bert_folder(tmp_path / "bad-text")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    state["cls_projection_head.dense_to_output.weight"] = torch.zeros(128, 64)
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"bad-text: checkpoint does not match the model: "
                                              r"1 shape: cls_projection_head.dense_to_output"):
        _method(release, folder=folder)
    del state["cls_projection_head.dense_to_output.weight"]
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="1 missing: cls_projection_head.dense_to_output"):
        _method(release, folder=folder)


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_a_pickle_that_would_run_code_is_refused(release, tmp_path):
    target = tmp_path / "pwned"
    evil = _RunsCode()
    evil.target = target
    path = tmp_path / "evil.pt"
    torch.save(OrderedDict({"projector.model.3.bias": torch.zeros(128), "x": evil}), path)
    with pytest.raises(CheckpointError, match=r"refused to load.*system") as err:
        _method(release, pt=path)
    assert str(path) in str(err.value)
    assert not target.exists()
    # the text weights too
    folder, _ = cxr_bert_folder(tmp_path / "evil-text")
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(1), "x": evil},
               folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin: refused to load.*system"):
        _method(release, folder=folder)
    assert not target.exists()


def test_not_the_image_state_dict(release, tmp_path):
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="training checkpoint"):
        _method(release, pt=path)
    torch.save({"a": torch.zeros(1), "b": [1, 2]}, path)
    with pytest.raises(CheckpointError, match="entry 'b' is not a tensor"):
        _method(release, pt=path)


def test_the_text_encoder_must_be_available_offline(release, tmp_path):
    with pytest.raises(CheckpointError, match="not available offline.*BiomedVLP-CXR-BERT"):
        _method(release, folder="no-such-org/no-such-model")
    folder, _ = cxr_bert_folder(tmp_path / "roberta")
    (folder / "config.json").write_text('{"model_type": "roberta"}')
    with pytest.raises(CheckpointError, match="model_type 'roberta'"):
        _method(release, folder=folder)
    (folder / "vocab.txt").unlink()
    (folder / "config.json").write_text('{"model_type": "cxr-bert"}')
    with pytest.raises(CheckpointError, match="no vocab.txt"):
        _method(release, folder=folder)


def test_weights_identity_covers_the_text_encoder_folder(release):
    ident = BioViLMethod.weights_identity({"checkpoint": str(release["pt"]),
                                           "text_encoder": str(release["folder"])})
    assert ident["text_encoder"]["source"] == str(release["folder"])
    assert len(ident["text_encoder"]["content"]) == 64
    # a released .pt without text_encoder reads the default id
    ident = BioViLMethod.weights_identity({"checkpoint": str(release["pt"])})
    assert ident["text_encoder"]["source"] == ck.TEXT_REPO
    assert BioViLMethod.weights_identity({}) is None  # tiny random init: no folder read


def test_harness_safetensors_round_trip(release, tmp_path):
    m = _method(release)
    path = tmp_path / "biovil.safetensors"
    from bench.methods._shared.encoders import tokenizer_to_json

    ck.save_weights(path, m.model.state_dict(), m.model.cfg.to_json(),
                    tokenizer_to_json(m.tokenizer))
    again = BioViLMethod(checkpoint=str(path))
    assert again.info["key_diff"] == {"missing": 0, "unexpected": 0, "shape": 0}
    assert again.config()["checkpoint_format"] == "afloc-bench safetensors"
    x = torch.rand(1, 3, 480, 480)
    with torch.no_grad():
        torch.testing.assert_close(again.model.image_features(x)["patch"],
                                   m.model.image_features(x)["patch"])
        torch.testing.assert_close(again.encode_texts(["no pneumonia"], "class"),
                                   m.encode_texts(["no pneumonia"], "class"))
    from bench.methods._shared.checkpoints import save_weights

    other = tmp_path / "convirt.safetensors"
    save_weights(other, {"a": torch.zeros(1)}, {}, None, method="convirt")
    with pytest.raises(CheckpointError, match="written by bench train convirt, not biovil"):
        BioViLMethod(checkpoint=str(other))
