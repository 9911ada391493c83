"""Classifier checkpoints users already have: torchvision-layout state dicts (architecture from
the keys, CheXlocalize's head order for 14 outputs) and torchxrayvision's DenseNet, as a state
dict or as the pickled module its releases ship, read without its sigmoid / op_threshs
normalisation and without executing anything."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from bench.errors import CheckpointError
from bench.methods.classifier.checkpoint import (
    CHEXPERT_TASKS,
    infer_arch,
    load_classifier,
    save_weights,
)
from bench.methods.classifier.model import TINY_DENSENET, Classifier, ClassifierConfig


def _xrv(op_threshs: bool = True):
    xrv = pytest.importorskip("torchxrayvision")
    torch.manual_seed(3)
    net = xrv.models.DenseNet(**TINY_DENSENET, num_classes=18,
                              op_threshs=torch.rand(18) if op_threshs else None)
    return net.eval()


def _xrv_logits(net, x01: torch.Tensor) -> torch.Tensor:
    """torchxrayvision's own forward without its calibration: the plain logits."""
    saved = net.op_threshs
    net.op_threshs = None
    with torch.no_grad():
        out = net(x01[:, :1] * 2048 - 1024)
    net.op_threshs = saved
    return out


@pytest.mark.parametrize("as_module", [False, True])
def test_torchxrayvision_densenet_loads_without_its_calibration(tmp_path, as_module):
    net = _xrv()
    path = tmp_path / "xrv.pt"
    torch.save(net if as_module else net.state_dict(), path)
    model, info = load_classifier(path)
    assert model.cfg.input_kind == "xrv" and model.cfg.size == 224
    assert model.cfg.frame == "short_side_crop" and model.cfg.normalize == "unit"
    assert model.cfg.pathologies[0] == "Atelectasis" and len(model.cfg.pathologies) == 18
    assert "op_threshs" in info["dropped"]
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), _xrv_logits(net, x).numpy(), atol=1e-4)
        calibrated = net(x[:, :1] * 2048 - 1024)  # sigmoid + op_norm: not what we return
    assert not np.allclose(model(x).detach().numpy(), calibrated.numpy(), atol=1e-3)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_classifier(path)


def test_torchvision_state_dicts_and_their_head_order(tmp_path):
    import torchvision

    net = torchvision.models.DenseNet(**TINY_DENSENET, num_classes=14)
    path = tmp_path / "tv.pt"
    torch.save({"model": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    model, info = load_classifier(path)
    assert model.cfg.pathologies == list(CHEXPERT_TASKS) and model.cfg.size == 320
    assert model.cfg.arch == "densenet-tiny" and info["format"].startswith("torchvision")
    model, _ = load_classifier(path, pathologies=[f"p{i}" for i in range(14)], size=224)
    assert model.cfg.pathologies[3] == "p3" and model.cfg.size == 224
    with pytest.raises(CheckpointError, match="14 outputs but 2"):
        load_classifier(path, pathologies=["a", "b"])
    net3 = torchvision.models.DenseNet(**TINY_DENSENET, num_classes=3)
    torch.save(net3.state_dict(), tmp_path / "tv3.pt")
    with pytest.raises(CheckpointError, match="3-way head; pass pathologies"):
        load_classifier(tmp_path / "tv3.pt")
    broken = dict(net.state_dict())
    broken["classifier.weight"] = torch.zeros(14, 5)
    torch.save(broken, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="shape"):
        load_classifier(tmp_path / "bad.pt")


def test_resnet_architectures_are_read_off_the_keys():
    import torchvision

    r50 = torchvision.models.resnet50(weights=None).state_dict()
    assert infer_arch(r50, "x") == "resnet50"
    r152_keys = {f"layer3.{i}.conv1.weight": None for i in range(36)}
    r152_keys.update({"layer4.0.conv3.weight": None})
    assert infer_arch(r152_keys, "x") == "resnet152"
    with pytest.raises(CheckpointError, match="not a DenseNet-121"):
        infer_arch({"foo.weight": None}, "x")


def test_our_checkpoint_round_trips_with_its_config(tmp_path):
    cfg = ClassifierConfig(arch="densenet-tiny", pathologies=["A", "B"], size=96,
                           imagenet_weights=False, uncertainty="ignore", preset="tiny")
    model = Classifier(cfg).eval()
    save_weights(tmp_path / "c.safetensors", model)
    back, info = load_classifier(tmp_path / "c.safetensors")
    assert back.cfg.pathologies == ["A", "B"] and back.cfg.uncertainty == "ignore"
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        np.testing.assert_array_equal(back(x).numpy(), model(x).numpy())
