"""`bench train afloc` end to end on in-memory synthetic pairs: checkpoint, resume, loading."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from afloc_helpers import PairsDataset, synthetic_sample
from click.testing import CliRunner
from safetensors.torch import load_file

import bench
from bench.cli.main import cli
from bench.methods.afloc.method import AFLocMethod
from bench.registry import DATASETS
from bench.types import Query


def test_train_resume_and_load(tmp_path):
    DATASETS.add("synthetic-test-pairs", PairsDataset)
    out = tmp_path / "run"
    args = ["train", "afloc", "--dataset", "synthetic-test-pairs", "--root", str(tmp_path),
            "--preset", "tiny", "--levels", "sentence,report", "--text-mode", "corrected",
            "--batch-size", "8", "--max-steps", "2", "--out", str(out), "--device", "cpu",
            "--quiet"]
    res = CliRunner().invoke(cli, args + ["--epochs", "1"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "epoch 1:" in res.output
    for name in ("best.safetensors", "last.safetensors", "last.pt", "history.json", "train.json"):
        assert (out / name).is_file(), name
    info = json.loads((out / "train.json").read_text())
    assert info["text_mode"] == "corrected" and info["levels"] == ["sentence", "report"]
    assert info["pairs"]["train"] == 24 and info["pairs"]["val"] == 8
    assert info["request"]["channels_last"] is True  # the default layout of the backbone
    # provenance, as run.json has it: the revision of the checkout the package runs from
    # (None when installed outside one, as tox does)
    assert info["versions"]["torch"] == torch.__version__
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(bench.__file__).parent,
                          capture_output=True, text=True).stdout.strip()
    assert info["git_rev"] == (head or None)
    # the layout never reaches a file: every tensor of the checkpoint is contiguous
    assert all(v.is_contiguous() for v in load_file(out / "best.safetensors").values())

    res = CliRunner().invoke(cli, args + ["--epochs", "2", "--resume"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "resumed" in res.output and "epoch 2:" in res.output and "epoch 1:" not in res.output
    hist = json.loads((out / "history.json").read_text())
    assert [e["epoch"] for e in hist["epochs"]] == [1, 2]
    # tiny lr 1e-3, StepLR gamma 0.9 per epoch, across the resume
    assert [e["lr"] for e in hist["epochs"]] == pytest.approx([9e-4, 8.1e-4], rel=1e-12)
    # tiny recomputes BatchNorm statistics after each epoch (32 batches, capped by --max-steps):
    # the exported statistics count exactly those 2 batches, not the 4 training steps
    assert [e["bn_recalibration_batches"] for e in hist["epochs"]] == [2, 2]
    tracked = {k: int(v) for k, v in load_file(out / "last.safetensors").items()
               if k.endswith("num_batches_tracked")}
    assert tracked and set(tracked.values()) == {2}

    m = AFLocMethod(checkpoint=str(out / "best.safetensors"))
    cfg = m.config()
    assert cfg["text_mode"] == "corrected" and cfg["levels"] == ["sentence", "report"]
    maps = m.localize([synthetic_sample(0)], [[Query("q", "x", "opacity in the left lung")]])
    assert maps[0][0].shape == (224, 224)


def test_prepare_pairs_filters_counts_and_caches(tmp_path):
    import numpy as np

    from bench.imaging.geometry import center_crop, letterbox
    from bench.methods.afloc.imaging import TRAIN_PREFRAMES
    from bench.methods.afloc.pretrain import PairDataset, clean_pairs
    from bench.train.data import pairs_of, prepare

    class Mixed:
        def __len__(self):
            return 5

        def load(self, i):
            if i == 1:
                return None
            s = synthetic_sample(i, h=300, w=200)
            if i == 2:
                s.meta["view"] = "LATERAL"
            if i == 3:
                s.report = "X. Y."  # no sentence survives the cleaning
            return s

    recipe = TRAIN_PREFRAMES["faithful"]
    prepared = prepare(Mixed(), recipe, "frontal", tmp_path / "c", progress=False)
    pairs = clean_pairs(pairs_of(prepared), "faithful")
    assert pairs.ids == ["synthetic-0", "synthetic-4"]
    assert pairs.skipped == {"unreadable image": 1, "not frontal": 1, "no report sentence": 1}
    # faithful training frame: letterbox 256 then CenterCrop 224 (16 px cut on each side)
    assert prepared.frames.shape == (3, 256, 256) and prepared.frames.dtype == np.uint8
    want = center_crop(letterbox(synthetic_sample(4, h=300, w=200).image, 256), 224)
    np.testing.assert_array_equal(pairs.frame(1), want)

    class Cached(Mixed):
        def load(self, i):
            raise AssertionError("load() called: the pairs were rebuilt")

    Cached.__qualname__ = Mixed.__qualname__  # the same adapter, as far as the cache can tell
    again = prepare(Cached(), recipe, "frontal", tmp_path / "c", progress=False)
    np.testing.assert_array_equal(np.asarray(again.frames), prepared.frames)
    assert again.reports == prepared.reports

    # data of another kind is rebuilt, not read: another recipe (the corrected text mode's
    # 224 letterbox), another dataset option (e.g. MS-CXR held out or not), another limit
    class HeldOut(Mixed):
        def config(self):
            return {"exclude_ms_cxr": "/data/ms-cxr/MS_CXR_Local_Alignment_v1.0.0.json"}

    HeldOut.__qualname__ = Mixed.__qualname__
    for ds, rec, limit in ((Cached(), TRAIN_PREFRAMES["corrected"], None),
                           (Cached(), recipe, 3),
                           (type("X", (Cached, HeldOut), {})(), recipe, None)):
        ds.__class__.__qualname__ = Mixed.__qualname__
        with pytest.raises(AssertionError, match="the pairs were rebuilt"):
            prepare(ds, rec, "frontal", tmp_path / "c", progress=False, limit=limit)
    ds = PairDataset(pairs, augment=True, seed=1)
    assert ds[0][1] == ds[0][1]  # the caption draw is a function of (seed, epoch, index)
    ds.epoch = 1
    assert all(len(ds[i][1]) > 0 for i in range(2))


def test_compile_flag_routes_the_local_losses_through_torch_compile(tmp_path, monkeypatch):
    """`--compile` traces the loss block (dynamo, eager backend here to stay fast on CPU) for
    every chunk shape, trains, and leaves eager mode behind."""
    import math

    import torch

    from bench.methods._shared import contrastive as L

    DATASETS.add("synthetic-test-pairs", PairsDataset)
    compiled: list[str] = []
    real_compile = torch.compile

    def eager_compile(fn, **kwargs):
        compiled.append(fn.__name__)
        return real_compile(fn, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, [
        "train", "afloc", "--dataset", "synthetic-test-pairs", "--root", str(tmp_path),
        "--preset", "tiny", "--batch-size", "8", "--max-steps", "2", "--epochs", "1",
        "--out", str(out), "--device", "cpu", "--compile", "--gamma", "0.5", "--quiet"],
        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert compiled == ["_similarity_block"]
    assert L._BLOCK is L._similarity_block
    info = json.loads((out / "train.json").read_text())
    assert info["request"]["compile"] is True
    epoch = json.loads((out / "history.json").read_text())["epochs"][0]
    assert math.isfinite(epoch["train_loss"]) and math.isfinite(epoch["val_loss"])
    assert epoch["lr"] == pytest.approx(5e-4, rel=1e-12)
    assert info["request"]["method_options"]["gamma"] == 0.5


def test_bn_recalibration_can_be_turned_off(tmp_path):
    DATASETS.add("synthetic-test-pairs", PairsDataset)
    out = tmp_path / "run"
    args = ["train", "afloc", "--dataset", "synthetic-test-pairs", "--root", str(tmp_path),
            "--preset", "tiny", "--levels", "report", "--batch-size", "8", "--max-steps", "3",
            "--epochs", "1", "--bn-recalibration", "0", "--no-channels-last", "--out", str(out),
            "--device", "cpu", "--quiet"]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads((out / "train.json").read_text())["request"]["channels_last"] is False
    hist = json.loads((out / "history.json").read_text())
    assert hist["epochs"][0]["bn_recalibration_batches"] == 0
    assert hist["config"]["bn_recalibration_batches"] == 0
    tracked = {int(v) for k, v in load_file(out / "last.safetensors").items()
               if k.endswith("num_batches_tracked")}
    assert tracked == {3}  # the running averages of the 3 training steps, as trained


def test_local_impl_gemm_trains_to_the_same_first_loss(tmp_path):
    """`--local-impl gemm` computes the same losses another way: the first step's loss (taken
    before any update) equals the einsum run's, and the choice is recorded in train.json."""
    from bench.methods._shared import contrastive as L

    DATASETS.add("synthetic-test-pairs", PairsDataset)
    losses = {}
    for impl in ("einsum", "gemm"):
        out = tmp_path / impl
        res = CliRunner().invoke(cli, [
            "train", "afloc", "--dataset", "synthetic-test-pairs", "--root", str(tmp_path),
            "--preset", "tiny", "--batch-size", "8", "--max-steps", "1", "--epochs", "1",
            "--bn-recalibration", "0", "--out", str(out), "--device", "cpu",
            "--local-impl", impl, "--quiet"], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        info = json.loads((out / "train.json").read_text())
        assert info["request"]["method_options"]["local_impl"] == impl
        losses[impl] = json.loads((out / "history.json").read_text())["epochs"][0]["train_loss"]
        assert L._BLOCK is L._similarity_block  # eager einsum restored after the run
    assert losses["gemm"] == pytest.approx(losses["einsum"], rel=1e-5)


@pytest.mark.parametrize("text_mode", ["faithful", "corrected"])
def test_validation_captions_follow_the_text_mode(text_mode):
    """faithful: the official validation set is the training dataset class, so its captions are
    drawn (k of n sentences, shuffled), anew each epoch and apart from the training draws;
    corrected: whole captions, the same every epoch."""
    import numpy as np
    from afloc_helpers import tiny_model

    from bench.methods._shared.bert_text import full_caption
    from bench.methods.afloc.pretrain import AFLocTask, PairSet

    sents = [[f"finding {k} number {j}" for j in range(5)] for k in range(8)]
    pairs = PairSet(np.zeros((8, 224, 224), np.uint8), np.arange(8), sents,
                    [str(k) for k in range(8)], {})
    model, tok = tiny_model(text_mode=text_mode)
    task = AFLocTask(model, tok, pairs, pairs, batch_size=4, seed=1)

    def captions(epoch):
        task.val_loader(epoch, 0, 1)  # sets the epoch the draws use
        return [task.val_set[i][1] for i in range(8)]

    first, second = captions(0), captions(1)
    whole = [full_caption(s) for s in sents]
    if text_mode == "corrected":
        assert first == second == whole
        return
    assert first != second and not set(first) & set(whole)
    for caption, s in zip(first, sents):
        parts = caption.split(". ")
        assert 1 <= len(parts) <= 4 and len(set(parts)) == len(parts) and set(parts) <= set(s)
    task.train_set.epoch = 0
    assert first != [task.train_set[i][1] for i in range(8)]  # another stream than training
