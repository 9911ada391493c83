"""`bench train classifier`: multi-label BCE with CheXpert's uncertainty policies.

Presets (`PRESETS`):

- ``paper``: CheXlocalize's classifiers as its README and the CheXpert paper train them:
  DenseNet-121 (``--arch resnet50`` / ``resnet152`` too) from ImageNet weights (the local
  torchvision cache; random init and a note in train.json when absent), 320 x 320 square
  resize, ImageNet normalisation, batch 16, Adam lr 1e-4 (betas 0.9 / 0.999), 3 epochs.
- ``tiny``: a tiny DenseNet (`model.TINY_DENSENET`, random init) at 224, batch 16, Adam lr 1e-3,
  10 epochs: minutes on a CPU.

Labels: the study-level labels the dataset adapter gives (MIMIC-CXR's CheXpert labels, the
synthetic world's, a labelled paired folder's), over the adapter's pathologies. Per label:

- definite 1 / 0: the target, weight 1;
- uncertain (-1): ``u-ones`` -> 1, ``u-zeros`` -> 0 (weight 1), ``ignore`` -> weight 0;
- blank (not mentioned): ``blank=zero`` (CheXpert's convention: unmentioned = negative) -> 0,
  ``blank=ignore`` -> weight 0.

The loss is the weighted mean of the element-wise BCE with logits over the weighted entries
(`policy_targets`, `masked_bce`). Images whose study has no label at all are skipped (counted).

Checkpoint selection: the mean validation AUROC over pathologies with both classes among the
validation images' definite labels (uncertain and blank labels left out), on the dataset's
validation split; without one, a seeded 10% of the training images is held out as validation
(recorded in train.json). Never the test split.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from bench.errors import UsageError
from bench.imaging.geometry import Frame
from bench.imaging.recipes import Recipe, to_tensor
from bench.train.data import LabelledImages, TrainingData, seeded_loader
from bench.train.loop import Optimization, TrainTask, seed_everything
from bench.train.run import preset_settings

from . import checkpoint as ck
from .model import Classifier, ClassifierConfig

POLICIES = ("u-ones", "u-zeros", "ignore")
BLANKS = ("zero", "ignore")
PRESETS = {
    "paper": {"epochs": 3, "batch_size": 16, "lr": 1e-4, "bn_recalibration": 0,
              "arch": "densenet121", "size": 320, "imagenet": True},
    "tiny": {"epochs": 10, "batch_size": 16, "lr": 1e-3, "bn_recalibration": 0,
             "arch": "densenet-tiny", "size": 224, "imagenet": False},
}
VAL_FRACTION = 0.1


def recipe_of(cfg: ClassifierConfig) -> Recipe:
    """What the classifier sees: cv2 grey, its frame (a square resize by default), its
    normalisation."""
    return Recipe("cv2-gray", Frame(cfg.frame, cfg.size), cfg.normalize)


def policy_targets(labels: np.ndarray, uncertain: np.ndarray | None, policy: str,
                   blank: str = "zero") -> tuple[np.ndarray, np.ndarray]:
    """(targets, weights) [N, P] float32 from labels (NaN = not given) and the uncertain mask."""
    if policy not in POLICIES:
        raise ValueError(f"uncertainty policy must be one of {POLICIES}")
    if blank not in BLANKS:
        raise ValueError(f"blank must be one of {BLANKS}")
    labels = np.asarray(labels, dtype=np.float32)
    unsure = np.zeros(labels.shape, bool) if uncertain is None else np.asarray(uncertain, bool)
    given = ~np.isnan(labels)
    unsure = unsure & ~given
    blank_mask = ~given & ~unsure
    target = np.where(given, labels, 0.0).astype(np.float32)
    weight = given.astype(np.float32)
    if policy == "u-ones":
        target[unsure], weight[unsure] = 1.0, 1.0
    elif policy == "u-zeros":
        target[unsure], weight[unsure] = 0.0, 1.0
    if blank == "zero":
        weight[blank_mask] = 1.0
    return target, weight


def masked_bce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean BCE-with-logits over the entries with weight > 0 (0 if there are none)."""
    per = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")
    return (per * weight).sum() / weight.sum().clamp(min=1.0)


