"""`bench train chexzero` end to end on in-memory synthetic pairs (tiny preset), its checkpoint
in `bench run`, the impression texts it trains on, and CLIP's loss on a hand-computed case."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from afloc_helpers import PairsDataset, run_trained, synthetic_sample
from click.testing import CliRunner
from safetensors.torch import load_file

from bench.cli.main import cli
from bench.registry import DATASETS


def test_train_tiny_and_run(tmp_path, capsys):
    DATASETS.add("synthetic-test-pairs", PairsDataset)
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, [
        "train", "chexzero", "--dataset", "synthetic-test-pairs", "--root", str(tmp_path),
        "--preset", "tiny", "--batch-size", "8", "--max-steps", "2", "--epochs", "1",
        "--out", str(out), "--device", "cpu", "--quiet"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "epoch 1:" in res.output
    info = json.loads((out / "train.json").read_text())
    assert info["method"] == "chexzero"
    assert info["pairs"]["train"] == 24 and info["pairs"]["val"] == 8
    # the helper's samples carry no sections: the official text for a report without one
    assert info["pairs"]["texts"] == {"no impression: 'NO IMPRESSION'": 24}
    s = info["settings"]
    assert (s["optimizer"], s["lr"], s["batch_size"], s["epochs"]) == ("clip", 5e-4, 8, 1)
    assert s["adamw"] == {"betas": [0.9, 0.98], "eps": 1e-6, "weight_decay": 0.2,
                          "warmup_steps": 50}
    assert info["model"]["arch"]["vision_cfg"]["patch_size"] == 32
    assert info["frame"]["tensor_resize"] == "224 bicubic antialias=False"
    hist = json.loads((out / "history.json").read_text())
    opt = hist["config"]["optimization"]
    assert opt[0]["optimizer"] == "AdamW" and opt[0]["groups"][0]["weight_decay"] == 0.2
    assert opt[1] == {"scheduler": "LambdaLR", "interval": "step", "monitor": None}
    assert hist["epochs"][0]["lr"] == pytest.approx(5e-4 * 3 / 50)  # the 3rd step's rate
    weights = load_file(out / "best.safetensors")
    assert {"logit_scale", "visual.proj", "text_projection", "token_embedding.weight"} <= \
        set(weights)

    run = run_trained("chexzero", out / "best.safetensors", tmp_path, capsys)
    assert run["config"]["members"][0]["format"] == "afloc-bench safetensors"
    assert "adaptation" in run["config"]["heatmap"]
    assert run["frame"] == "pil_letterbox 320"


def test_the_paper_preset_needs_openai_weights_and_sgd_is_its_optimiser(tmp_path):
    from bench.methods.chexzero.train import OPTIMIZER, PRESETS

    assert PRESETS["paper"] == {"epochs": 4, "batch_size": 16, "lr": 1e-4,
                                "bn_recalibration": 0}  # run_train.py's defaults
    assert OPTIMIZER == {"paper": "sgd", "tiny": "clip"}
    DATASETS.add("synthetic-test-pairs", PairsDataset)
    res = CliRunner().invoke(cli, [
        "train", "chexzero", "--dataset", "synthetic-test-pairs", "--root", str(tmp_path),
        "--preset", "paper", "--out", str(tmp_path / "o"), "--quiet"])
    assert res.exit_code != 0 and "--init PATH" in str(res.exception)


def test_texts_are_the_impression_or_what_the_option_says(tmp_path):
    from bench.methods.chexzero.imaging import EVAL
    from bench.methods.chexzero.train import PairDataset, impression_pairs
    from bench.train.data import pairs_of, prepare

    class Sectioned:
        def __len__(self):
            return 3

        def load(self, i):
            s = synthetic_sample(i, h=300, w=260)
            if i == 0:
                s.meta.update(findings="Heart normal.", impression="No acute\n  disease.")
            if i == 1:
                s.meta.update(findings="Lungs clear.", impression="")
            return s

    pairs = pairs_of(prepare(Sectioned(), EVAL, "frontal", None, progress=False))
    official = impression_pairs(pairs, "official")
    assert official.texts == ["No acute disease.", " ", "NO IMPRESSION"]
    report = impression_pairs(pairs, "report")
    assert report.texts[2] == " ".join(pairs.reports[2].split())
    skip = impression_pairs(pairs, "skip")
    assert skip.texts == ["No acute disease.", " "] and skip.skipped == {"no impression": 1}
    frame, text = PairDataset(official)[0]
    assert frame.shape == (320, 320) and text == "No acute disease."


def test_clip_loss_on_a_hand_computed_case():
    from bench.methods.chexzero.model import clip_loss

    img = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # normalised: e1, e2
    txt = torch.tensor([[1.0, 0.0], [0.6, 0.8]])  # cosines: [[1, .6], [0, .8]]
    scale = torch.tensor(10.0)
    out = clip_loss(img, txt, scale)
    s = np.array([[1.0, 0.6], [0.0, 0.8]]) * 10

    def ce(rows):
        return np.mean([-(r[i] - math.log(np.exp(r).sum())) for i, r in enumerate(rows)])

    assert float(out["image_to_text"]) == pytest.approx(ce(s), abs=1e-6)
    assert float(out["text_to_image"]) == pytest.approx(ce(s.T), abs=1e-6)
    assert float(out["loss"]) == pytest.approx((ce(s) + ce(s.T)) / 2, abs=1e-6)
