"""`bench train METHOD` for any trainable method: a toy classifier registered here trains on the
`shapes` set with two optimizers, from a --config file, resumes exactly, and picks its best
checkpoint on validation AUROC; the shared data kinds; training threads fixed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from bench.cli.main import cli
from bench.errors import BenchError, UsageError
from bench.imaging.geometry import SQUARE, Frame
from bench.imaging.recipes import Recipe, to_tensor
from bench.methods._shared.checkpoints import save_weights
from bench.methods.base import SUPERVISED, Method, Option
from bench.registry import METHODS
from bench.train.data import (
    LabelledImages,
    TrainingData,
    is_normal,
    labelled_of,
    normals_of,
    prepare,
)
from bench.train.loop import Optimization, Scheduled, TrainTask
from bench.types import Capabilities

RECIPE = Recipe("cv2-gray", Frame(SQUARE, 32), "unit")


class ToyTask(TrainTask):
    """A conv feature + linear head, each with its own optimizer (Adam, SGD + StepLR)."""

    selection = ("val_auroc", "max")

    def __init__(self, train: LabelledImages, val: LabelledImages, head_lr: float, bs: int,
                 seed: int, cosine_over: int | None = None):
        torch.manual_seed(seed)
        self.model = torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 5, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(), torch.nn.Linear(4, len(train.pathologies)))
        self.train_data, self.val_data = train, val
        self.head_lr, self.bs, self.seed = head_lr, bs, seed
        self.cosine_over = cosine_over  # the head's cosine schedule over this many epochs

    def configure_optimizers(self) -> Optimization:
        body = torch.optim.Adam(self.model[0].parameters(), lr=1e-2)
        head = torch.optim.SGD(self.model[4].parameters(), lr=self.head_lr, momentum=0.9)
        sched = (torch.optim.lr_scheduler.StepLR(head, 1, 0.5) if self.cosine_over is None
                 else torch.optim.lr_scheduler.CosineAnnealingLR(head, self.cosine_over))
        return Optimization([body, head], [Scheduled(sched)])

    def _batches(self, data: LabelledImages, epoch: int, shuffle: bool):
        order = np.arange(len(data.ids))
        if shuffle:
            order = np.random.default_rng((self.seed, epoch)).permutation(order)
        for a in range(0, len(order), self.bs):
            idx = order[a:a + self.bs]
            x = to_tensor(np.stack([np.asarray(data.frames[i]) for i in idx]), "unit")
            yield x, torch.from_numpy(data.labels[idx])

    def train_loader(self, epoch, rank, world):
        return list(self._batches(self.train_data, epoch, True))

    def val_loader(self, epoch, rank, world):
        return list(self._batches(self.val_data, epoch, False))

    def loss(self, model, batch, gather):
        x, y = batch
        known = ~torch.isnan(y)
        logits = model(x)
        return {"loss": torch.nn.functional.binary_cross_entropy_with_logits(
            logits[known], y[known])}

    def validation_scores(self, model, device, epoch):
        from sklearn.metrics import roc_auc_score

        model.eval()
        with torch.no_grad():
            scores = torch.cat([model(x) for x, _ in self.val_loader(epoch, 0, 1)]).numpy()
        model.train()
        y = self.val_data.labels
        aucs = [roc_auc_score(y[:, j], scores[:, j]) for j in range(y.shape[1])
                if len(set(y[:, j])) == 2]
        return {"val_auroc": float(np.mean(aucs))}

    def export(self, path):
        save_weights(path, self.model.state_dict(), {"toy": True}, method="test-toy")


class ToyClassifier(Method):
    capabilities = Capabilities(classify=True, trainable=True)
    learning = SUPERVISED
    train_presets = ("tiny",)
    train_option_specs = {"head_lr": Option(0.05, "learning rate of the head", float),
                          "cosine": Option(False, "a cosine schedule over the run's epochs",
                                           bool)}

    @classmethod
    def train_task(cls, req: Any, data: TrainingData):
        epochs = req.epochs or 2
        task = ToyTask(data.labelled("train", RECIPE), data.labelled("val", RECIPE),
                       req.option("head_lr"), req.batch_size or 8, req.seed,
                       epochs if req.option("cosine") else None)
        return task, {"epochs": epochs}


METHODS.add("test-toy", ToyClassifier)


def _train(tmp_path, *args: str) -> Any:
    res = CliRunner().invoke(cli, ["train", "test-toy", *args, "--quiet"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


def test_two_optimizers_from_a_config_file_and_an_exact_resume(tmp_path):
    config = tmp_path / "toy.toml"
    config.write_text('dataset = "shapes"\npreset = "tiny"\nepochs = 3\nbatch_size = 8\n'
                      'device = "cpu"\n[dataset_options]\nn = 32\n[method_options]\n'
                      'head_lr = 0.2\n')
    whole = tmp_path / "whole"
    _train(tmp_path, "--config", str(config), "--out", str(whole))
    info = json.loads((whole / "train.json").read_text())
    assert info["request"]["epochs"] == 3 and info["request"]["dataset_options"] == {"n": 32}
    assert info["request"]["method_options"] == {"head_lr": 0.2, "cosine": False}
    hist = json.loads((whole / "history.json").read_text())
    assert [e["lrs"] for e in hist["epochs"]] == [[1e-2, 0.1], [1e-2, 0.05], [1e-2, 0.025]]
    assert [o.get("optimizer") or o.get("scheduler") for o in
            hist["config"]["optimization"]] == ["Adam", "SGD", "StepLR"]
    assert hist["config"]["selection"] == ["val_auroc", "max"]
    aucs = [e["val_auroc"] for e in hist["epochs"]]
    best_epoch = int(np.argmax(aucs))  # the first of equal maxima, as the loop keeps it
    assert [e["best"] for e in hist["epochs"]].index(True) == 0
    assert sum(e["best"] for e in hist["epochs"]) >= 1
    kept = [i for i, e in enumerate(hist["epochs"]) if e["best"]][-1]
    assert kept == best_epoch
    state = torch.load(whole / "last.pt", weights_only=True)
    assert len(state["optims"]) == 2 and len(state["scheds"]) == 1
    assert {"scaler", "cuda_rng", "python_rng", "numpy_rng", "torch_rng"} <= set(state)

    # the command line overrides the file; a run stopped after one epoch resumes to the
    # same weights, optimizer states and schedule as the uninterrupted one
    parts = tmp_path / "parts"
    _train(tmp_path, "--config", str(config), "--epochs", "1", "--out", str(parts))
    assert len(json.loads((parts / "history.json").read_text())["epochs"]) == 1
    res = _train(tmp_path, "--config", str(config), "--out", str(parts), "--resume")
    assert "resumed" in res.output
    a, b = load_file(whole / "last.safetensors"), load_file(parts / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    again = json.loads((parts / "history.json").read_text())
    assert [e["train_loss"] for e in again["epochs"]] == [e["train_loss"] for e in hist["epochs"]]


def test_a_run_resumes_with_more_epochs_only_when_its_schedule_does_not_depend_on_them(
        tmp_path):
    """StepLR resumes to more epochs (the test above); a cosine over --epochs would go on as
    the shorter run's cosine, which no fresh longer run does: refused, in one line."""
    out = tmp_path / "cos"
    base = ["--dataset", "shapes", "--preset", "tiny", "--dataset-arg", "n=16",
            "--method-arg", "cosine=true", "--device", "cpu", "--out", str(out)]
    _train(tmp_path, *base, "--epochs", "2")
    res = CliRunner().invoke(cli, ["train", "test-toy", *base, "--epochs", "3", "--resume",
                                   "--quiet"])
    assert res.exit_code == 1 and isinstance(res.exception, BenchError)
    assert str(res.exception) == (
        f"{out / 'last.pt'}: cannot resume: its CosineAnnealingLR has T_max=2, this run's "
        "has 3 (the schedule depends on the run's length or settings); resume with the same "
        "--epochs and preset, or train into a fresh folder")
    again = _train(tmp_path, *base, "--epochs", "2", "--resume")  # the same length: fine
    assert "resumed" in again.output


