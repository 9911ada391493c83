"""`bench train convirt` end to end on in-memory synthetic pairs (tiny preset), the checkpoint
loading in `bench run`, and the captions and crops ConVIRT trains on."""

from __future__ import annotations

import json

import numpy as np
import pytest
from afloc_helpers import PairsDataset, run_trained, synthetic_sample
from click.testing import CliRunner
from safetensors.torch import load_file

from bench.cli.main import cli
from bench.registry import DATASETS


def test_train_tiny_resume_and_run(tmp_path, capsys):
    DATASETS.add("synthetic-test-pairs", PairsDataset)
    out = tmp_path / "run"
    args = ["train", "convirt", "--dataset", "synthetic-test-pairs", "--root", str(tmp_path),
            "--preset", "tiny", "--batch-size", "8", "--max-steps", "2", "--out", str(out),
            "--device", "cpu", "--quiet"]
    res = CliRunner().invoke(cli, args + ["--epochs", "1"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "epoch 1:" in res.output
    for name in ("best.safetensors", "last.safetensors", "last.pt", "history.json", "train.json"):
        assert (out / name).is_file(), name
    info = json.loads((out / "train.json").read_text())
    assert info["method"] == "convirt"
    assert info["pairs"]["train"] == 24 and info["pairs"]["val"] == 8
    assert info["settings"]["lr"] == 1e-3 and info["settings"]["batch_size"] == 8
    assert info["settings"]["optimizer"] == "RAdam" and info["settings"]["hflip"] is True
    assert info["settings"]["loss"] == {"tau": 0.1, "lambda": 0.75}
    assert info["settings"]["early_stopping"] is None
    model = info["model"]
    assert (model["arch"], model["text_kind"], model["proj_dim"]) == ("small", "bert", 64)
    assert model["text_config"]["hidden_size"] == 64
    assert model["text_config"]["num_hidden_layers"] == 4
    assert info["pre_frame"]["frame"] == "short_side_crop 256 -> crop 256"
    assert info["val_frame"]["frame"] == "resize 224"
    hist = json.loads((out / "history.json").read_text())
    opt = hist["config"]["optimization"]
    assert opt[0]["optimizer"] == "RAdam" and opt[0]["groups"][0]["lr"] == 1e-3
    assert opt[1] == {"scheduler": "ReduceLROnPlateau", "interval": "epoch",
                      "monitor": "val_loss"}
    assert hist["epochs"][0]["bn_recalibration_batches"] == 2
    weights = load_file(out / "best.safetensors")
    assert "vis_proj.0.weight" in weights and "linguistic.encoder.pooler.dense.weight" in weights
    assert all(v.is_contiguous() for v in weights.values())

    res = CliRunner().invoke(cli, args + ["--epochs", "2", "--resume"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "resumed" in res.output and "epoch 2:" in res.output
    hist = json.loads((out / "history.json").read_text())
    assert [e["epoch"] for e in hist["epochs"]] == [1, 2]
    assert [e["lr"] for e in hist["epochs"]] == [1e-3, 1e-3]  # no plateau in two epochs

    info = run_trained("convirt", out / "best.safetensors", tmp_path, capsys)
    assert info["config"]["checkpoint_format"] == "afloc-bench safetensors"
    assert info["config"]["random_init"] is False
    assert "adaptation" in info["config"]["heatmap"]


def test_an_unknown_option_and_preset_are_refused(tmp_path):
    DATASETS.add("synthetic-test-pairs", PairsDataset)
    base = ["train", "convirt", "--dataset", "synthetic-test-pairs", "--root", str(tmp_path),
            "--out", str(tmp_path / "o"), "--quiet"]
    res = CliRunner().invoke(cli, base + ["--preset", "huge"])
    assert res.exit_code != 0 and "no preset 'huge' (presets: paper, tiny)" in str(res.exception)
    res = CliRunner().invoke(cli, base + ["--preset", "tiny", "--method-arg", "text_clen=none"])
    assert res.exit_code != 0 and "text_clean" in str(res.exception)


def test_captions_are_impression_then_findings_cleaned_and_cached(tmp_path):
    from bench.methods.convirt.imaging import TRAIN_PREFRAME
    from bench.methods.convirt.train import PairDataset, caption_pairs
    from bench.train.data import pairs_of, prepare

    class Sectioned:
        def __len__(self):
            return 4

        def load(self, i):
            s = synthetic_sample(i, h=300, w=260)
            if i == 0:
                s.meta.update(findings="Heart normal.\nLungs clear.", impression="No acute "
                              "disease.")
            if i == 1:
                s.meta.update(findings=None, impression="Small effusion (right).")
            if i == 3:
                s.report = "..."  # nothing left after the cleaning
            return s

    prepared = prepare(Sectioned(), TRAIN_PREFRAME, "frontal", tmp_path / "c", progress=False)
    pairs = caption_pairs(pairs_of(prepared), "r2gen")
    assert pairs.captions == ["no acute disease . heart normal . lungs clear .",
                              "small effusion right .",
                              "lungs are clear . no pneumothorax . cardiomediastinal silhouette "
                              "is normal ."]  # the adapter's report: no sections
    assert pairs.skipped == {"no report text": 1} and pairs.from_sections == 2
    again = prepare(Sectioned(), TRAIN_PREFRAME, "frontal", tmp_path / "c", progress=False)
    assert again.sections == prepared.sections and again.sections[0]["impression"]

    ds = PairDataset(pairs, augment=True, seed=3)
    frame, caption = ds[0]
    assert frame.shape == (224, 224) and caption == pairs.captions[0]
    np.testing.assert_array_equal(ds[0][0], frame)  # a function of (seed, epoch, index)
    ds.epoch = 1
    assert not np.array_equal(ds[0][0], frame)  # another draw in another epoch
    assert PairDataset(pairs, augment=False)[0][0].shape == (256, 256)


@pytest.mark.parametrize("clean", ["r2gen", "none"])
def test_text_clean_reaches_the_checkpoint(tmp_path, clean):
    from bench.methods.convirt.method import ConVIRTMethod

    DATASETS.add("synthetic-test-pairs", PairsDataset)
    out = tmp_path / clean
    res = CliRunner().invoke(cli, [
        "train", "convirt", "--dataset", "synthetic-test-pairs", "--root", str(tmp_path),
        "--preset", "tiny", "--batch-size", "8", "--max-steps", "1", "--epochs", "1",
        "--bn-recalibration", "0", "--text-clean", clean, "--no-hflip",
        "--out", str(out), "--device", "cpu", "--quiet"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    info = json.loads((out / "train.json").read_text())
    assert info["settings"]["text_clean"] == clean and info["settings"]["hflip"] is False
    assert ConVIRTMethod(checkpoint=str(out / "best.safetensors")).config()["text_clean"] == clean


def test_paper_preset_trains_with_a_local_roberta_and_carries_its_tokenizer(tmp_path):
    """`--preset paper`: ResNet-50 + the RoBERTa of --text-encoder (a local folder here),
    ViLMedic's optimisation; the checkpoint carries the BPE tokenizer, so it loads alone."""
    from convirt_helpers import roberta_folder
    from transformers import AutoConfig, AutoTokenizer, RobertaModel

    from bench.methods.convirt.method import ConVIRTMethod

    folder = roberta_folder(tmp_path / "roberta")
    RobertaModel(AutoConfig.from_pretrained(folder)).save_pretrained(folder)
    DATASETS.add("synthetic-test-pairs", PairsDataset)
    out = tmp_path / "paper"
    res = CliRunner().invoke(cli, [
        "train", "convirt", "--dataset", "synthetic-test-pairs", "--root", str(tmp_path),
        "--preset", "paper", "--text-encoder", str(folder), "--batch-size", "4",
        "--max-steps", "1", "--epochs", "1", "--out", str(out), "--device", "cpu", "--quiet"],
        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    info = json.loads((out / "train.json").read_text())
    assert info["settings"]["lr"] == 5e-5 and info["settings"]["bn_recalibration"] == 0
    assert info["settings"]["early_stopping"] == 20  # ViLMedic's early_stop
    assert info["settings"]["lr_decay"]["ReduceLROnPlateau"] == {
        "factor": 0.5, "patience": 5, "threshold": 0.01, "threshold_mode": "abs",
        "min_lr": 1e-6}
    model = info["model"]
    assert (model["arch"], model["text_kind"], model["proj_dim"], model["text_encoder"]) == \
        ("resnet50", "roberta", 768, str(folder))

    m = ConVIRTMethod(checkpoint=str(out / "best.safetensors"))
    assert m.config()["preset"] == "paper"
    want = AutoTokenizer.from_pretrained(folder)("no pneumonia .", add_special_tokens=False,
                                                 padding="max_length", max_length=128)
    assert m.tokenize(["No pneumonia."]).input_ids[0].tolist() == want["input_ids"]
    assert ConVIRTMethod.weights_identity({"checkpoint": str(out / "best.safetensors")}) is None
