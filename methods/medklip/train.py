"""`bench train medklip`: MedKLIP's presets and the task the shared loop runs.

``paper``: the official ``Pretrain_MedKLIP.yaml``: AdamW (lr 1e-4, weight decay 0.02), batch
48, 100 epochs, timm's cosine schedule (min lr 1e-5) with a 5-step warm-up from 1e-5 taken
every 100 iterations of the first epoch, and from the second epoch on the schedule read at
``epoch + 5`` (the official ``lr_scheduler.step(epoch + warmup_steps)``); books through the
frozen Bio_ClinicalBERT at 128 tokens (the training script's ``get_tokenizer``; inference uses
64); the official descriptions when ``descriptions=PATH`` is given, else the harness's own.
``tiny``: `presets` (AFLoc/ConVIRT tiny encoders), batch 16, lr 1e-3, 10 epochs, AdamW with the
official weight decay, a plain per-epoch cosine to lr/10 without warm-up (the official warm-up
counts 100-iteration blocks, longer than a tiny epoch), precise BatchNorm over 32 batches after
each epoch (as the other tiny presets).

Loss: `model.medklip_loss` (existence cross-entropy + position contrastive through ``cl_fc``),
the official ``no_cl=False, exclude_class=False``. The query and position books are the frozen
text encoder's ``[CLS]`` of the descriptions and of "It is located at <anatomy>"; the text
encoder is not trained (the official computes both books once, under ``no_grad``).

Targets: `triplets`: the official triplet files (``triplets=TRAIN.json,VAL.json,LABELS.npy``),
matched to the prepared pairs by file stem, or the synthetic world's, read from its reports.
Images: the 256 x 256 pre-frame, a random resized crop to 224 and a horizontal flip per item
(RandAugment left out), from a generator seeded by (seed, epoch, index); validation images at
the evaluation frame, validated with the training loss as the official ``valid`` does.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from bench.errors import UsageError
from bench.imaging.recipes import to_tensor
from bench.methods._shared.encoders import (
    build_wordpiece,
    load_pretrained_text,
    refuse_text_encoder_at_tiny,
    tokenizer_to_json,
)
from bench.train.data import SplitLoaders, TrainingData
from bench.train.loop import Optimization, Scheduled, TrainTask, seed_everything
from bench.train.run import preset_settings

from . import checkpoint as ck
from . import presets, queries, triplets
from .imaging import EVAL, TRAIN_PREFRAME, random_resized_crop
from .model import MedKLIPModel, medklip_loss

PRESETS = {"paper": {"epochs": 100, "batch_size": 48, "lr": 1e-4, "bn_recalibration": 0},
           "tiny": {"epochs": 10, "batch_size": 16, "lr": 1e-3, "bn_recalibration": 32}}
WEIGHT_DECAY = 0.02
SCHEDULE = {"warmup_lr": 1e-5, "min_lr": 1e-5, "warmup_epochs": 5, "step_size": 100}
TRAIN_MAX_LENGTH = 128


@dataclass
class TripletPairs:
    frames: np.ndarray
    index: np.ndarray  # positions in `frames`
    matrices: list[np.ndarray]  # [51, 75] per item
    ids: list[str]
    skipped: dict[str, int]

    def __len__(self) -> int:
        return len(self.ids)


def synthetic_pairs(p: Any) -> TripletPairs:
    """Triplets of a prepared synthetic set, from its labels and reports."""
    keep, mats, ids = [], [], []
    skipped = Counter(p.skipped)
    for i, (labels, report) in enumerate(zip(p.labels, p.reports)):
        m = triplets.synthetic_matrix(labels or {}, report)
        if not (m >= 0).any():
            skipped["no triplet"] += 1
            continue
        keep.append(i)
        mats.append(m)
        ids.append(p.ids[i])
    return TripletPairs(p.frames, np.asarray(keep, dtype=np.int64), mats, ids, dict(skipped))


def official_pairs(p: Any, json_path: str, npy_path: str) -> TripletPairs:
    """Triplets of the official files for the prepared images (matched by file stem)."""
    rows, labels = triplets.read_official(json_path, npy_path)
    keep, mats, ids = [], [], []
    skipped = Counter(p.skipped)
    for i, sid in enumerate(p.ids):
        stem = Path(str(sid)).name.split(".")[0]
        if stem not in rows:
            skipped["not in the triplet file"] += 1
            continue
        keep.append(i)
        mats.append(np.asarray(labels[rows[stem]]))
        ids.append(sid)
    return TripletPairs(p.frames, np.asarray(keep, dtype=np.int64), mats, ids, dict(skipped))


class TripletDataset(Dataset):
    def __init__(self, pairs: TripletPairs, augment: bool, flip: bool = True, seed: int = 1):
        self.pairs, self.augment, self.flip, self.seed, self.epoch = pairs, augment, flip, seed, 0

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng((self.seed, self.epoch, i))
        frame = np.asarray(self.pairs.frames[self.pairs.index[i]])
        if self.augment:
            frame = random_resized_crop(frame, rng, flip=self.flip)
        exist, index = triplets.sample_triplets(self.pairs.matrices[i], rng)
        return frame, exist, index


def collate(items: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, ...]:
    frames = np.stack([f for f, _, _ in items])
    return (to_tensor(frames, "imagenet"), torch.from_numpy(np.stack([e for _, e, _ in items])),
            torch.from_numpy(np.stack([x for _, _, x in items])))


class Trainable(nn.Module):
    """The model and its two frozen books (buffers, not saved with the weights)."""

    def __init__(self, model: MedKLIPModel, book: torch.Tensor, position_book: torch.Tensor):
        super().__init__()
        self.medklip = model
        self.register_buffer("book", book.float(), persistent=False)
        self.register_buffer("position_book", position_book.float(), persistent=False)

    def forward(self, images: torch.Tensor, labels: torch.Tensor,
                index: torch.Tensor) -> dict[str, torch.Tensor]:
        out, _ = self.medklip.decode(self.medklip.patches(images), self.book, need_weights=False)
        return medklip_loss(self.medklip, out, labels, index, self.position_book)


class OfficialFactor:
    """`official_lr_factor` as an object: LambdaLR saves its attributes, so a resumed run can
    tell that its schedule (the cosine over `epochs`) is the one it was trained with."""

    def __init__(self, steps_per_epoch: int, epochs: int, lr: float):
        self.steps_per_epoch, self.epochs, self.lr = steps_per_epoch, epochs, lr

    def __call__(self, step: int) -> float:
        return official_lr_factor(step, self.steps_per_epoch, self.epochs, self.lr)


def official_lr_factor(step: int, steps_per_epoch: int, epochs: int, lr: float) -> float:
    """The official schedule's lr / lr at global `step` (timm cosine, ``t_initial=epochs``,
    warm-up from ``warmup_lr`` in 100-iteration blocks of the first epoch, then ``epoch+5``)."""
    s = SCHEDULE
    epoch, i = divmod(step, max(steps_per_epoch, 1))
    if epoch == 0 and i <= s["warmup_epochs"] * s["step_size"]:
        t = i // s["step_size"]
    else:
        t = epoch + s["warmup_epochs"] if epoch > 0 else s["warmup_epochs"]
    if t < s["warmup_epochs"]:
        value = s["warmup_lr"] + t * (lr - s["warmup_lr"]) / s["warmup_epochs"]
    elif t < epochs:
        value = s["min_lr"] + 0.5 * (lr - s["min_lr"]) * (1 + math.cos(math.pi * t / epochs))
    else:
        value = s["min_lr"]
    return value / lr


class MedKLIPTask(SplitLoaders, TrainTask):
    def __init__(self, model: MedKLIPModel, tokenizer: Any, text_model: Any | None,
                 book: torch.Tensor, position_book: torch.Tensor, train: TripletPairs,
                 val: TripletPairs | None, settings: dict[str, Any], seed: int = 1,
                 num_workers: int = 0, info: dict[str, Any] | None = None):
        self.core, self.tokenizer, self.text_model = model, tokenizer, text_model
        self.book = book
        self.model = Trainable(model, book, position_book)
        self.train_set = TripletDataset(train, augment=True, flip=settings["hflip"], seed=seed)
        self.val_set = TripletDataset(val, augment=False, seed=seed) if val is not None and \
            len(val) else None
        self.settings, self.seed, self.workers = settings, seed, num_workers
        self.bs, self.lr = settings["batch_size"], settings["lr"]
        self.info = info or {}

    def configure_optimizers(self) -> Optimization:
        optim = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=WEIGHT_DECAY)
        epochs = int(self.settings["epochs"])
        if self.core.cfg.preset == "tiny":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=max(epochs, 1),
                                                               eta_min=self.lr / 10)
            return Optimization([optim], [Scheduled(sched, "epoch")])
        per_epoch = max(len(self.train_set) // self.bs, 1)
        sched = torch.optim.lr_scheduler.LambdaLR(
            optim, OfficialFactor(per_epoch, epochs, self.lr))
        return Optimization([optim], [Scheduled(sched, "step")])

    def collate_fn(self) -> Any:
        return collate

    def loss(self, model: torch.nn.Module, batch: Any, gather: Any) -> dict[str, torch.Tensor]:
        images, labels, index = batch
        return model(images, labels, index)

    def export(self, path: Path) -> None:
        cfg = self.core.cfg
        text_state = self.text_model.state_dict() if cfg.preset == "tiny" else None
        ck.save_weights(path, self.core.state_dict(), self.book, text_state, cfg.to_json(),
                        tokenizer_to_json(self.tokenizer) if cfg.preset == "tiny" else None)

    def describe(self) -> dict[str, Any]:
        return self.info

    def data_line(self, seconds: float) -> str:
        n_val = len(self.val_set) if self.val_set is not None else 0
        return (f"triplet pairs: train {len(self.train_set)}"
                f"{f', val {n_val}' if n_val else ''}; skipped "
                f"{self.info.get('pairs', {}).get('skipped')}; prepared in {seconds:.1f} s")


def _pairs(data: TrainingData, which: str, recipe: Any, files: list[str] | None
           ) -> TripletPairs | None:
    prepared = data.prepared(which, recipe, "frontal")  # the pairs with their labels
    if prepared is None:
        return None
    if files is None:
        return synthetic_pairs(prepared)
    return official_pairs(prepared, files[0] if which == "train" else files[1], files[2])


def make_task(req: Any, data: TrainingData) -> tuple[MedKLIPTask, dict[str, Any]]:
    refuse_text_encoder_at_tiny(req, "medklip")
    spec = req.option("triplets")
    files = [s.strip() for s in str(spec).split(",")] if spec else None
    if files is not None and len(files) != 3:
        raise UsageError("triplets must be 'TRAIN.json,VAL.json,LABELS.npy' (the official "
                         "rad_graph_metric_*.json files and landmark_observation_adj_mtx.npy)")
    train = _pairs(data, "train", TRAIN_PREFRAME, files)
    val = _pairs(data, "val", EVAL, files)
    if train is None or len(train) == 0:
        raise UsageError(f"no training pairs with triplets in {req.root} "
                         f"({train.skipped if train else 'no train split'})")
    seed_everything(req.seed)
    cfg = presets.preset_config(req.preset)
    desc_path = req.option("descriptions")
    texts = (queries.load_descriptions(desc_path) if desc_path else
             queries.synthetic_descriptions())
    cfg.descriptions = "official" if desc_path else "synthetic"
    if req.preset == "tiny":
        from transformers import BertConfig, BertModel

        corpus = [r for r in data.prepared("train", TRAIN_PREFRAME, "frontal").reports if r]
        tokenizer = build_wordpiece(corpus + texts + queries.position_texts(),
                                    vocab_size=req.option("vocab_size"))
        cfg.text_config["vocab_size"] = int(tokenizer.vocab_size)
        text_model = BertModel(BertConfig.from_dict(dict(cfg.text_config)),
                               add_pooling_layer=False).eval()
    else:
        source = req.option("text_encoder") or presets.DEFAULT_TEXT_ENCODER
        text_model, tokenizer = load_pretrained_text(source)
        cfg.text_encoder, cfg.text_dim = source, int(text_model.config.hidden_size)
    book = queries.embed_texts(text_model, tokenizer, texts, TRAIN_MAX_LENGTH)
    position_book = queries.embed_texts(text_model, tokenizer, queries.position_texts(),
                                        TRAIN_MAX_LENGTH)
    model = MedKLIPModel(cfg)
    settings = {**preset_settings(req, PRESETS[req.preset]), "hflip": bool(req.option("hflip")),
                "optimizer": {"AdamW": {"weight_decay": WEIGHT_DECAY}},
                "schedule": ("cosine per epoch to lr/10" if req.preset == "tiny" else
                             {"official cosine": SCHEDULE}),
                "loss": "existence CE + position contrastive (official)"}
    info = {"model": cfg.to_json(), "val_split": data.split("val"),
            "pre_frame": TRAIN_PREFRAME.describe(), "val_frame": EVAL.describe(),
            "triplets": files or "synthetic reports",
            "descriptions": desc_path or "synthetic",
            "pairs": {"train": len(train), "val": len(val) if val else 0,
                      "skipped": train.skipped}}
    task = MedKLIPTask(model, tokenizer, text_model, book, position_book, train, val, settings,
                       seed=req.seed, num_workers=req.workers, info=info)
    return task, settings
