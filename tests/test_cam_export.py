"""`bench export-maps --format chexlocalize`: the pickles as CheXlocalize's own loader reads them
(its `CPU_Unpickler`, written out here), `cxr_dims` in (w, h) order, un-letterboxing, and the
round trip (export, `bench score`) giving the numbers of scoring in place."""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from bench.cli.main import cli
from bench.eval.chexlocalize_export import pkl_name, saliency_record, write_pkl
from bench.imaging.geometry import LETTERBOX, SQUARE, Frame, map_to_original
from bench.methods.classifier.checkpoint import save_weights
from bench.methods.classifier.model import Classifier, ClassifierConfig


class CPU_Unpickler(pickle.Unpickler):  # noqa: N801 - CheXlocalize's name
    """CheXlocalize's loader: a plain unpickler whose tensor storages are mapped to the CPU."""

    def find_class(self, module, name):
        if module == "torch.storage" and name == "_load_from_bytes":
            return lambda b: torch.load(io.BytesIO(b), map_location="cpu")
        return super().find_class(module, name)


def official_load(path):
    with open(path, "rb") as f:
        return CPU_Unpickler(f).load()


def official_resize(info) -> torch.Tensor:
    """`heatmap_to_segmentation.pkl_to_mask`: the map to (cxr_dims[1], cxr_dims[0])."""
    w, h = info["cxr_dims"]
    return F.interpolate(info["map"], size=(h, w), mode="bilinear", align_corners=False)[0, 0]


def test_the_pickle_as_the_official_loader_reads_it(tmp_path):
    image = np.tile(np.arange(60, dtype=np.uint8), (100, 1))  # h 100, w 60
    m = np.random.default_rng(0).random((10, 10)).astype(np.float32)
    rec = saliency_record(m, Frame(SQUARE, 320), image, "Lung Opacity", True, 0.25)
    path = write_pkl(tmp_path, "patient1_study1_view1_frontal", "Lung Opacity", rec)
    assert path.name == "patient1_study1_view1_frontal_Airspace Opacity_map.pkl"
    info = official_load(path)
    assert set(info) == {"map", "prob", "task", "gt", "cxr_img", "cxr_dims"}
    assert isinstance(info["map"], torch.Tensor) and info["map"].dtype == torch.float32
    assert tuple(info["map"].shape) == (1, 1, 320, 320)
    assert info["cxr_dims"] == (60, 100)  # (w, h)
    assert tuple(info["cxr_img"].shape) == (3, 320, 320)
    assert float(info["cxr_img"].max()) <= 1.0
    assert info["task"] == "Airspace Opacity" and info["gt"] == 1 and info["prob"] == 0.25
    # the official task parsing: the second-to-last "_" token
    assert path.name.split("_")[-2] == "Airspace Opacity"
    native = official_resize(info).numpy()
    assert native.shape == (100, 60)
    np.testing.assert_allclose(native, map_to_original(m, Frame(SQUARE, 320), (100, 60)),
                               atol=1e-6)
    # the harness's own reader agrees
    from bench.eval.external_maps import load_pkl

    assert load_pkl(path)["cxr_dims"] == (60, 100)


@pytest.mark.parametrize("hw", [(100, 50), (50, 120)])
def test_a_letterboxed_map_is_un_letterboxed(tmp_path, hw):
    h, w = hw
    frame = Frame(LETTERBOX, 224)
    m = np.full((224, 224), -5.0, np.float32)  # the padding: must not reach the image
    from bench.imaging.geometry import letterbox_placement

    p = letterbox_placement(h, w, 224)
    yy, xx = np.mgrid[0:p.new_h, 0:p.new_w]
    m[p.top:p.top + p.new_h, p.left:p.left + p.new_w] = (yy + 2 * xx).astype(np.float32)
    rec = saliency_record(m, frame, np.zeros(hw, np.uint8), "Edema", False, None)
    write_pkl(tmp_path, "cxr", "Edema", rec)
    info = official_load(tmp_path / pkl_name("cxr", "Edema"))
    assert tuple(info["map"].shape) == (1, 1, p.new_h, p.new_w)
    assert float(info["map"].min()) >= 0  # no padding left
    assert info["cxr_dims"] == (w, h) and info["gt"] == 0 and info["prob"] == 0.0
    np.testing.assert_allclose(official_resize(info).numpy(), map_to_original(m, frame, hw),
                               atol=1e-4)


def test_a_cropped_frame_fills_what_the_method_never_saw():
    frame = Frame(LETTERBOX, 224, pre=256)
    m = np.linspace(1, 2, 224 * 224, dtype=np.float32).reshape(224, 224)
    rec = saliency_record(m, frame, np.zeros((300, 300), np.uint8), "Edema", True, 0.5)
    grid = rec["map"][0, 0].numpy()
    assert grid.shape == (300, 300) and np.isfinite(grid).all()
    assert grid.min() == pytest.approx(1.0, abs=1e-3)


def _ckpt(tmp_path) -> str:
    torch.manual_seed(0)
    cfg = ClassifierConfig(arch="densenet-tiny", pathologies=["Opacity", "Nodule", "Effusion"],
                           size=64, imagenet_weights=False)
    path = tmp_path / "cls.safetensors"
    save_weights(path, Classifier(cfg))
    return str(path)


def _invoke(*args: str) -> dict:
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


@pytest.mark.parametrize("method, protocol", [("gradcam", "chexlocalize"), ("gradcam", "afloc"),
                                              ("random", "chexlocalize")])
def test_export_then_score_gives_the_numbers_of_scoring_in_place(tmp_path, method, protocol):
    """A square-frame CAM under both protocols, a letterbox method (random) under
    CheXlocalize's. (Under AFLoc's protocol a letterbox method's padding is scored in place, as
    AFLoc's code does, and the CheXlocalize format cannot carry it.)"""
    ckpt_args = ["--method-arg", f"checkpoint={_ckpt(tmp_path)}"] if method == "gradcam" else []
    common = ["--protocol", protocol, "--bootstrap", "50", "--dataset-arg", "n=10"]
    inplace = _invoke("run", "--methods", method, "--datasets", "shapes", "--task",
                      "localization", *common, *ckpt_args, "--results-dir",
                      str(tmp_path / "r1"), "--json", "--quiet")
    want = json.loads(inplace.output)["runs"][0]["summary"]
    out = tmp_path / "maps"
    _invoke("export-maps", "--method", method, "--dataset", "shapes", "--dataset-arg", "n=10",
            "--format", "chexlocalize", "--out", str(out), "--quiet", *ckpt_args)
    assert len(list(out.glob("*_map.pkl"))) > 0
    scored = _invoke("score", "--maps", str(out), "--dataset", "shapes", *common,
                     "--results-dir", str(tmp_path / "r2"), "--json")
    got = json.loads(scored.output)["summary"]
    assert json.dumps(got["metrics"], sort_keys=True) == json.dumps(want["metrics"],
                                                                     sort_keys=True)
