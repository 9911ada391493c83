"""ViLMedic's convirt-mimic checkpoint: the exact key layout and count, a strict and safe load,
the outputs it gives, and the files it refuses (each named)."""

from __future__ import annotations

import os

import pytest
import torch
from convirt_helpers import (
    ROBERTA_BASE,
    VilmedicConVIRT,
    roberta_folder,
    vilmedic_model,
    vilmedic_state,
)

from bench.errors import CheckpointError
from bench.methods.convirt.method import ConVIRTMethod
from bench.methods.convirt.model import ConVIRTConfig, ConVIRTModel


def test_paper_layout_is_vilmedics_key_for_key():
    """ConVIRTModel with biomed_roberta_base's architecture has ViLMedic's 525 keys and shapes:
    RoBERTa 5 + 12 x 16 + 2 (pooler), ResNet-50 up to avgpool 318, projections 8."""
    from transformers import RobertaConfig

    text = RobertaConfig(**ROBERTA_BASE)
    with torch.device("meta"):
        ours = ConVIRTModel(ConVIRTConfig(text_kind="roberta", text_config=text.to_dict()))
        theirs = VilmedicConVIRT(text)
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    want = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert mine == want
    assert len(want) == 525
    assert sum(k.startswith("linguistic.encoder.") for k in want) == 5 + 12 * 16 + 2
    assert sum(k.startswith("visual.model.") for k in want) == 318
    assert {k.split(".")[2] for k in want if k.startswith("visual.model.")} == \
        {"0", "1", "4", "5", "6", "7"}
    assert want["vis_proj.0.weight"] == (768, 2048) and want["vis_proj.2.weight"] == (768, 768)
    assert want["lin_proj.0.weight"] == (768, 768) and want["lin_proj.2.bias"] == (768,)
    assert want["linguistic.encoder.pooler.dense.weight"] == (768, 768)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A ViLMedic-layout file (12 RoBERTa layers of width 32, the real ResNet-50) as the zoo's
    trainer saves it: the state dict under "model", with config and optimizer state beside it."""
    from omegaconf import OmegaConf

    root = tmp_path_factory.mktemp("convirt-official")
    folder = roberta_folder(root / "biomed_roberta", layers=12)
    model = vilmedic_model(folder)
    state = vilmedic_state(model)
    path = root / "convirt-mimic.pth"
    cfg = OmegaConf.create({"model": {"proto": "ConVIRT", "loss": {"tau": 0.1, "lambda_": 0.75}},
                            "trainor": {"lr": 5e-5}})
    torch.save({"model": state, "config": cfg, "optimizer": {"state": {}, "param_groups": []}},
               path)
    # the zoo folder's config.yml (ViLMedic's convirt-mimic.yml of 2022 on, abridged)
    (root / "config.yml").write_text(
        "name: convirt_mimic\ndataset:\n  proto: ImSeq\n  seq:\n    tokenizer: "
        "allenai/biomed_roberta_base\n    tokenizer_max_len: 128\n    processing: "
        "r2gen_clean_report\nmodel:\n  proto: ConVIRT\n")
    return {"folder": folder, "model": model, "state": state, "path": path, "root": root}


def _images(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 224, 224, generator=g)


def test_official_checkpoint_loads_strictly_and_gives_vilmedics_embeddings(official):
    assert len(official["state"]) == 526  # 525 + the position_ids buffer of 2021
    m = ConVIRTMethod(checkpoint=str(official["path"]), text_encoder=str(official["folder"]))
    assert m.info["key_diff"] == {"missing": 0, "unexpected": 0, "shape": 0}
    cfg = m.config()
    assert cfg["checkpoint_format"].startswith("ViLMedic") and cfg["text_clean"] == "r2gen"
    assert cfg["text_settings"] == str(official["root"] / "config.yml")
    assert "adaptation" in cfg["heatmap"]
    x = _images()
    ref = official["model"]
    with torch.no_grad():
        torch.testing.assert_close(m.model.encode_images(x), ref.image(x), rtol=1e-5, atol=1e-5)
        # ViLMedic's text input: cleaned, no special tokens, padded to 128
        texts = ["no pneumonia .", "pneumonia in the left lower lobe ."]
        enc = m.tokenizer(texts, add_special_tokens=False, padding="max_length",
                          truncation=True, max_length=128, return_tensors="pt")
        want = ref.text(enc["input_ids"], enc["attention_mask"])
        got = m.model.encode_texts(m.tokenize(["No pneumonia.", "Pneumonia in the left "
                                               "lower lobe."]))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert enc["input_ids"][0, 0] != m.tokenizer.bos_token_id


def test_text_settings_come_from_the_zoo_config(official, tmp_path):
    """Without config.yml beside the file: the config of the zoo entry's day (no cleaning); an
    option wins over both; a processing this harness does not implement is refused."""
    path = tmp_path / "alone.pth"
    torch.save({"model": official["state"]}, path)
    folder = str(official["folder"])
    m = ConVIRTMethod(checkpoint=str(path), text_encoder=folder)
    assert (m.config()["text_clean"], m.config()["max_length"]) == ("none", 128)
    assert "2021-12-27" in m.config()["text_settings"]
    assert m.tokenize(["No  Pneumonia."]).input_ids[0, :4].tolist() == \
        m.tokenizer("No Pneumonia.", add_special_tokens=False)["input_ids"][:4]
    m = ConVIRTMethod(checkpoint=str(path), text_encoder=folder, text_clean="r2gen")
    assert m.config()["text_clean"] == "r2gen"
    (tmp_path / "config.yml").write_text("dataset:\n  seq:\n    processing: ifcc_clean_report\n"
                                         "    tokenizer_max_len: 64\n")
    with pytest.raises(CheckpointError, match="config.yml: dataset.seq.processing="
                                              "'ifcc_clean_report' is not implemented"):
        ConVIRTMethod(checkpoint=str(path), text_encoder=folder)
    (tmp_path / "config.yml").write_text("dataset:\n  seq:\n    tokenizer_max_len: 64\n")
    m = ConVIRTMethod(checkpoint=str(path), text_encoder=folder)
    assert (m.config()["text_clean"], m.config()["max_length"]) == ("none", 64)
    assert m.tokenize(["x"]).input_ids.shape == (1, 64)


def test_legacy_visual_cnn_keys_load_as_visual_model(official, tmp_path):
    """ViLMedic's wrapper held the backbone as `cnn` when the zoo entry was made (2021)."""
    state = {k.replace("visual.model.", "visual.cnn."): v for k, v in official["state"].items()}
    path = tmp_path / "legacy.pth"
    torch.save({"model": state}, path)
    m = ConVIRTMethod(checkpoint=str(path), text_encoder=str(official["folder"]))
    x = _images(1)
    with torch.no_grad():
        torch.testing.assert_close(m.model.encode_images(x), official["model"].image(x),
                                   rtol=1e-5, atol=1e-5)
    both = dict(state, **{"visual.model.0.weight": state["visual.cnn.0.weight"]})
    torch.save({"model": both}, path)
    with pytest.raises(CheckpointError, match="both visual.model"):
        ConVIRTMethod(checkpoint=str(path), text_encoder=str(official["folder"]))


