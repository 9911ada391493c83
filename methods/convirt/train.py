"""`bench train convirt`: ConVIRT's presets and the task the shared loop runs.

``paper``: ViLMedic's ``config/SELFSUP/convirt-mimic.yml``: RAdam, lr 5e-5, batch 32,
ReduceLROnPlateau on the validation loss (factor 0.5, patience 5, threshold 0.01 absolute,
min lr 1e-6), up to 99 epochs with an early stop after 20 without a lower validation loss, no
gradient clipping, ResNet-50 (ImageNet) and ``allenai/biomed_roberta_base`` (offline). (That
is the config since 2022; the one of the zoo entry's day, 2021-12-27, said batch 64, patience
1, early stop 10, no text processing.)
``tiny``: AFLoc tiny's encoders and budget (`presets`): batch 16, lr 1e-3, 10 epochs, precise
BatchNorm over 32 batches after each epoch (as AFLoc tiny, for the same reason: from-scratch
BatchNorm averages lag the fast-moving weights), ConVIRT's optimiser, schedule and loss.

Pairs: frontal images (shared preparation, MS-CXR held out on MIMIC-CXR); the caption is the
report's IMPRESSION then FINDINGS, cleaned (`text`); studies left without text are counted as
"no report text". Training images: the 256 pre-frame (Resize(256) + CenterCrop(256)), a random
224 crop and a horizontal flip per item, drawn from a generator seeded by (seed, epoch, index),
so runs repeat exactly whatever the worker layout. Validation images: the evaluation frame
(Resize((224, 224))), as ViLMedic validates.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from bench.errors import UsageError
from bench.imaging.recipes import to_tensor
from bench.methods._shared.encoders import (
    build_wordpiece,
    load_pretrained_text,
    refuse_text_encoder_at_tiny,
    tokenizer_to_json,
)
from bench.train.data import ImagePairs, SplitLoaders, TrainingData
from bench.train.loop import Optimization, Scheduled, TrainTask, seed_everything
from bench.train.run import preset_settings

from . import checkpoint as ck
from . import presets
from .imaging import EVAL, TRAIN_PREFRAME, random_crop_flip
from .model import ConVIRTModel
from .text import TextBatch, Tokenize, clean_text, report_caption

PRESETS = {"paper": {"epochs": 99, "batch_size": 32, "lr": 5e-5, "bn_recalibration": 0,
                     "early_stopping": 20},
           "tiny": {"epochs": 10, "batch_size": 16, "lr": 1e-3, "bn_recalibration": 32,
                    "early_stopping": None}}
# ViLMedic's lr_decay_params
PLATEAU = {"factor": 0.5, "patience": 5, "threshold": 0.01, "threshold_mode": "abs",
           "min_lr": 1e-6}


@dataclass
class CaptionPairs:
    """Pairs as ConVIRT trains on them: frames (positions `index` of `frames`), cleaned captions."""

    frames: np.ndarray
    index: np.ndarray
    captions: list[str]
    ids: list[str]
    skipped: dict[str, int]
    from_sections: int = 0  # captions made from IMPRESSION / FINDINGS (the rest: the report)

    def frame(self, i: int) -> np.ndarray:
        return np.asarray(self.frames[self.index[i]])

    def __len__(self) -> int:
        return len(self.captions)


def caption_pairs(pairs: ImagePairs, text_clean: str) -> CaptionPairs:
    """ViLMedic's caption of each pair, cleaned; pairs left without text are skipped."""
    skipped = Counter(pairs.skipped)
    keep, captions, n_sections = [], [], 0
    for i, report in enumerate(pairs.reports):
        sec = (pairs.sections[i] if pairs.sections else None) or {}
        caption = report_caption(sec.get("findings"), sec.get("impression"), report)
        text = clean_text(caption, text_clean) if caption else ""
        if not text:
            skipped["no report text"] += 1
            continue
        n_sections += bool(sec)
        keep.append(i)
        captions.append(text)
    return CaptionPairs(pairs.frames, np.asarray(keep, dtype=np.int64), captions,
                        [pairs.ids[i] for i in keep], dict(skipped), n_sections)


class PairDataset(Dataset):
    """(image, caption) items; training items are randomly cropped (and flipped)."""

    def __init__(self, pairs: CaptionPairs, augment: bool, flip: bool = True, seed: int = 1):
        self.pairs, self.augment, self.flip, self.seed, self.epoch = pairs, augment, flip, seed, 0

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[np.ndarray, str]:
        frame = self.pairs.frame(i)
        if self.augment:
            rng = np.random.default_rng((self.seed, self.epoch, i))
            frame = random_crop_flip(frame, rng, flip=self.flip)
        return frame, self.pairs.captions[i]


class Collate:
    """Stacks and normalises images, tokenises the (already cleaned) captions."""

    def __init__(self, tokenize: Tokenize):
        self.tokenize = tokenize

    def __call__(self, items: list[tuple[np.ndarray, str]]) -> tuple[torch.Tensor, TextBatch]:
        frames = np.stack([f for f, _ in items])
        return to_tensor(frames, "imagenet"), self.tokenize([c for _, c in items], cleaned=True)