def test_the_schedule_check_compares_settings_not_progress():
    from bench.methods.medklip.train import OfficialFactor
    from bench.train.loop import check_same_schedule

    def opt():
        return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)

    def stepped(sched, n=3, metric=None):
        for _ in range(n):
            sched.optimizer.step()
            sched.step(*(() if metric is None else (metric,)))
        return sched.state_dict()

    lr = torch.optim.lr_scheduler
    cases = [lambda: lr.CosineAnnealingLR(opt(), 10), lambda: lr.StepLR(opt(), 1, 0.9),
             lambda: lr.LambdaLR(opt(), OfficialFactor(5, 10, 0.1)),
             lambda: lr.LambdaLR(opt(), lambda s: 1.0)]
    for make in cases:
        check_same_schedule(Path("x"), make(), stepped(make()))  # progress differs: fine
    plateau = lr.ReduceLROnPlateau(opt(), factor=0.5, patience=1)
    check_same_schedule(Path("x"), lr.ReduceLROnPlateau(opt(), factor=0.5, patience=1),
                        stepped(plateau, 4, metric=1.0))
    for fresh, saved in [(lr.CosineAnnealingLR(opt(), 20), lr.CosineAnnealingLR(opt(), 10)),
                         (lr.LambdaLR(opt(), OfficialFactor(5, 20, 0.1)),
                          lr.LambdaLR(opt(), OfficialFactor(5, 10, 0.1))),
                         (lr.ReduceLROnPlateau(opt(), patience=2),
                          lr.ReduceLROnPlateau(opt(), patience=5))]:
        with pytest.raises(BenchError, match="cannot resume"):
            check_same_schedule(Path("x"), fresh, saved.state_dict())