class LabelSet(Dataset):
    """(frame uint8, target, weight) items of the images with at least one label."""

    def __init__(self, data: LabelledImages, index: np.ndarray, target: np.ndarray,
                 weight: np.ndarray):
        self.data, self.index, self.target, self.weight = data, index, target, weight

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        j = self.index[i]
        return np.asarray(self.data.frames[j]), self.target[j], self.weight[j]


class Collate:
    def __init__(self, normalize: str):
        self.normalize = normalize

    def __call__(self, items: list[tuple[np.ndarray, np.ndarray, np.ndarray]]):
        frames = np.stack([f for f, _, _ in items])
        return (to_tensor(frames, self.normalize),
                torch.from_numpy(np.stack([t for _, t, _ in items])),
                torch.from_numpy(np.stack([w for _, _, w in items])))


def labelled_index(data: LabelledImages) -> np.ndarray:
    """Images with at least one definite or uncertain label."""
    unsure = data.uncertain if data.uncertain is not None else np.zeros(data.labels.shape, bool)
    return np.flatnonzero((~np.isnan(data.labels) | unsure).any(1))


def definite_auroc(scores: np.ndarray, labels: np.ndarray) -> tuple[float, dict[str, int]]:
    """Mean AUROC over columns with both classes among the definite labels; (mean, counts)."""
    from sklearn.metrics import roc_auc_score

    aucs = []
    for j in range(labels.shape[1]):
        known = ~np.isnan(labels[:, j])
        y = labels[known, j]
        if len(np.unique(y)) == 2:
            aucs.append(roc_auc_score(y, scores[known, j]))
    return (float(np.mean(aucs)) if aucs else float("nan")), {"pathologies_scored": len(aucs)}


class ClassifierTask(TrainTask):
    selection = ("val_auroc", "max")

    def __init__(self, model: Classifier, train: LabelledImages, train_index: np.ndarray,
                 val: LabelledImages | None, val_index: np.ndarray | None, policy: str,
                 blank: str, batch_size: int, lr: float, seed: int, workers: int = 0,
                 info: dict[str, Any] | None = None):
        self.model = model
        self.policy, self.blank = policy, blank
        t, w = policy_targets(train.labels, train.uncertain, policy, blank)
        self.train_set = LabelSet(train, train_index, t, w)
        self.val_set = None
        if val is not None and val_index is not None and len(val_index):
            vt, vw = policy_targets(val.labels, val.uncertain, policy, blank)
            self.val_set = LabelSet(val, val_index, vt, vw)
            self.val_definite = val.labels[val_index]
        self.bs, self.lr, self.seed, self.workers = batch_size, lr, seed, workers
        self.collate = Collate(model.cfg.normalize)
        self.info = info or {}

    def configure_optimizers(self) -> Optimization:
        return Optimization([torch.optim.Adam(self.model.parameters(), lr=self.lr,
                                              betas=(0.9, 0.999))])

    def train_loader(self, epoch: int, rank: int, world: int) -> DataLoader:
        return seeded_loader(self.train_set, self.bs, shuffle=True, drop_last=False,
                             epoch=epoch, seed=self.seed, rank=rank, world=world,
                             workers=self.workers, collate_fn=self.collate)

    def val_loader(self, epoch: int, rank: int, world: int) -> Any:
        if self.val_set is None:
            return []
        return seeded_loader(self.val_set, self.bs, shuffle=False, drop_last=False, epoch=0,
                             seed=self.seed, rank=rank, world=world, workers=self.workers,
                             collate_fn=self.collate)

    def loss(self, model: torch.nn.Module, batch: Any, gather: Any) -> dict[str, torch.Tensor]:
        x, target, weight = batch
        return {"loss": masked_bce(model(x), target, weight)}

    @torch.no_grad()
    def validation_scores(self, model: torch.nn.Module, device: torch.device,
                          epoch: int) -> dict[str, float]:
        if self.val_set is None:
            return {"val_auroc": float("nan")}
        was = model.training
        model.eval()
        scores = [model(x.to(device)).float().cpu() for x, _, _ in self.val_loader(epoch, 0, 1)]
        model.train(was)
        auc, _ = definite_auroc(torch.cat(scores).numpy(), self.val_definite)
        return {"val_auroc": auc}

    def export(self, path: Path) -> None:
        ck.save_weights(path, self.model)

    def describe(self) -> dict[str, Any]:
        return self.info

    def data_line(self, seconds: float) -> str:
        n_val = len(self.val_set) if self.val_set is not None else 0
        return (f"labelled images: train {len(self.train_set)}, validation {n_val} "
                f"({self.info.get('val_source')}); {len(self.model.cfg.pathologies)} "
                f"pathologies; uncertainty {self.policy}, blank {self.blank}; prepared in "
                f"{seconds:.1f} s")