def test_a_bare_state_dict_loads_too(official, tmp_path):
    path = tmp_path / "bare.pth"
    torch.save(official["state"], path)
    m = ConVIRTMethod(checkpoint=str(path), text_encoder=str(official["folder"]))
    assert m.info["key_diff"]["missing"] == 0


def _refused(official, tmp_path, state, match):
    path = tmp_path / "bad.pth"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match=match) as err:
        ConVIRTMethod(checkpoint=str(path), text_encoder=str(official["folder"]))
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    return str(err.value)


def test_a_renamed_key_is_refused_naming_it(official, tmp_path):
    state = dict(official["state"])
    state["vis_proj.2.bias_renamed"] = state.pop("vis_proj.2.bias")
    msg = _refused(official, tmp_path, state, "1 missing: vis_proj.2.bias")
    assert "1 unexpected: vis_proj.2.bias_renamed" in msg


def test_a_wrong_shape_is_refused_naming_it(official, tmp_path):
    state = dict(official["state"])
    state["lin_proj.0.weight"] = torch.zeros(768, 31)
    _refused(official, tmp_path, state, r"lin_proj.0.weight: checkpoint \(768, 31\) vs model "
                                        r"\(768, 32\)")


def test_a_missing_key_is_refused(official, tmp_path):
    state = dict(official["state"])
    del state["visual.model.7.2.bn3.running_var"]
    _refused(official, tmp_path, state, "1 missing: visual.model.7.2.bn3.running_var")


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_a_pickle_that_would_run_code_is_refused(official, tmp_path):
    target = tmp_path / "pwned"
    evil = _RunsCode()
    evil.target = target
    path = tmp_path / "evil.pth"
    torch.save({"model": {"vis_proj.0.weight": torch.zeros(1)}, "extra": evil}, path)
    with pytest.raises(CheckpointError, match=r"refused to load.*system") as err:
        ConVIRTMethod(checkpoint=str(path), text_encoder=str(official["folder"]))
    assert str(path) in str(err.value)
    assert not target.exists()


def test_not_a_vilmedic_file(official, tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="no 'model' state dict.*'state_dict', 'epoch'"):
        ConVIRTMethod(checkpoint=str(path), text_encoder=str(official["folder"]))
    torch.save({"model": {"a": torch.zeros(1), "b": [1, 2]}}, path)
    with pytest.raises(CheckpointError, match="entry 'b' is not a tensor"):
        ConVIRTMethod(checkpoint=str(path), text_encoder=str(official["folder"]))


def test_the_text_encoder_must_be_available_offline(official, tmp_path):
    with pytest.raises(CheckpointError, match="not available offline.*allenai/biomed_roberta"):
        ConVIRTMethod(checkpoint=str(official["path"]),
                      text_encoder=str(tmp_path / "no-such-folder"))


def test_weights_identity_covers_the_text_encoder_folder(official):
    ident = ConVIRTMethod.weights_identity({"checkpoint": str(official["path"]),
                                            "text_encoder": str(official["folder"])})
    assert ident["text_encoder"]["source"] == str(official["folder"])
    assert len(ident["text_encoder"]["content"]) == 64
    assert len(ident["zoo_config"]) == 64  # the config.yml that sets the text cleaning
    assert ConVIRTMethod.weights_identity({}) is None  # tiny random init: no folder read
