"""`bench train chexzero`: CheXzero's presets and the task the shared loop runs.

``paper``: CheXzero's ``run_train.py`` (its defaults, the README's command): the model starts
from OpenAI's CLIP ViT-B/32 (``clip.load("ViT-B/32")``; here a local state dict passed as
``--init``), SGD with lr 1e-4 and momentum 0.9 (``--optimizer adam`` chooses AdamW, default
weight decay), batch 16, 4 epochs, context length 77, no scheduler, no clipping, no augmentation,
loss = CLIP's (`model.clip_loss`). The released files' names (``best_64_5e-05_...``,
``best_128_0.0002_...``) say batch 64 / lr 5e-5 and batch 128 / lr 2e-4 were used for them:
pass ``--batch-size 64 --lr 5e-5`` for the first.
``tiny``: from scratch, a small open_clip CLIP (`model.TINY`) on the synthetic pairs, batch 16,
10 epochs (AFLoc's and ConVIRT's tiny budget), and OpenAI CLIP's own from-scratch optimiser
(``clip``: AdamW, lr 5e-4, betas (0.9, 0.98), eps 1e-6, weight decay 0.2, linear warm-up over
the first 50 steps). A random ViT's class tokens start almost equal for every radiograph (mean
cosine ~0.98 on the synthetic images): with SGD at CheXzero's fine-tuning rate, or plain AdamW
at 1e-4 to 1e-3, the loss stayed at ln(16) for 400 steps; with CLIP's settings it fell from
2.77 to 2.47 in 300 steps (measured on the synthetic pairs, seed 1).

Pairs: frontal images (shared preparation, MS-CXR held out on MIMIC-CXR) and the report's
IMPRESSION section (CheXzero trains on ``mimic_impressions.csv``), its words joined by single
spaces; an empty impression is " " (``train.py``'s NaN case). A report without an IMPRESSION
section is, with ``missing_impression=official``, the text "NO IMPRESSION" that
``data_process.py`` writes for it; ``report`` uses the whole report, ``skip`` drops the pair
(counted). Images: the 320 pre-frame of the evaluation recipe, normalised and resized to 224
(bicubic, antialias=False) per batch, for training and validation alike (no augmentation, as
officially).

Deviations: CheXzero's GPU training ran the fp16 weights ``clip.load`` gives on CUDA (SGD on
fp16 parameters); the harness trains fp32 weights (autocast if asked). CheXzero kept checkpoints
every 100 steps and picked its "best" by zero-shot AUROC on CheXpert's validation set, outside
the released code; the harness's loop picks by validation loss.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from bench.errors import UsageError
from bench.methods._shared import checkpoints as shared_ck
from bench.train.data import ImagePairs, TrainingData, seeded_loader
from bench.train.loop import Optimization, Scheduled, TrainTask, seed_everything
from bench.train.run import preset_settings

from . import checkpoint as ck
from .imaging import EVAL
from .model import CONTEXT_LENGTH, OFFICIAL_ARCH, arch_of, build, clip_loss, tokenizer

PRESETS = {"paper": {"epochs": 4, "batch_size": 16, "lr": 1e-4, "bn_recalibration": 0},
           "tiny": {"epochs": 10, "batch_size": 16, "lr": 5e-4, "bn_recalibration": 0}}
OPTIMIZER = {"paper": "sgd", "tiny": "clip"}
OPTIMIZERS = ("sgd", "adamw", "clip")
# OpenAI CLIP's AdamW (Radford et al. 2021, table 19) and the tiny preset's warm-up
CLIP_ADAMW = {"betas": (0.9, 0.98), "eps": 1e-6, "weight_decay": 0.2}
WARMUP_STEPS = 50
NO_IMPRESSION = "NO IMPRESSION"  # data_process.write_report_csv's text for such a report


@dataclass
class ImpressionPairs:
    """Pairs as CheXzero trains on them: frames (positions `index` of `frames`), texts."""

    frames: np.ndarray
    index: np.ndarray
    texts: list[str]
    ids: list[str]
    skipped: dict[str, int]
    sources: dict[str, int]  # how many texts came from the impression, "NO IMPRESSION", report

    def frame(self, i: int) -> np.ndarray:
        return np.asarray(self.frames[self.index[i]])

    def __len__(self) -> int:
        return len(self.texts)


def impression_text(sections: dict[str, str] | None, report: str | None,
                    missing_impression: str = "official") -> tuple[str | None, str]:
    """(text, source) of one pair; text None: skip it."""
    imp = (sections or {}).get("impression")
    if imp is not None:
        return " ".join(imp.split()) or " ", "impression"
    if missing_impression == "official":
        return NO_IMPRESSION, "no impression: 'NO IMPRESSION'"
    if missing_impression == "report" and report and report.strip():
        return " ".join(report.split()), "no impression: the report"
    return None, "no impression"


def impression_pairs(pairs: ImagePairs, missing_impression: str) -> ImpressionPairs:
    skipped, sources = Counter(pairs.skipped), Counter()
    keep, texts = [], []
    for i, report in enumerate(pairs.reports):
        sec = pairs.sections[i] if pairs.sections else None
        text, source = impression_text(sec, report, missing_impression)
        if text is None:
            skipped[source] += 1
            continue
        sources[source] += 1
        keep.append(i)
        texts.append(text)
    return ImpressionPairs(pairs.frames, np.asarray(keep, dtype=np.int64), texts,
                           [pairs.ids[i] for i in keep], dict(skipped), dict(sources))


class PairDataset(Dataset):
    def __init__(self, pairs: ImpressionPairs):
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[np.ndarray, str]:
        return self.pairs.frame(i), self.pairs.texts[i]


class Collate:
    """uint8 320 frames -> normalised 224 tensors (the recipe's `finish`); texts -> BPE ids."""

    def __init__(self, tok: Any):
        self.tok = tok

    def __call__(self, items: list[tuple[np.ndarray, str]]) -> tuple[torch.Tensor, torch.Tensor]:
        frames = np.stack([f for f, _ in items])
        return EVAL.finish(frames), self.tok([t for _, t in items])


class CheXzeroTask(TrainTask):
    """CheXzero's optimisation (SGD with momentum, or AdamW; no schedule) and CLIP's loss."""

    def __init__(self, model: torch.nn.Module, config: dict[str, Any], train: ImpressionPairs,
                 val: ImpressionPairs | None, batch_size: int, lr: float, optimizer: str,
                 momentum: float, seed: int = 1, num_workers: int = 0,
                 info: dict[str, Any] | None = None):
        self.model, self.config = model, config
        self.tok = tokenizer(CONTEXT_LENGTH)
        self.train_set = PairDataset(train)
        self.val_set = PairDataset(val) if val is not None and len(val) >= 2 else None
        self.bs, self.lr, self.optimizer, self.momentum = batch_size, lr, optimizer, momentum
        self.seed, self.workers, self.info = seed, num_workers, info or {}

    def configure_optimizers(self) -> Optimization:
        params = self.model.parameters()
        if self.optimizer == "sgd":  # run_train.py's default
            return Optimization([torch.optim.SGD(params, lr=self.lr, momentum=self.momentum)])
        if self.optimizer == "adamw":  # run_train.py --optimizer adam: AdamW's defaults
            return Optimization([torch.optim.AdamW(params, lr=self.lr)])
        optim = torch.optim.AdamW(params, lr=self.lr, **CLIP_ADAMW)
        warmup = torch.optim.lr_scheduler.LambdaLR(optim, _Warmup(WARMUP_STEPS))
        return Optimization([optim], [Scheduled(warmup, "step")])

    def _loader(self, ds: Any, shuffle: bool, epoch: int, rank: int, world: int,
                drop_last: bool) -> DataLoader:
        return seeded_loader(ds, self.bs, shuffle=shuffle, drop_last=drop_last, epoch=epoch,
                             seed=self.seed, rank=rank, world=world, workers=self.workers,
                             collate_fn=Collate(self.tok))

    def train_loader(self, epoch: int, rank: int, world: int) -> DataLoader:
        return self._loader(self.train_set, True, epoch, rank, world, drop_last=True)

    def val_loader(self, epoch: int, rank: int, world: int) -> Any:
        if self.val_set is None:
            return []
        return self._loader(self.val_set, False, 0, rank, world,
                            drop_last=len(self.val_set) >= self.bs * world)

    def loss(self, model: torch.nn.Module, batch: Any, gather: Any) -> dict[str, torch.Tensor]:
        images, tokens = batch
        image, text, scale = model(images, tokens)  # open_clip: (img, txt, exp(logit_scale))
        return clip_loss(image, text, scale, gather)

    def export(self, path: Path) -> None:
        ck.save_weights(path, self.model.state_dict(), self.config)

    def describe(self) -> dict[str, Any]:
        return self.info

    def data_line(self, seconds: float) -> str:
        n_val = len(self.val_set) if self.val_set is not None else 0
        return (f"pairs: train {len(self.train_set)}, val {n_val}; texts "
                f"{self.info.get('pairs', {}).get('texts')}; skipped "
                f"{self.info.get('pairs', {}).get('skipped')}; prepared in {seconds:.1f} s")


class _Warmup:
    """lr factor min(1, (step + 1) / steps): a linear warm-up (picklable, for --resume)."""

    def __init__(self, steps: int):
        self.steps = steps

    def __call__(self, step: int) -> float:
        return min(1.0, (step + 1) / self.steps)


def initial_model(preset: str, init: str | None) -> tuple[torch.nn.Module, str]:
    """(model, where its weights come from) of a preset."""
    if preset == "tiny":
        return build(arch_of("tiny")), "random (from scratch)"
    if not init:
        raise UsageError("the paper preset starts from OpenAI's CLIP ViT-B/32, as CheXzero's "
                         "clip.load('ViT-B/32'): pass --init PATH (its state dict, .pt or "
                         ".safetensors)")
    model = build(OFFICIAL_ARCH)
    shared_ck.load_into(model, ck.read_official(init), str(init), strict=True)
    return model, f"OpenAI CLIP ViT-B/32 from {init}"


def make_task(req: Any, data: TrainingData) -> tuple[CheXzeroTask, dict[str, Any]]:
    missing_impression = req.option("missing_impression")
    train_pairs = impression_pairs(data.pairs("train", EVAL), missing_impression)
    val_raw = data.pairs("val", EVAL)
    val_pairs = impression_pairs(val_raw, missing_impression) if val_raw is not None else None
    if len(train_pairs) == 0:
        raise UsageError(f"no usable training pairs in {req.root} ({train_pairs.skipped})")

    seed_everything(req.seed)
    model, weights = initial_model(req.preset, req.option("init"))
    arch = arch_of(req.preset)
    config = {"arch": arch, "preset": req.preset, "context_length": CONTEXT_LENGTH,
              "tokenizer": "OpenAI CLIP BPE (open_clip SimpleTokenizer)"}
    optimizer = req.option("optimizer") or OPTIMIZER[req.preset]
    settings = {**preset_settings(req, PRESETS[req.preset]), "optimizer": optimizer,
                "missing_impression": missing_impression,
                "loss": "CLIP (learnt logit_scale, unclamped)"}
    if optimizer == "sgd":
        settings["momentum"] = float(req.option("momentum"))
    if optimizer == "clip":
        settings["adamw"] = {**CLIP_ADAMW, "warmup_steps": WARMUP_STEPS}
    info = {"model": config, "init": weights, "val_split": data.split("val"),
            "frame": EVAL.describe(),
            "text": "IMPRESSION (words joined by one space; empty: ' '); without one: "
                    + missing_impression,
            "pairs": {"train": len(train_pairs), "val": len(val_pairs) if val_pairs else 0,
                      "skipped": train_pairs.skipped, "texts": train_pairs.sources}}
    task = CheXzeroTask(model, config, train_pairs, val_pairs, settings["batch_size"],
                        settings["lr"], optimizer, float(req.option("momentum")), seed=req.seed,
                        num_workers=req.workers, info=info)
    return task, settings
