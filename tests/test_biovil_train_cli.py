"""`bench train biovil` end to end on in-memory synthetic pairs (tiny preset), its loss against
hand computations and the official-structure local-loss oracle, and the checkpoint in
`bench run`."""

from __future__ import annotations

import json
import math

import torch
import torch.nn.functional as F
from afloc_helpers import PairsDataset, run_trained
from click.testing import CliRunner
from safetensors.torch import load_file

from bench.cli.main import cli
from bench.methods._shared.contrastive import local_similarity_loop
from bench.methods.biovil.train import biovil_loss, report_text, token_mask
from bench.registry import DATASETS


def test_global_loss_by_hand():
    """Two pairs, unit vectors at angle 0 / 90 degrees: S = [[1, 0], [0, 1]] / tau; each
    direction's CE = log(1 + e^(-1 / tau)); the loss is their mean."""
    img = torch.tensor([[2.0, 0.0], [0.0, 3.0]])[:, :, None, None]  # h = w = 1
    txt = torch.tensor([[1.0, 0.0], [0.0, 5.0]])
    out = biovil_loss(img, txt, txt[:, None, :], torch.ones(2, 1, dtype=torch.bool),
                      tau=0.1, local_weight=0.0)
    want = math.log(1 + math.exp(-10.0))
    assert float(out["loss"]) == float(out["global"])
    assert abs(float(out["loss"]) - want) < 1e-6
    assert "local" not in out


def test_local_loss_is_glorias_on_projected_tokens():
    g = torch.Generator().manual_seed(0)
    img = torch.randn(3, 8, 2, 3, generator=g)
    cls = torch.randn(3, 8, generator=g)
    tokens = torch.randn(3, 5, 8, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 0, 0, 0]], dtype=torch.bool)
    out = biovil_loss(img, cls, tokens, mask, tau=0.1, local_weight=0.5)
    sim = local_similarity_loop(img, tokens.transpose(1, 2), mask, 4.0, 5.0) * 10.0
    labels = torch.arange(3)
    local = 0.5 * (F.cross_entropy(sim, labels) + F.cross_entropy(sim.t(), labels))
    torch.testing.assert_close(out["local"], local, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["loss"], out["global"] + 0.5 * local, rtol=1e-5, atol=1e-5)


def test_token_mask_and_report_text():
    ids = torch.tensor([[2, 7, 8, 3, 0], [2, 9, 3, 0, 0]])
    att = (ids != 0).long()
    assert token_mask(ids, att, [0, 1, 2, 3, 4]).tolist() == [
        [False, True, True, False, False], [False, True, False, False, False]]
    assert report_text("Small  effusion.", "No\npneumonia.") == "Small effusion. No pneumonia."
    assert report_text(None, None, "  whole   report ") == "whole report"
    assert report_text(None, None, " ") is None


def test_train_tiny_and_run(tmp_path, capsys):
    DATASETS.add("synthetic-test-pairs", PairsDataset)
    out = tmp_path / "run"
    args = ["train", "biovil", "--dataset", "synthetic-test-pairs", "--root", str(tmp_path),
            "--preset", "tiny", "--batch-size", "8", "--max-steps", "2", "--out", str(out),
            "--device", "cpu", "--quiet", "--epochs", "1"]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "epoch 1:" in res.output
    info = json.loads((out / "train.json").read_text())
    assert info["method"] == "biovil"
    assert info["pairs"]["train"] == 24 and info["pairs"]["val"] == 8
    assert info["settings"]["lr"] == 1e-3 and info["settings"]["batch_size"] == 8
    assert info["settings"]["loss"]["local_weight"] == 1.0
    model = info["model"]
    assert (model["arch"], model["joint_dim"], model["resize"], model["crop"]) == \
        ("small", 64, 256, 224)
    assert model["text_config"]["num_hidden_layers"] == 4
    assert info["pre_frame"] == {"reader": "himl-load-image",
                                 "frame": "short_side_crop 256 -> crop 256", "normalize": "unit"}
    assert info["val_frame"]["frame"] == "short_side_crop 256 -> crop 224"
    weights = load_file(out / "best.safetensors")
    assert "image.projector.model.0.weight" in weights
    assert "text.cls_projection_head.dense_to_output.weight" in weights
    assert "text.cls.predictions.decoder.weight" in weights

    info = run_trained("biovil", out / "best.safetensors", tmp_path, capsys)
    assert info["config"]["checkpoint_format"] == "afloc-bench safetensors"
    assert info["frame"] == "original"
    assert info["inputs"]["localize"]["reader"] == "himl-load-image"
