"""`bench train medklip` end to end on in-memory synthetic pairs (tiny preset), and the
checkpoint it writes loading back into the method (new queries through its own text encoder)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from afloc_helpers import PairsDataset
from click.testing import CliRunner
from safetensors.torch import load_file

from bench.cli.main import cli
from bench.methods.medklip.method import MedKLIPMethod
from bench.methods.medklip.train import official_lr_factor
from bench.registry import DATASETS
from bench.types import Query


class LabelledPairs(PairsDataset):
    name = "synthetic-medklip-pairs"

    def load(self, i: int):
        s = super().load(i)
        s.labels = {"Pneumonia": int(i % 2 == 0), "Pleural Effusion": int(i % 3 == 0),
                    "No Finding": int(i % 2 == 1 and i % 3 != 0)}
        return s


def test_train_tiny_and_load(tmp_path):
    DATASETS.add("synthetic-medklip-pairs", LabelledPairs)
    out = tmp_path / "run"
    args = ["train", "medklip", "--dataset", "synthetic-medklip-pairs", "--root", str(tmp_path),
            "--preset", "tiny", "--batch-size", "8", "--max-steps", "2", "--out", str(out),
            "--device", "cpu", "--quiet", "--epochs", "1"]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "epoch 1:" in res.output
    info = json.loads((out / "train.json").read_text())
    assert info["method"] == "medklip"
    assert info["pairs"]["train"] == 24 and info["pairs"]["val"] == 8
    assert info["settings"]["lr"] == 1e-3
    assert info["model"]["arch"] == "small" and info["model"]["d_model"] == 64
    weights = load_file(out / "best.safetensors")
    assert weights["disease_book"].shape == (75, 64)
    assert "text.encoder.layer.0.attention.self.query.weight" in weights
    assert "decoder.layers.3.multihead_attn.in_proj_weight" in weights

    m = MedKLIPMethod(checkpoint=str(out / "best.safetensors"), batch_size=4)
    assert m.config()["checkpoint_format"] == "afloc-bench safetensors"
    samples = [LabelledPairs(split="validate").load(i) for i in range(2)]
    maps = m.localize(samples, [[Query("a", "Pneumonia", "Pneumonia")],
                                [Query("b", "Pneumonia", "left sided opacity")]])
    assert maps[0][0].shape == (224, 224) and maps[1][0].shape == (224, 224)
    # attention rows are distributions over the 196 patches: each 16x16 block holds one value
    assert maps[0][0][::16, ::16].sum() == pytest.approx(1.0, abs=1e-4)
    probs = m.classify(samples, ["Pneumonia", "COVID-19"])
    assert probs.shape == (2, 2) and ((probs > 0) & (probs < 1)).all()
    m.close()


def test_official_schedule_shape():
    # warm-up over the first epoch's 100-iteration blocks, then the cosine read at epoch + 5
    lr = 1e-4
    f = lambda step: official_lr_factor(step, 1000, 100, lr) * lr  # noqa: E731
    assert f(0) == pytest.approx(1e-5)
    assert f(150) == pytest.approx(1e-5 + (lr - 1e-5) / 5)
    cos = lambda t: 1e-5 + 0.5 * (lr - 1e-5) * (1 + math.cos(math.pi * t / 100))  # noqa: E731
    assert f(600) == pytest.approx(cos(5))
    assert f(1000) == pytest.approx(cos(6))
    assert f(1000 * 99) == pytest.approx(1e-5)
    assert np.isfinite(f(10 ** 6))