def test_a_yaml_request_and_the_method_options_as_flags(tmp_path):
    config = tmp_path / "toy.yaml"
    config.write_text("dataset: shapes\npreset: tiny\nepochs: 1\ndataset_options:\n  n: 16\n")
    out = tmp_path / "y"
    _train(tmp_path, "--config", str(config), "--head-lr", "0.3", "--out", str(out))
    info = json.loads((out / "train.json").read_text())
    assert info["request"]["method_options"] == {"head_lr": 0.3, "cosine": False}
    assert info["threads"]["intra_op"] == 2


@pytest.mark.parametrize("args, message", [
    (["--dataset", "shapes", "--preset", "tiny", "--method-arg", "head_rl=1"],
     "has no option 'head_rl'.*Did you mean 'head_lr'"),
    (["--dataset", "shapes", "--preset", "paper"], "no preset 'paper'"),
    (["--preset", "tiny"], "needs --dataset"),
])
def test_bad_requests_are_one_line_errors(tmp_path, args, message):
    res = CliRunner().invoke(cli, ["train", "test-toy", *args, "--out", str(tmp_path)])
    assert res.exit_code != 0 and isinstance(res.exception, UsageError)
    import re

    assert re.search(message, str(res.exception))


def test_a_config_for_another_method_or_with_unknown_fields_is_refused(tmp_path):
    bad = tmp_path / "a.toml"
    bad.write_text('method = "afloc"\ndataset = "shapes"\n')
    res = CliRunner().invoke(cli, ["train", "test-toy", "--config", str(bad)])
    assert "a request for 'afloc', not 'test-toy'" in str(res.exception)
    bad.write_text('dataset = "shapes"\nhead_lr = 0.1\n')
    res = CliRunner().invoke(cli, ["train", "test-toy", "--config", str(bad)])
    assert "unknown request field(s) head_lr" in str(res.exception)


def test_methods_that_cannot_train_say_so(tmp_path):
    res = CliRunner().invoke(cli, ["train", "center", "--dataset", "shapes"])
    assert "'center' is not trainable" in str(res.exception)


def test_the_data_kinds_from_one_preparation():
    from bench.datasets.shapes import Shapes

    ds = Shapes(split="train", n=12)
    prepared = prepare(ds, RECIPE, "all", progress=False)
    samples = [ds.load(i) for i in range(12)]
    assert prepared.frames.shape == (12, 32, 32)
    labelled = labelled_of(prepared, ("Nodule", "Opacity", "Missing"))
    want = np.array([[s.labels["Nodule"], s.labels["Opacity"], np.nan] for s in samples])
    np.testing.assert_array_equal(labelled.labels, want)
    normals = normals_of(prepared)
    assert normals.ids == [s.id for s in samples if not any(s.labels.values())]
    assert normals.skipped == {"not normal": 12 - len(normals)}
    np.testing.assert_array_equal(normals.frame(0),
                                  RECIPE.pixels(samples[int(normals.index[0])]))
    assert is_normal({"No Finding": 1, "Edema": 0}) and not is_normal({"No Finding": 0})
    assert is_normal({}) is None and is_normal({"Edema": 0, "Mass": 0})


