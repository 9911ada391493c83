"""The CAM methods: Grad-CAM and Grad-CAM++ against hand-computed maps on a two-layer network with
known gradients, one map per (image, query) when a batch holds several targets, Eigen-CAM's
one map per image, ensembles averaging, and the DenseNet whose forward ends with an in-place
ReLU giving the same map as autograd on the rectified features."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus

from bench.errors import UsageError
from bench.methods.cam.method import CAM_METHODS, cam_class, cam_maps
from bench.methods.classifier.checkpoint import save_weights
from bench.methods.classifier.model import TINY_DENSENET, Classifier, ClassifierConfig
from bench.registry import METHODS
from bench.types import Query, Sample

C, K, S = 4, 3, 16  # channels, classes, input side


def two_layer() -> nn.Sequential:
    """conv (the CAM layer, rectified) -> global average pool -> linear: d logit_k / d A[c,i,j]
    = W[k, c] / (h * w), the same at every location."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, C, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(C, K)).eval()


def scaled(cam: np.ndarray) -> np.ndarray:
    """The package's scaling: ReLU, minus min, over (1e-7 + max), cv2 bilinear to S x S, then
    min-max again (the layer average; bilinear upsampling lowers a one-cell peak)."""
    cam = np.maximum(cam, 0)
    cam = cam - cam.min()
    cam = cv2.resize(np.float32(cam / (1e-7 + cam.max())), (S, S))
    cam = np.maximum(cam, 0) - np.maximum(cam, 0).min()
    return cam / (1e-7 + cam.max())


def hand_maps(net: nn.Sequential, x: torch.Tensor, target: int) -> tuple[np.ndarray, np.ndarray]:
    """(Grad-CAM, Grad-CAM++) of one image, from the known gradients."""
    with torch.no_grad():
        a = net[1](net[0](x))[0].double().numpy()  # [C, h, w]
    h, w = a.shape[1:]
    g = net[4].weight[target].detach().double().numpy() / (h * w)  # per channel, constant
    grad = a * 0 + g[:, None, None]
    gradcam = scaled(np.tensordot(grad.mean((1, 2)), a, 1))
    g2, g3 = grad ** 2, grad ** 3
    aij = g2 / (2 * g2 + a.sum((1, 2))[:, None, None] * g3 + 1e-6)
    aij = np.where(grad != 0, aij, 0)
    weights = (np.maximum(grad, 0) * aij).sum((1, 2))
    return gradcam, scaled(np.tensordot(weights, a, 1))


@pytest.mark.parametrize("target", [0, 1, 2])
def test_gradcam_and_gradcampp_match_the_hand_computed_maps(target):
    net = two_layer()
    x = torch.randn(1, 3, S, S, generator=torch.Generator().manual_seed(target))
    want_gc, want_pp = hand_maps(net, x, target)
    with GradCAM(model=net, target_layers=[net[1]]) as cam:
        got_gc = cam_maps(cam, x, [target])[0]
    with GradCAMPlusPlus(model=net, target_layers=[net[1]]) as cam:
        got_pp = cam_maps(cam, x, [target])[0]
    assert got_gc.shape == (S, S)
    np.testing.assert_allclose(got_gc, want_gc, atol=1e-5)
    np.testing.assert_allclose(got_pp, want_pp, atol=1e-5)


