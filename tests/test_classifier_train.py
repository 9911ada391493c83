"""`bench train classifier`: the loss under each uncertainty policy on a hand-worked batch, the
uncertain labels the shared data preparation records, and a short training run on `shapes`
whose best checkpoint is chosen on validation AUROC and loads in the CAM methods."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bench.cli.main import cli
from bench.imaging.geometry import SQUARE, Frame
from bench.imaging.recipes import Recipe
from bench.methods.classifier.checkpoint import load_classifier
from bench.methods.classifier.train import definite_auroc, masked_bce, policy_targets
from bench.registry import METHODS
from bench.train.data import labelled_of, prepare, uncertain_labels
from bench.types import Sample

NAN = float("nan")
# two studies, three labels: row 0 = (1, uncertain, blank), row 1 = (0, 1, uncertain)
LABELS = np.array([[1, NAN, NAN], [0, 1, NAN]], dtype=np.float32)
UNSURE = np.array([[False, True, False], [False, False, True]])
LOGITS = torch.tensor([[2.0, -1.0, 0.5], [-1.0, 0.0, 3.0]])


def bce(z: float, y: float) -> float:
    return math.log1p(math.exp(z)) - y * z


@pytest.mark.parametrize("policy, blank, entries", [
    # (row, column, target) of every entry that counts
    ("u-ones", "zero", [(0, 0, 1), (0, 1, 1), (0, 2, 0), (1, 0, 0), (1, 1, 1), (1, 2, 1)]),
    ("u-zeros", "zero", [(0, 0, 1), (0, 1, 0), (0, 2, 0), (1, 0, 0), (1, 1, 1), (1, 2, 0)]),
    ("ignore", "zero", [(0, 0, 1), (0, 2, 0), (1, 0, 0), (1, 1, 1)]),
    ("u-ones", "ignore", [(0, 0, 1), (0, 1, 1), (1, 0, 0), (1, 1, 1), (1, 2, 1)]),
    ("ignore", "ignore", [(0, 0, 1), (1, 0, 0), (1, 1, 1)]),
])
def test_the_loss_under_each_uncertainty_policy(policy, blank, entries):
    target, weight = policy_targets(LABELS, UNSURE, policy, blank)
    want = sum(bce(float(LOGITS[i, j]), y) for i, j, y in entries) / len(entries)
    got = float(masked_bce(LOGITS, torch.from_numpy(target), torch.from_numpy(weight)))
    assert got == pytest.approx(want, rel=1e-6)
    assert weight.sum() == len(entries)
    for i, j, y in entries:
        assert target[i, j] == y and weight[i, j] == 1


def test_no_weighted_entry_gives_zero_loss_and_bad_policies_are_refused():
    t, w = policy_targets(np.full((1, 2), NAN, np.float32), None, "ignore", "ignore")
    assert float(masked_bce(torch.zeros(1, 2), torch.from_numpy(t), torch.from_numpy(w))) == 0
    with pytest.raises(ValueError):
        policy_targets(LABELS, UNSURE, "u-maybe")


def test_validation_auroc_uses_definite_labels_only():
    labels = np.array([[1, NAN], [0, 1], [1, NAN], [0, NAN]], dtype=np.float32)
    scores = np.array([[0.9, 0.1], [0.2, 0.5], [0.8, 0.3], [0.1, 0.2]])
    auc, info = definite_auroc(scores, labels)
    assert auc == 1.0 and info["pathologies_scored"] == 1


class _Labelled:
    """An adapter whose samples carry definite labels and CheXpert's raw row (MIMIC-CXR's)."""

    split = "train"

    def __len__(self):
        return 2

    def load(self, i):
        raw = [{"Edema": 1.0, "Cardiomegaly": -1.0}, {"Edema": -1.0, "Cardiomegaly": NAN}][i]
        return Sample(f"s{i}", np.full((20, 20), 100 + i, np.uint8),
                      labels={k: int(v) for k, v in raw.items() if v in (0.0, 1.0)},
                      meta={"chexpert": raw})


def test_the_shared_preparation_records_uncertain_labels(tmp_path):
    recipe = Recipe("cv2-gray", Frame(SQUARE, 8), "imagenet")
    for cache in (None, tmp_path / "cache", tmp_path / "cache"):  # fresh, written, read back
        data = labelled_of(prepare(_Labelled(), recipe, "all", cache, progress=False),
                           ("Cardiomegaly", "Edema"))
        np.testing.assert_array_equal(data.uncertain, [[True, False], [False, True]])
        np.testing.assert_array_equal(np.isnan(data.labels), [[True, False], [True, True]])
    assert uncertain_labels({"uncertain": ["B", "A"]}) == ["A", "B"]
    assert uncertain_labels({}) == []


def test_bench_train_classifier_selects_on_validation_auroc_and_loads_in_the_cams(tmp_path):
    out = tmp_path / "cls"
    res = CliRunner().invoke(cli, [
        "train", "classifier", "--dataset", "shapes", "--dataset-arg", "n=24", "--preset",
        "tiny", "--size", "64", "--epochs", "2", "--batch-size", "8", "--uncertainty",
        "u-zeros", "--out", str(out), "--quiet"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    hist = json.loads((out / "history.json").read_text())
    assert hist["config"]["selection"] == ["val_auroc", "max"]
    aucs = [e["val_auroc"] for e in hist["epochs"]]
    assert all(0 <= a <= 1 for a in aucs)
    kept = [i for i, e in enumerate(hist["epochs"]) if e["best"]][-1]
    assert kept == int(np.argmax(aucs))
    info = json.loads((out / "train.json").read_text())
    assert info["settings"]["uncertainty"] == "u-zeros" and info["val_source"] == "split val"
    model, meta = load_classifier(out / "best.safetensors")
    assert model.cfg.pathologies == ["Opacity", "Nodule", "Effusion"]
    assert model.cfg.size == 64 and model.cfg.uncertainty == "u-zeros"
    m = METHODS.get("gradcam")(str(out / "best.safetensors"))
    from bench.datasets.shapes import Shapes

    s = Shapes(split="test", n=2).load(0)
    from bench.types import Query

    maps = m.localize([s], [[Query("q", "Nodule", "Nodule")]])
    assert maps[0][0].shape == (64, 64)
    assert m.classify([s], ["Nodule"]).shape == (1, 1)