def test_the_training_data_splits_and_a_dataset_without_reports():
    data = TrainingData("shapes", None, {"n": 4}, progress=False)
    assert data.splits == {"train": "train", "val": "val"}
    with pytest.raises(UsageError, match="image-text training needs paired reports"):
        data.pairs("train", RECIPE)


def test_training_threads_are_fixed_whatever_the_machine_default(tmp_path):
    """The same command trains the same model whatever torch's default thread count (the
    machine's cores): the losses of one and two default threads are identical."""
    from afloc_helpers import PairsDataset

    from bench.registry import DATASETS
    from bench.train.run import TrainRequest, run_training

    DATASETS.add("synthetic-test-pairs", PairsDataset)
    before = torch.get_num_threads()
    losses = {}
    try:
        for default in (1, 2):
            torch.set_num_threads(default)
            req = TrainRequest(method="afloc", dataset="synthetic-test-pairs", preset="tiny",
                               epochs=2, batch_size=8, max_steps=3, bn_recalibration=0,
                               out=str(tmp_path / f"t{default}"), progress=False,
                               method_options={"levels": "sentence,report"})
            hist = run_training(req, log=lambda *a, **k: None)["history"]
            losses[default] = [(e["train_loss"], e["val_loss"]) for e in hist["epochs"]]
            info = json.loads((tmp_path / f"t{default}" / "train.json").read_text())
            assert info["threads"] == {"intra_op": 2, "machine_default": default,
                                       "interop": torch.get_num_interop_threads()}
    finally:
        torch.set_num_threads(before)
    assert losses[1] == losses[2]


def test_early_stopping_after_patience_epochs_without_a_better_score(tmp_path):
    """Lightning's EarlyStopping (min_delta 0): stop once `patience` epochs in a row bring no
    better selection metric; the toy's validation AUROC is constant after its first epoch."""
    from bench.train.loop import TrainConfig, train

    class Flat(ToyTask):
        def validation_scores(self, model, device, epoch):
            return {"val_auroc": 0.7}

    from bench.train.data import TrainingData

    data = TrainingData("shapes", None, {"n": 16}, progress=False)
    task = Flat(data.labelled("train", RECIPE), data.labelled("val", RECIPE), 0.1, 8, 1)
    logs = []
    hist = train(task, TrainConfig(epochs=9, precision="fp32", device="cpu", out=str(tmp_path),
                                   progress=False, early_stopping_patience=2), log=logs.append)
    assert [e["best"] for e in hist["epochs"]] == [True, False, False]
    assert logs[-1] == "early stop: no better val_auroc in 2 epochs"


def test_gradient_accumulation_steps_on_the_sum_of_two_batches(tmp_path):
    """With `accumulate = 2` (RD++'s), the optimizer steps after every second batch on the sum
    of the two batches' gradients, and a trailing odd batch is dropped: plain SGD on a linear
    model makes the expected weights a hand computation."""
    from bench.train.loop import TrainConfig, train

    xs = [torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, -1.0]]), torch.tensor([[0.5, 0.5]])]

    class Acc(TrainTask):
        accumulate = 2
        selection = ("train_loss", "min")

        def __init__(self):
            self.model = torch.nn.Linear(2, 1, bias=False)
            torch.nn.init.zeros_(self.model.weight)

        def configure_optimizers(self):
            return Optimization([torch.optim.SGD(self.model.parameters(), lr=0.1)])

        def train_loader(self, epoch, rank, world):
            return xs

        def loss(self, model, batch, gather):
            return {"loss": model(batch).sum()}  # gradient w.r.t. the weight: the input

        def export(self, path):
            save_weights(path, self.model.state_dict(), {}, method="test-acc")

    task = Acc()
    train(task, TrainConfig(epochs=1, precision="fp32", device="cpu", out=str(tmp_path),
                            progress=False), log=lambda *_: None)
    want = -0.1 * (xs[0] + xs[1])  # one step on the summed gradient; the third batch dropped
    assert torch.allclose(task.model.weight.detach(), want)
