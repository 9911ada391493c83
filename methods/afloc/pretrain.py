"""AFLoc pretraining data and the `TrainTask` the shared loop runs.

Pairs come from a registered dataset adapter (``mimic-cxr`` or ``synthetic-mimic``): the
adapter already keeps frontal views and drops MS-CXR images; here reports are cleaned
(``text.clean_report``), studies without a sentence are removed, and each item draws its
caption with the official augmentation (k of n sentences, shuffled, joined by ". ") from a
generator seeded by (seed, epoch, index), so runs repeat exactly whatever the worker layout.
Validation captions are drawn the same way in ``faithful`` mode (the official validation set
is the training dataset class) and kept whole in ``corrected`` mode.
Images: ``faithful`` letterbox 256 + CenterCrop 224 (the config's ``imsize: 256``; the
offline resize script that made "MIMIC-224-inter-area" is missing from the repository),
``corrected`` letterbox 224 (the inference frame).

``prepare_pairs`` decodes every image once into uint8 224 x 224 frames, in memory or as a
one-off cache (``images.npy`` memory map + ``captions.json``) the loader reads at disk speed.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from bench.store import atomic_write_json

from . import checkpoint as ck
from . import presets
from .imaging import TRAIN_FRAMES, frame_uint8, source_uint8, to_tensor
from .model import AFLocModel
from .text import TextBatch, TextProcessor, augment_caption, clean_report, full_caption

FRONTAL = {"PA", "AP", "FRONTAL"}


@dataclass
class PairSet:
    """Preprocessed pairs: frames [N, 224, 224] uint8 and the cleaned sentences of each."""

    frames: np.ndarray
    sentences: list[list[str]]
    ids: list[str]
    skipped: dict[str, int]


def cache_identity(dataset: Any, text_mode: str, limit: int | None) -> dict[str, Any]:
    """What a frame cache was built from: a cache of other pairs (another split, MS-CXR not
    held out, another text mode) is never reused."""
    cls = type(dataset)
    config = dataset.config() if hasattr(dataset, "config") else None
    return json.loads(json.dumps({
        "dataset": f"{cls.__module__}.{cls.__qualname__}",
        "root": str(getattr(dataset, "root", None)), "split": getattr(dataset, "split", None),
        "config": config, "text_mode": text_mode, "limit": limit}, default=str))


def prepare_pairs(dataset: Any, text_mode: str, cache_dir: str | Path | None = None,
                  progress: bool = True, limit: int | None = None) -> PairSet:
    """One pass over the adapter: frame every usable image, clean every report."""
    cache = Path(cache_dir) if cache_dir else None
    identity = cache_identity(dataset, text_mode, limit)
    if cache is not None and (cache / "captions.json").is_file():
        meta = json.loads((cache / "captions.json").read_text())
        if meta.get("identity") == identity:  # else rebuilt: other data, options or text mode
            frames = np.load(cache / "images.npy", mmap_mode="r")
            return PairSet(frames, meta["sentences"], meta["ids"], meta["skipped"])
    frame = TRAIN_FRAMES[text_mode]
    n = len(dataset) if limit is None else min(limit, len(dataset))
    skipped: Counter[str] = Counter()
    keep_frames: list[np.ndarray] = []
    sentences: list[list[str]] = []
    ids: list[str] = []
    it: Any = range(n)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="preparing pairs", leave=False)
    for i in it:
        s = dataset.load(i)
        if s is None or s.image is None:
            skipped["unreadable image"] += 1
            continue
        view = str(s.meta.get("view", "")).upper()
        if view and view not in FRONTAL:
            skipped["not frontal"] += 1
            continue
        sents = clean_report(s.report, text_mode)
        if not sents:
            skipped["no report sentence"] += 1
            continue
        keep_frames.append(frame_uint8(source_uint8(s.image, s.meta.get("path")), frame))
        sentences.append(sents)
        ids.append(str(s.id))
    frames = (np.stack(keep_frames) if keep_frames else np.zeros((0, 224, 224), np.uint8))
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / ".images.npy.tmp"
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=frames.shape)
        mm[:] = frames
        mm.flush()
        del mm
        tmp.replace(cache / "images.npy")
        atomic_write_json(cache / "captions.json", {"identity": identity,
                                                    "text_mode": text_mode, "ids": ids,
                                                    "sentences": sentences,
                                                    "skipped": dict(skipped)})
    return PairSet(frames, sentences, ids, dict(skipped))


class PairDataset(Dataset):
    """(frame, caption) items, the caption augmented or full.

    ``stream`` keeps the validation draws apart from the training draws of the same index."""

    def __init__(self, pairs: PairSet, augment: bool, seed: int = 1, stream: tuple = ()):
        self.pairs, self.augment, self.seed, self.epoch = pairs, augment, seed, 0
        self.stream = tuple(stream)

    def __len__(self) -> int:
        return len(self.pairs.sentences)

    def __getitem__(self, i: int) -> tuple[np.ndarray, str]:
        sents = self.pairs.sentences[i]
        if self.augment:
            rng = np.random.default_rng((self.seed, self.epoch, i, *self.stream))
            caption = augment_caption(sents, rng)
        else:
            caption = full_caption(sents)
        return np.asarray(self.pairs.frames[i]), caption


class Collate:
    """Stacks frames and tokenises captions (runs in the loader workers)."""

    def __init__(self, processor: TextProcessor):
        self.processor = processor

    def __call__(self, items: list[tuple[np.ndarray, str]]) -> tuple[torch.Tensor, TextBatch]:
        frames = np.stack([f for f, _ in items])
        return to_tensor(frames), self.processor.encode([c for _, c in items])


class AFLocTask:
    """What the shared loop needs to pretrain AFLoc."""

    def __init__(self, model: AFLocModel, tokenizer: Any, train: PairSet, val: PairSet | None,
                 batch_size: int, seed: int = 1, num_workers: int = 0,
                 max_elements: int | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.processor = TextProcessor(tokenizer, model.cfg.text_mode, model.cfg.word_num)
        self.train_set = PairDataset(train, augment=True, seed=seed)
        # faithful: the official validation set is the training dataset class, so its captions
        # are augmented too (a new draw each epoch); corrected: full captions, so the validation
        # loss that picks the best checkpoint does not move with the draw
        self.val_set = (PairDataset(val, augment=model.cfg.text_mode == "faithful", seed=seed,
                                    stream=(1,)) if val is not None else None)
        self.bs, self.seed, self.workers, self.max_elements = batch_size, seed, num_workers, \
            max_elements

    def _loader(self, ds: PairDataset, shuffle: bool, epoch: int, rank: int, world: int,
                drop_last: bool) -> DataLoader:
        sampler = None
        if world > 1:
            sampler = DistributedSampler(ds, world, rank, shuffle=shuffle, seed=self.seed,
                                         drop_last=drop_last)
            sampler.set_epoch(epoch)
        g = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        return DataLoader(ds, batch_size=self.bs, shuffle=shuffle and sampler is None,
                          sampler=sampler, drop_last=drop_last, num_workers=self.workers,
                          collate_fn=Collate(self.processor), generator=g)

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

    def batch_size(self, batch: Any) -> int:
        return int(batch[0].shape[0])

    def to_device(self, batch: Any, device: torch.device) -> Any:
        return batch[0].to(device, non_blocking=True), batch[1].to(device)

    def export(self, path: Path) -> None:
        ck.save_weights(path, self.model.state_dict(), self.model.cfg.to_json(),
                        presets.tokenizer_to_json(self.tokenizer))
