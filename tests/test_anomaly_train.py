"""`bench train rdpp` / `bench train recontrast` on `shapes`' normals: they learn to flag the
drawn ellipses (better than `random` and than the untrained network), choose the checkpoint on
validation images, never read the test split, and their checkpoints load in `bench run`."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bench.cli.main import cli
from bench.datasets.shapes import Shapes
from bench.methods.anomaly.networks import NetworkConfig
from bench.methods.anomaly.train import OneClassData, OneClassTask, one_class_data
from bench.registry import DATASETS
from bench.train.data import TrainingData

SIZE = 96  # the smallest side RD++'s noise allows (size // 8 > 10), a multiple of 32


def _train(method: str, out, *extra: str):
    res = CliRunner().invoke(cli, [
        "train", method, "--dataset", "shapes", "--dataset-arg", "n=200", "--preset", "tiny",
        "--size", str(SIZE), "--epochs", "2", "--block", "25", "--threads", "1",
        "--out", str(out), "--quiet", *extra], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads((out / "history.json").read_text())


def _run(tmp_path, checkpoints: dict[str, str]) -> dict:
    args = ["run", "--methods", ",".join([*checkpoints, "random"]), "--datasets", "shapes",
            "--bootstrap", "100", "--results-dir", str(tmp_path / "res"), "--json", "--quiet",
            "--force"]
    for name, path in checkpoints.items():
        args += ["--method-arg", f"{name}.checkpoint={path}"]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def _untrained(method: str, path) -> str:
    """The network `bench train` starts from (seed 1), saved as a checkpoint."""
    torch.manual_seed(1)
    if method == "rdpp":
        from bench.methods.rdpp import train as t

        model = t.RDPP(NetworkConfig(**{**t.network_config("tiny").to_json(), "size": SIZE}))
    else:
        from bench.methods.recontrast import train as t

        model = t.ReContrastNet(NetworkConfig(**{**t.network_config("tiny").to_json(),
                                                 "size": SIZE}))
        model.freeze_copy()
    t.save_weights(path, model)
    return str(path)


@pytest.mark.parametrize("method", ["rdpp", "recontrast"])
def test_learns_to_flag_the_drawn_ellipses(method, tmp_path):
    hist = _train(method, tmp_path / "ckpt")
    assert hist["config"]["selection"] == ["val_auroc", "max"]
    aucs = [e["val_auroc"] for e in hist["epochs"]]
    kept = [i for i, e in enumerate(hist["epochs"]) if e["best"]][-1]
    assert kept == int(np.argmax(aucs))  # the first best on validation AUROC
    assert hist["epochs"][-1]["train_loss"] < hist["epochs"][0]["train_loss"]
    payload = _run(tmp_path, {method: str(tmp_path / "ckpt" / "best.safetensors")})
    runs = {(r["method"], r["task"]): r["summary"]["metrics"] for r in payload["runs"]}
    iou = runs[(method, "localization")]["iou"]["overall"]
    cnr = runs[(method, "localization")]["cnr"]["overall"]
    assert iou["lower"] > runs[("random", "localization")]["iou"]["overall"]["upper"] + 0.1
    assert cnr["lower"] > 0.5
    assert runs[(method, "classification")]["auroc"]["overall"]["mean"] > 0.55
    untrained = _run(tmp_path / "u", {method: _untrained(method, tmp_path / "init.st")})
    u_iou = next(r for r in untrained["runs"] if r["method"] == method
                 and r["task"] == "localization")["summary"]["metrics"]["iou"]["overall"]
    assert iou["lower"] > u_iou["upper"]


def test_training_reads_train_and_val_never_test(tmp_path, monkeypatch):
    seen: Counter[str] = Counter()
    load = Shapes.load

    def spy(self, index):
        seen[self.split] += 1
        return load(self, index)

    monkeypatch.setattr(Shapes, "load", spy)
    res = CliRunner().invoke(cli, [
        "train", "recontrast", "--dataset", "shapes", "--dataset-arg", "n=40", "--preset",
        "tiny", "--size", "64", "--epochs", "1", "--block", "2", "--threads", "1",
        "--out", str(tmp_path / "c"), "--quiet"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert seen["train"] == 40 and seen["val"] == 40 and seen["test"] == 0


class _TrainOnly(Shapes):
    """`shapes` without a validation split."""

    splits = ("train", "test")


def test_without_a_validation_split_normals_are_held_out_and_abnormals_validate(monkeypatch):
    monkeypatch.setitem(DATASETS._entries, "shapes-train-only", _TrainOnly)
    data = TrainingData("shapes-train-only", None, {"n": 60}, progress=False)
    from bench.methods.recontrast.train import network_config, recipe_of

    oc = one_class_data(data, recipe_of(network_config("tiny")), seed=3, val_images=None)
    train = data.prepared("train", recipe_of(network_config("tiny")), "all")
    normal = {i for i, lab in enumerate(train.labels) if not any(lab.values())}
    abnormal = set(range(len(train.labels))) - normal
    held = set(oc.val_index[oc.val_labels == 0].tolist())
    assert held and held <= normal and not held & set(oc.train_index.tolist())
    assert set(oc.train_index.tolist()) | held == normal
    assert set(oc.val_index[oc.val_labels == 1].tolist()) == abnormal
    assert len(held) == round(0.1 * len(normal))


def test_selection_falls_back_to_the_training_loss_without_abnormal_images():
    frames = np.zeros((4, 64, 64), np.uint8)
    data = OneClassData(frames, np.arange(2), frames, np.arange(2, 4), np.zeros(2, np.int64),
                        {}, "normals only")
    task = OneClassTask(data=data, batch_size=2, block=1, seed=0, size=64)
    assert task.selection == ("train_loss", "min")
    assert np.isnan(task.validation_scores(torch.nn.Identity(), torch.device("cpu"),
                                           0)["val_auroc"])


def test_a_trained_checkpoint_loads_with_its_recipe(tmp_path):
    _train("rdpp", tmp_path / "r", "--epochs", "1", "--block", "2")
    from bench.registry import get_method

    m = get_method("rdpp")(str(tmp_path / "r" / "best.safetensors"))
    assert m.frame.kind == "square_linear" and m.frame.size == SIZE
    assert m.model.has_projection and m.query_agnostic
    s = Shapes(split="test", n=3).load(1)
    from bench.types import Query

    qs = [Query("a", "Nodule", "Nodule"), Query("b", "Opacity", "Opacity")]
    maps = m.localize([s], [qs])[0]
    assert maps[0].shape == (SIZE, SIZE) and np.array_equal(maps[0], maps[1])
    scores = m.classify([s], ["Nodule", "Opacity"])
    assert scores.shape == (1, 2) and scores[0, 0] == scores[0, 1]
    assert scores[0, 0] == pytest.approx(float(maps[0].max()), rel=1e-6)
    cfg = m.config()
    assert cfg["random_init"] is False and cfg["weights"]["format"] == "bench train rdpp"