def test_one_target_per_row_and_the_packages_one_target_trap():
    net = two_layer()
    x = torch.randn(2, 3, S, S, generator=torch.Generator().manual_seed(5))
    rows = torch.cat([x[:1], x[:1], x[1:]])  # image 0 twice (targets 0, 2), image 1 (target 1)
    with GradCAM(model=net, target_layers=[net[1]]) as cam:
        got = cam_maps(cam, rows, [0, 2, 1])
        # the trap: one target for a batch scores row 0 only; the other rows get no gradient
        trap = cam(input_tensor=x, targets=[__import__(
            "pytorch_grad_cam.utils.model_targets", fromlist=["x"]).ClassifierOutputTarget(0)])
    np.testing.assert_allclose(got[0], hand_maps(net, x[:1], 0)[0], atol=1e-5)
    np.testing.assert_allclose(got[1], hand_maps(net, x[:1], 2)[0], atol=1e-5)
    np.testing.assert_allclose(got[2], hand_maps(net, x[1:], 1)[0], atol=1e-5)
    assert not np.allclose(got[0], got[1])
    assert np.all(trap[1] == 0)
    with pytest.raises(ValueError):
        with GradCAM(model=net, target_layers=[net[1]]) as cam:
            cam_maps(cam, rows, [0])


def _samples(n: int = 2) -> list[Sample]:
    rng = np.random.default_rng(0)
    return [Sample(f"img{i}", rng.integers(0, 255, (70, 60)).astype(np.uint8)) for i in range(n)]


def _queries(names: list[str], n: int) -> list[list[Query]]:
    return [[Query(f"{i}:{p}", p, p) for p in names] for i in range(n)]


def _checkpoint(tmp_path, seed: int, names=("Cardiomegaly", "Edema", "Lung Opacity")):
    torch.manual_seed(seed)
    cfg = ClassifierConfig(arch="densenet-tiny", pathologies=list(names), size=64,
                           imagenet_weights=False)
    path = tmp_path / f"cls{seed}.safetensors"
    save_weights(path, Classifier(cfg))
    return str(path)


def test_the_method_gives_one_map_per_query_whatever_the_batch(tmp_path):
    ckpt = _checkpoint(tmp_path, 1)
    names = ["Cardiomegaly", "Airspace Opacity", "Edema"]  # CheXlocalize's name, an alias
    samples, queries = _samples(3), _queries(names, 3)
    batched = METHODS.get("gradcam")(ckpt, batch_size=4).localize(samples, queries)
    alone = METHODS.get("gradcam")(ckpt, batch_size=1)
    for i, s in enumerate(samples):
        for k, q in enumerate(queries[i]):
            one = alone.localize([s], [[q]])[0][0]
            assert batched[i][k].shape == (64, 64)
            np.testing.assert_allclose(batched[i][k], one, atol=1e-5)
    assert not np.allclose(batched[0][0], batched[0][2])
    probs = alone.classify(samples, names)
    assert probs.shape == (3, 3) and np.all((probs > 0) & (probs < 1))
    alone.close()
    assert alone.cams == [] and alone.closed


def test_eigencam_gives_every_query_of_an_image_the_same_map(tmp_path):
    ckpt = _checkpoint(tmp_path, 2)
    m = METHODS.get("eigencam")(ckpt)
    assert m.query_agnostic and m.target_agnostic
    maps = m.localize(_samples(2), _queries(["Cardiomegaly", "Edema"], 2))
    for ms in maps:
        np.testing.assert_array_equal(ms[0], ms[1])
    assert not np.allclose(maps[0][0], maps[1][0])


def test_an_ensemble_averages_its_members_maps_and_probabilities(tmp_path):
    a, b = _checkpoint(tmp_path, 3), _checkpoint(tmp_path, 4)
    s, q = _samples(1), _queries(["Edema"], 1)
    ma, mb = (METHODS.get("gradcampp")(c) for c in (a, b))
    both = METHODS.get("gradcampp")(a, ensemble=b)
    np.testing.assert_allclose(both.localize(s, q)[0][0],
                               (ma.localize(s, q)[0][0] + mb.localize(s, q)[0][0]) / 2,
                               atol=1e-6)
    np.testing.assert_allclose(both.classify(s, ["Edema"]),
                               (ma.classify(s, ["Edema"]) + mb.classify(s, ["Edema"])) / 2)
    assert both.config()["members"] == 2