class ConVIRTTask(SplitLoaders, TrainTask):
    """What the shared loop needs to train ConVIRT: ViLMedic's optimisation (RAdam, plateau
    decay on the validation loss) and the ConVIRT loss."""

    def __init__(self, model: ConVIRTModel, tokenizer: Any, train: CaptionPairs,
                 val: CaptionPairs | None, batch_size: int, lr: float, seed: int = 1,
                 num_workers: int = 0, flip: bool = True, info: dict[str, Any] | None = None):
        self.model, self.tokenizer = model, tokenizer
        cfg = model.cfg
        self.tokenize = Tokenize(tokenizer, cfg.text_clean, cfg.max_length, cfg.special_tokens)
        self.train_set = PairDataset(train, augment=True, flip=flip, seed=seed)
        self.val_set = PairDataset(val, augment=False) if val is not None and len(val) else None
        self.bs, self.lr, self.seed, self.workers = batch_size, lr, seed, num_workers
        self.info = info or {}

    def configure_optimizers(self) -> Optimization:
        optim = torch.optim.RAdam(self.model.parameters(), lr=self.lr)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(optim, mode="min", **PLATEAU)
        # without validation data the plateau is read on the training loss
        monitor = "val_loss" if self.val_set is not None and len(self.val_set) >= 2 else \
            "train_loss"
        return Optimization([optim], [Scheduled(sched, "epoch", monitor=monitor)])

    def collate_fn(self) -> Any:
        return Collate(self.tokenize)

    def loss(self, model: torch.nn.Module, batch: Any, gather: Any) -> dict[str, torch.Tensor]:
        images, text = batch
        visual, linguistic = model(images, text)
        core = model.module if hasattr(model, "module") else model
        return core.loss(visual, linguistic, gather)

    def export(self, path: Path) -> None:
        cfg = self.model.cfg
        ck.save_weights(path, self.model.state_dict(), cfg.to_json(),
                        tokenizer_to_json(self.tokenizer))

    def describe(self) -> dict[str, Any]:
        return self.info

    def data_line(self, seconds: float) -> str:
        n_val = len(self.val_set) if self.val_set is not None else 0
        val = self.info.get("val_split")
        return (f"pairs: train {len(self.train_set)}{f', {val} {n_val}' if n_val else ''}; "
                f"skipped {self.info.get('pairs', {}).get('skipped')}; prepared in "
                f"{seconds:.1f} s")


def make_task(req: Any, data: TrainingData) -> tuple[ConVIRTTask, dict[str, Any]]:
    refuse_text_encoder_at_tiny(req, "convirt")
    text_clean = req.option("text_clean")
    train_pairs = caption_pairs(data.pairs("train", TRAIN_PREFRAME), text_clean)
    val_raw = data.pairs("val", EVAL)
    val_pairs = caption_pairs(val_raw, text_clean) if val_raw is not None else None
    if len(train_pairs) == 0:
        raise UsageError(f"no usable training pairs in {req.root} ({train_pairs.skipped})")

    seed_everything(req.seed)
    cfg = presets.preset_config(req.preset, text_clean)
    if req.preset == "tiny":
        tokenizer = build_wordpiece(train_pairs.captions, vocab_size=req.option("vocab_size"))
        cfg.text_config["vocab_size"] = int(tokenizer.vocab_size)
        model = ConVIRTModel(cfg)
    else:
        source = req.option("text_encoder") or presets.DEFAULT_TEXT_ENCODER
        text_model, tokenizer = load_pretrained_text(source)
        cfg.text_encoder, cfg.text_kind = source, ck.text_kind_of(text_model.config)
        cfg.text_config = text_model.config.to_dict()
        model = ConVIRTModel(cfg, text_model)
    if req.channels_last:
        model.visual.use_channels_last()
    settings = {
        **preset_settings(req, PRESETS[req.preset]),
        "text_clean": text_clean, "hflip": bool(req.option("hflip")),
        "optimizer": "RAdam", "lr_decay": {"ReduceLROnPlateau": PLATEAU},
        "loss": {"tau": cfg.tau, "lambda": cfg.lam},
    }
    info = {"model": cfg.to_json(), "image_weights": model.visual.weights_note,
            "val_split": data.split("val"), "pre_frame": TRAIN_PREFRAME.describe(),
            "val_frame": EVAL.describe(),
            "caption": "IMPRESSION then FINDINGS (the adapter's report where it gives no "
                       "sections), cleaned: " + text_clean,
            "pairs": {"train": len(train_pairs), "val": len(val_pairs) if val_pairs else 0,
                      "skipped": train_pairs.skipped,
                      "captions_from_sections": train_pairs.from_sections}}
    task = ConVIRTTask(model, tokenizer, train_pairs, val_pairs, settings["batch_size"],
                       settings["lr"], seed=req.seed, num_workers=req.workers,
                       flip=settings["hflip"], info=info)
    return task, settings
