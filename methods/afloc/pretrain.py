"""AFLoc's pretraining task: the official text pipeline and losses over the shared image-report
pairs (`bench.train.data`).

The pairs come from a registered adapter (``mimic-cxr`` or ``synthetic-mimic``) through the
shared preparation, which keeps frontal views, holds MS-CXR's studies out and caches the
pre-frames; here reports are cleaned (``text.clean_report``), studies without a sentence are
removed (counted as "no report sentence"), and each item draws its caption with the official
augmentation (k of n sentences, shuffled, joined by ". ") from a generator seeded by (seed,
epoch, index), so runs repeat exactly whatever the worker layout. Validation captions are drawn
the same way in ``faithful`` mode (the official validation set is the training dataset class)
and kept whole in ``corrected`` mode. The fundus recipe's sentence paraphrases (`paraphrase`)
replace training sentences found in a table before that draw, from their own seeded generator.
Images: ``faithful`` letterbox 256 + CenterCrop 224 (the config's ``imsize: 256``; the offline
resize script that made "MIMIC-224-inter-area" is missing from the repository), ``corrected``
letterbox 224 (the inference frame).
"""

from __future__ import annotations

from collections import Counter
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from bench.methods._shared import contrastive as L
from bench.methods._shared.bert_text import (
    CaptionCollate,
    TextProcessor,
    augment_caption,
    clean_report,
    full_caption,
)
from bench.methods._shared.encoders import tokenizer_to_json
from bench.train.data import ImagePairs, seeded_loader
from bench.train.loop import Optimization, Scheduled, TrainTask

from . import checkpoint as ck
from .imaging import train_crop
from .model import AFLocModel
from .paraphrase import ParaphraseTable, paraphrase_rng


@dataclass
class PairSet:
    """Pairs as AFLoc trains on them: pre-frames (positions `index` of `frames`) and the
    cleaned sentences of each."""

    frames: np.ndarray
    index: np.ndarray
    sentences: list[list[str]]
    ids: list[str]
    skipped: dict[str, int]

    def frame(self, i: int) -> np.ndarray:
        """The 224 training input of pair i (a center crop of the 256 pre-frame, faithful)."""
        return train_crop(np.asarray(self.frames[self.index[i]]))


def clean_pairs(pairs: ImagePairs, text_mode: str) -> PairSet:
    """Keep the pairs whose report keeps a sentence after AFLoc's cleaning."""
    skipped = Counter(pairs.skipped)
    keep, sentences = [], []
    for i, report in enumerate(pairs.reports):
        sents = clean_report(report, text_mode)
        if not sents:
            skipped["no report sentence"] += 1
            continue
        keep.append(i)
        sentences.append(sents)
    return PairSet(pairs.frames, np.asarray(keep, dtype=np.int64), sentences,
                   [pairs.ids[i] for i in keep], dict(skipped))


class PairDataset(Dataset):
    """(frame, caption) items, the caption augmented or full.

    ``stream`` keeps the validation draws apart from the training draws of the same index;
    ``paraphrases`` (the fundus recipe, `paraphrase`) replaces table sentences first."""

    def __init__(self, pairs: PairSet, augment: bool, seed: int = 1, stream: tuple = (),
                 paraphrases: ParaphraseTable | None = None):
        self.pairs, self.augment, self.seed, self.epoch = pairs, augment, seed, 0
        self.stream = tuple(stream)
        self.paraphrases = paraphrases

    def __len__(self) -> int:
        return len(self.pairs.sentences)

    def __getitem__(self, i: int) -> tuple[np.ndarray, str]:
        sents = self.pairs.sentences[i]
        if self.paraphrases is not None:
            sents = self.paraphrases.replace(
                sents, paraphrase_rng(self.seed, self.epoch, i, self.stream))
        if self.augment:
            rng = np.random.default_rng((self.seed, self.epoch, i, *self.stream))
            caption = augment_caption(sents, rng)
        else:
            caption = full_caption(sents)
        return self.pairs.frame(i), caption


class AFLocTask(TrainTask):
    """What the shared loop needs to pretrain AFLoc: the official optimisation (Adam, betas
    (0.5, 0.999), weight decay 1e-6, StepLR per epoch, gradient clipping 0.25)."""

    grad_clip = 0.25

    def __init__(self, model: AFLocModel, tokenizer: Any, train: PairSet, val: PairSet | None,
                 batch_size: int, seed: int = 1, num_workers: int = 0,
                 max_elements: int | None = None, lr: float = 2e-5, gamma: float = 0.9,
                 local_impl: str = "einsum", compile_losses: bool = False,
                 paraphrases: ParaphraseTable | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.processor = TextProcessor(tokenizer, model.cfg.text_mode, model.cfg.word_num)
        # the fundus recipe's sentence paraphrases: training captions only (`paraphrase`)
        self.train_set = PairDataset(train, augment=True, seed=seed, paraphrases=paraphrases)
        # faithful: the official validation set is the training dataset class, so its captions
        # are augmented too (a new draw each epoch); corrected: full captions, so the validation
        # loss that picks the best checkpoint does not move with the draw
        self.val_set = (PairDataset(val, augment=model.cfg.text_mode == "faithful", seed=seed,
                                    stream=(1,)) if val is not None else None)
        self.bs, self.seed, self.workers, self.max_elements = batch_size, seed, num_workers, \
            max_elements
        self.lr, self.gamma = lr, gamma
        self.local_impl, self.compile_losses = local_impl, compile_losses

    def configure_optimizers(self) -> Optimization:
        optim = torch.optim.Adam(self.model.parameters(), lr=self.lr, betas=(0.5, 0.999),
                                 weight_decay=1e-6)
        sched = torch.optim.lr_scheduler.StepLR(optim, step_size=1, gamma=self.gamma)
        return Optimization([optim], [Scheduled(sched, "epoch")])

    def running(self) -> AbstractContextManager:
        return L.local_impl(self.local_impl, self.compile_losses)

    def _loader(self, ds: Any, shuffle: bool, epoch: int, rank: int, world: int,
                drop_last: bool) -> DataLoader:
        return seeded_loader(ds, self.bs, shuffle=shuffle, drop_last=drop_last, epoch=epoch,
                             seed=self.seed, rank=rank, world=world, workers=self.workers,
                             collate_fn=CaptionCollate(self.processor))

    def train_loader(self, epoch: int, rank: int, world: int) -> DataLoader:
        self.train_set.epoch = epoch
        return self._loader(self.train_set, True, epoch, rank, world, drop_last=True)

    def val_loader(self, epoch: int, rank: int, world: int) -> list:
        if self.val_set is None or len(self.val_set) < 2:
            return []
        self.val_set.epoch = epoch
        # drop_last keeps every rank's batch the same size (needed for gathered negatives)
        return self._loader(self.val_set, False, 0, rank, world, drop_last=len(self.val_set)
                            >= self.bs * world)

    def loss(self, model: torch.nn.Module, batch: Any, gather: Any) -> dict[str, torch.Tensor]:
        images, text = batch
        enc = model(images, text)
        core = model.module if hasattr(model, "module") else model
        return core.loss(enc, gather=gather, max_elements=self.max_elements)

    def export(self, path: Path) -> None:
        ck.save_weights(path, self.model.state_dict(), self.model.cfg.to_json(),
                        tokenizer_to_json(self.tokenizer))