def test_any_cam_class_by_name_and_unknown_names(tmp_path):
    ckpt = _checkpoint(tmp_path, 5)
    m = METHODS.get("gradcam")(ckpt, cam="LayerCAM")
    assert m.config()["cam"] == "LayerCAM"
    assert m.localize(_samples(1), _queries(["Edema"], 1))[0][0].shape == (64, 64)
    with pytest.raises(UsageError, match="no CAM class"):
        cam_class("NoSuchCAM")
    with pytest.raises(UsageError, match="no output for 'Pneumothorax'"):
        m.localize(_samples(1), _queries(["Pneumothorax"], 1))
    assert set(CAM_METHODS) == {"gradcam", "gradcampp", "eigencam"}


def test_densenet_with_an_in_place_final_relu_gives_autograds_map(tmp_path):
    """torchvision's DenseNet ends with F.relu(inplace=True) on norm5's output. Its weights,
    loaded as a torchvision-layout state dict, give the map autograd computes on the rectified
    features (no hook on a tensor that is later overwritten), identical on the CPU."""
    import torchvision

    torch.manual_seed(7)
    tv = torchvision.models.DenseNet(**TINY_DENSENET, num_classes=14).eval()
    for mod in tv.modules():  # non-trivial BatchNorm statistics
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "tv.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in tv.state_dict().items()}}, path)
    m = METHODS.get("gradcam")(str(path), size=64)
    sample = _samples(1)
    x = m.inputs(sample)
    target = 5  # CHEXPERT_TASKS[5] = Edema
    got = m.localize(sample, [[Query("q", "Edema", "Edema")]])[0][0]

    feats = torch.relu(tv.features(x)).detach().requires_grad_(True)  # a copy: not in place
    logit = tv.classifier(feats.mean((2, 3)))[0, target]
    (grad,) = torch.autograd.grad(logit, feats)
    cam = (grad[0].mean((1, 2))[:, None, None] * feats[0]).sum(0).detach().numpy()
    cam = np.maximum(cam, 0)
    cam = cam - cam.min()
    want = cv2.resize(np.float32(cam / (1e-7 + cam.max())), (64, 64))
    want = (want - want.min()) / (1e-7 + (want - want.min()).max())
    np.testing.assert_allclose(got, want, atol=1e-5)
    with torch.no_grad():  # the same classifier: logits equal torchvision's
        np.testing.assert_allclose(m.models[0](x).numpy(), tv(x).numpy(), atol=1e-5)

    # the pitfall the hook placement avoids: a hook on norm5 keeps a CPU view that the
    # in-place ReLU overwrites, so it holds post-ReLU values while norm5 output had negatives
    kept = {}
    h = tv.features.norm5.register_forward_hook(lambda mod, i, o: kept.update(a=o.detach()))
    with torch.no_grad():
        pre = tv.features(x).clone()
        tv(x)
    h.remove()
    assert pre.min() < 0 and kept["a"].min() >= 0


@pytest.mark.parametrize("name", ["gradcam", "gradcampp", "eigencam"])
def test_the_backbone_once_per_image_gives_the_whole_networks_maps(tmp_path, name):
    """The fast path (the package on the head, features as input) against the package on the
    whole classifier, hooked at the same layer."""
    ckpt = _checkpoint(tmp_path, 6)
    samples, queries = _samples(2), _queries(["Cardiomegaly", "Edema", "Lung Opacity"], 2)
    fast = METHODS.get(name)(ckpt)
    assert fast.on_features
    slow = METHODS.get(name)(ckpt)
    for cam in slow.cams:
        cam.__exit__(None, None, None)
    slow.cams = [type(fast.cams[0])(model=m, target_layers=[m.target_layer()]).__enter__()
                 for m in slow.models]
    slow.on_features = False
    for a, b in zip(fast.localize(samples, queries), slow.localize(samples, queries)):
        for ma, mb in zip(a, b):
            np.testing.assert_allclose(ma, mb, atol=1e-4)