def make_task(req: Any, data: TrainingData) -> tuple[ClassifierTask, dict[str, Any]]:
    preset = PRESETS[req.preset]
    arch = req.option("arch") or preset["arch"]
    size = int(req.option("size") or preset["size"])
    imagenet = preset["imagenet"] if req.option("imagenet") is None else req.option("imagenet")
    names = tuple(data.dataset_class.pathologies)
    if req.option("pathologies"):
        names = tuple(req.option("pathologies"))
    cfg = ClassifierConfig(arch=arch, pathologies=list(names), size=size, imagenet_weights=imagenet,
                           uncertainty=req.option("uncertainty"), preset=req.preset)
    recipe = recipe_of(cfg)
    train = data.labelled("train", recipe, names)
    train_index = labelled_index(train)
    skipped = Counter(train.skipped)
    skipped["no label"] += int(len(train.ids) - len(train_index))
    if len(train_index) == 0:
        raise UsageError(f"no labelled training images in {data.dataset_name}: "
                         f"bench train classifier needs image-level labels")
    val = data.labelled("val", recipe, names)
    if val is not None and len(labelled_index(val)):
        val_index, val_source = labelled_index(val), f"split {data.split('val')}"
    else:  # no validation split: a seeded tenth of the training images
        rng = np.random.default_rng(req.seed)
        order = rng.permutation(train_index)
        n_val = max(1, int(round(VAL_FRACTION * len(order))))
        val, val_index = train, np.sort(order[:n_val])
        train_index = np.sort(order[n_val:])
        val_source = f"{VAL_FRACTION:.0%} of the training images held out (seed {req.seed})"
    seed_everything(req.seed)
    model = Classifier(cfg)
    settings = {**preset_settings(req, preset), "arch": arch, "size": size,
                "imagenet": bool(imagenet), "uncertainty": cfg.uncertainty,
                "blank": req.option("blank"), "optimizer": "Adam (0.9, 0.999)",
                "selection": "validation mean AUROC (definite labels)"}
    unsure = train.uncertain[train_index].sum(0) if train.uncertain is not None else None
    info = {"model": cfg.to_json(), "image_weights": model.weights_note,
            "frame": recipe.describe(), "val_source": val_source,
            "images": {"train": int(len(train_index)), "val": int(len(val_index)),
                       "skipped": dict(skipped)},
            "uncertain_labels": ({n: int(c) for n, c in zip(names, unsure)}
                                 if unsure is not None else None)}
    task = ClassifierTask(model, train, train_index, val, val_index, cfg.uncertainty,
                          req.option("blank"), settings["batch_size"], settings["lr"],
                          req.seed, req.workers, info)
    return task, settings
