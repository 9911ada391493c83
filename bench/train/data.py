"""The training data the methods share, prepared once per (dataset, split, pre-frame).

Three kinds, one preparation: a single pass over a registered adapter decodes every usable
image into a uint8 **pre-frame** (the method's declared recipe: reader and frame, e.g. the 256
letterbox from which AFLoc center-crops and GLoRIA random-crops 224) and records the sample's
id, raw report, labels and view. Methods that declare the same pre-frame share the cache. Each
method then applies its own crop, text cleaning and augmentation.

- `ImagePairs`: frontal images with their raw reports, and the report's FINDINGS and IMPRESSION
  where the adapter gives them (``meta["findings"]``, ``meta["impression"]``: a method may
  order or pick sections its own way) (image-text pretraining; MIMIC-CXR's MS-CXR studies held
  out, see `with_ms_cxr_held_out`);
- `LabelledImages`: images with their definite labels and which labels are uncertain (CheXpert's
  -1, from ``meta["chexpert"]`` or ``meta["uncertain"]``) (supervised classifiers);
- `NormalImages`: images without any positive finding (one-class anomaly detection).

With a cache folder, the frames are an ``images.npy`` memory map and the records a JSON file,
written atomically once and read at disk speed afterwards; a cache of other data (another
split, adapter options, recipe or limit) is rebuilt, never reused. Under ``torchrun`` rank 0
writes the cache and the other ranks read it.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import UsageError
from bench.imaging.geometry import to_frame
from bench.imaging.recipes import READERS, Recipe
from bench.store import atomic_write, atomic_write_json

FRONTAL = {"PA", "AP", "FRONTAL"}
VIEWS = ("frontal", "all")
SECTIONS = ("findings", "impression")  # report sections kept where the adapter gives them
RECORDS_VERSION = 3  # 2: records hold the sections; 3: and the uncertain labels (else rebuilt)


@dataclass
class Prepared:
    """Pre-frames [N, S, S] uint8 (a memory map when cached) and one record per frame."""

    frames: np.ndarray
    ids: list[str]
    reports: list[str | None]
    labels: list[dict[str, int]]
    views: list[str]
    skipped: dict[str, int] = field(default_factory=dict)
    sections: list[dict[str, str] | None] | None = None  # per frame; None: not recorded
    uncertain: list[list[str]] | None = None  # per frame: labels given as uncertain (-1)

    def __len__(self) -> int:
        return len(self.ids)


def cache_identity(dataset: Any, recipe: Recipe, views: str, limit: int | None) -> dict[str, Any]:
    """What a cache was built from: a cache of other data is never reused."""
    if isinstance(dataset, NoTestSamples):
        dataset = dataset.dataset
    cls = type(dataset)
    config = dataset.config() if hasattr(dataset, "config") else None
    return json.loads(json.dumps({
        "dataset": f"{cls.__module__}.{cls.__qualname__}",
        "root": str(getattr(dataset, "root", None)), "split": getattr(dataset, "split", None),
        "config": config, "recipe": recipe.describe(), "views": views, "limit": limit,
        "records": RECORDS_VERSION}, default=str))


def cache_folder(cache: Path, split: str, recipe: Recipe, views: str) -> Path:
    """One sub-folder per (split, recipe, views), so methods with the same pre-frame share it."""
    tag = hashlib.sha256(json.dumps([recipe.describe(), views], sort_keys=True).encode())
    return cache / f"{split}-{tag.hexdigest()[:10]}"


def prepare(dataset: Any, recipe: Recipe, views: str = "frontal",
            cache_dir: str | Path | None = None, progress: bool = True,
            limit: int | None = None) -> Prepared:
    """One pass over the adapter: the pre-frame and record of every usable image."""
    if views not in VIEWS:
        raise ValueError(f"views must be one of {VIEWS}")
    cache = Path(cache_dir) if cache_dir else None
    identity = cache_identity(dataset, recipe, views, limit)
    if cache is not None and (cache / "records.json").is_file():
        meta = json.loads((cache / "records.json").read_text())
        if meta.get("identity") == identity:  # else rebuilt: other data, options or recipe
            frames = np.load(cache / "images.npy", mmap_mode="r")
            return Prepared(frames, meta["ids"], meta["reports"], meta["labels"], meta["views"],
                            meta["skipped"], meta.get("sections"), meta.get("uncertain"))
    read = READERS[recipe.reader]
    n = len(dataset) if limit is None else min(limit, len(dataset))
    skipped: Counter[str] = Counter()
    frames: list[np.ndarray] = []
    ids: list[str] = []
    reports: list[str | None] = []
    sections: list[dict[str, str] | None] = []
    labels: list[dict[str, int]] = []
    uncertain: list[list[str]] = []
    kept_views: list[str] = []
    it: Any = range(n)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="preparing training images", leave=False)
    for i in it:
        s = dataset.load(i)
        if s is None or s.image is None:
            skipped["unreadable image"] += 1
            continue
        view = str(s.meta.get("view", "")).upper()
        if views == "frontal" and view and view not in FRONTAL:
            skipped["not frontal"] += 1
            continue
        frames.append(to_frame(read(s), recipe.frame))
        ids.append(str(s.id))
        reports.append(s.report)
        sections.append(report_sections(s.meta))
        labels.append({k: int(v) for k, v in s.labels.items()})
        uncertain.append(uncertain_labels(s.meta))
        kept_views.append(view)
    size = recipe.frame.size if recipe.frame.kind != "original" else 0
    stack = np.stack(frames) if frames else np.zeros((0, size, size), np.uint8)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        with atomic_write(cache / "images.npy") as tmp:
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=stack.shape)
            mm[:] = stack
            mm.flush()
            del mm
        atomic_write_json(cache / "records.json", {
            "identity": identity, "ids": ids, "reports": reports, "sections": sections,
            "labels": labels, "uncertain": uncertain,
            "views": kept_views, "skipped": dict(skipped)})
    return Prepared(stack, ids, reports, labels, kept_views, dict(skipped), sections, uncertain)


def uncertain_labels(meta: dict[str, Any]) -> list[str]:
    """The labels a sample gives as uncertain: ``meta["uncertain"]`` (names), or the -1 values
    of ``meta["chexpert"]`` (the raw CheXpert row MIMIC-CXR's adapter keeps)."""
    if meta.get("uncertain") is not None:
        return sorted(str(k) for k in meta["uncertain"])
    raw = meta.get("chexpert")
    if not isinstance(raw, dict):
        return []
    return sorted(str(k) for k, v in raw.items() if isinstance(v, (int, float)) and v == -1)


def report_sections(meta: dict[str, Any]) -> dict[str, str] | None:
    """The sample's FINDINGS and IMPRESSION as its adapter recorded them (None: neither)."""
    found = {k: meta[k] for k in SECTIONS if isinstance(meta.get(k), str)}
    return found or None


# -- the three kinds ---------------------------------------------------------------------------

@dataclass
class ImagePairs:
    """Frontal images and their raw reports, as prepared (methods clean the text); `sections`
    holds each report's FINDINGS / IMPRESSION where the adapter gave them."""

    frames: np.ndarray
    reports: list[str | None]
    ids: list[str]
    skipped: dict[str, int]
    sections: list[dict[str, str] | None] | None = None


@dataclass
class LabelledImages:
    """Images and a label matrix [N, P] over `pathologies` (NaN where a label is not given);
    `uncertain` [N, P] is True where the label was given as uncertain (its entry is NaN)."""

    frames: np.ndarray
    labels: np.ndarray
    pathologies: tuple[str, ...]
    ids: list[str]
    skipped: dict[str, int]
    uncertain: np.ndarray | None = None


@dataclass
class NormalImages:
    """Images without any positive finding (positions into the prepared frames)."""

    frames: np.ndarray
    index: np.ndarray
    ids: list[str]
    skipped: dict[str, int]

    def __len__(self) -> int:
        return len(self.index)

    def frame(self, i: int) -> np.ndarray:
        return np.asarray(self.frames[self.index[i]])


def is_normal(labels: dict[str, int], normal_label: str = "No Finding") -> bool | None:
    """True / False, or None when the labels do not say (no label at all): "No Finding" = 1 where
    the labels have it (CheXpert, MIMIC-CXR), else no positive label."""
    if normal_label in labels:
        return labels[normal_label] == 1
    if not labels:
        return None
    return not any(v == 1 for v in labels.values())


def pairs_of(p: Prepared) -> ImagePairs:
    return ImagePairs(p.frames, p.reports, p.ids, p.skipped, p.sections)


def labelled_of(p: Prepared, pathologies: tuple[str, ...]) -> LabelledImages:
    matrix = np.full((len(p), len(pathologies)), np.nan, dtype=np.float32)
    for i, lab in enumerate(p.labels):
        for j, name in enumerate(pathologies):
            if name in lab:
                matrix[i, j] = lab[name]
    unsure = np.zeros(matrix.shape, dtype=bool)
    for i, names in enumerate(p.uncertain or []):
        for j, name in enumerate(pathologies):
            unsure[i, j] = name in names and np.isnan(matrix[i, j])
    return LabelledImages(p.frames, matrix, tuple(pathologies), p.ids, p.skipped, unsure)


def normals_of(p: Prepared) -> NormalImages:
    skipped = Counter(p.skipped)
    keep = []
    for i, lab in enumerate(p.labels):
        normal = is_normal(lab)
        if normal is None:
            skipped["no labels"] += 1
        elif not normal:
            skipped["not normal"] += 1
        else:
            keep.append(i)
    return NormalImages(p.frames, np.asarray(keep, dtype=np.int64), [p.ids[i] for i in keep],
                        dict(skipped))


# -- what a training task asks for -------------------------------------------------------------

def with_ms_cxr_held_out(ds_cls: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Dataset options with MS-CXR's file filled in where the corpus holds MS-CXR's images
    (MIMIC-CXR) and the user did not choose (a file, or "none")."""
    if not getattr(ds_cls, "holds_out_ms_cxr", False) or "exclude_ms_cxr" in options:
        return dict(options)
    from bench.datasets.mimic_cxr import find_ms_cxr_file

    return {**options, "exclude_ms_cxr": str(find_ms_cxr_file())}


def split_names(ds_cls: Any) -> tuple[str, str | None]:
    """(training split, validation split or None) of a dataset class."""
    splits = tuple(getattr(ds_cls, "splits", ()))
    train = "train" if "train" in splits else (splits[0] if splits else "train")
    val = next((s for s in ("validate", "val", "valid", "validation") if s in splits), None)
    if val == train:
        val = None
    return train, val


class TrainingData:
    """The data a training task asks for, prepared on first use from the request's dataset.

    `pairs`, `labelled` and `normals` take a split ("train" or "val": the dataset's own names
    are looked up) and the method's pre-frame recipe."""

    def __init__(self, dataset: str, root: str | None, options: dict[str, Any],
                 cache: str | None = None, limit: int | None = None, progress: bool = True,
                 rank: int = 0, world: int = 1):
        from bench.registry import get_dataset

        self.dataset_name = dataset
        self.dataset_class = get_dataset(dataset)
        self.root = root
        self.options = with_ms_cxr_held_out(self.dataset_class, options)
        self.cache = Path(cache) if cache else None
        self.limit = limit
        self.progress = progress
        self.rank, self.world = rank, world
        self.splits = dict(zip(("train", "val"), split_names(self.dataset_class)))

    def split(self, which: str) -> str | None:
        if which not in self.splits:
            raise ValueError(f"split must be 'train' or 'val', not {which!r}")
        return self.splits[which]

    def prepared(self, which: str, recipe: Recipe, views: str = "frontal") -> Prepared | None:
        """Every record of the split's frames (reports, sections, labels, uncertain labels), for
        a task that needs more of a pair than `pairs` keeps (MedKLIP's triplets: the labels)."""
        split = self.split(which)
        if split is None:
            return None
        ds = NoTestSamples(self.dataset_class(root=self.root, split=split, **self.options),
                           self.dataset_name)
        where = cache_folder(self.cache, split, recipe, views) if self.cache else None
        if where is not None and self.world > 1:  # rank 0 writes the cache, the others read it
            import torch.distributed as dist

            if self.rank == 0:
                prepare(ds, recipe, views, where, self.progress, self.limit)
            dist.barrier()
        return prepare(ds, recipe, views, where, self.progress and self.rank == 0, self.limit)

    def pairs(self, which: str, recipe: Recipe) -> ImagePairs | None:
        p = self.prepared(which, recipe, "frontal")
        if p is None:
            return None
        if which == "train" and not any(r for r in p.reports):
            raise UsageError(f"no image with a report in {self.dataset_name} "
                             f"({self.split(which)}): image-text training needs paired reports")
        return pairs_of(p)

    def labelled(self, which: str, recipe: Recipe,
                 pathologies: tuple[str, ...] | None = None) -> LabelledImages | None:
        p = self.prepared(which, recipe, "all")
        if p is None:
            return None
        names = tuple(pathologies or self.dataset_class.pathologies)
        return labelled_of(p, names)

    def normals(self, which: str, recipe: Recipe) -> NormalImages | None:
        p = self.prepared(which, recipe, "all")
        return None if p is None else normals_of(p)

    def describe(self) -> dict[str, Any]:
        return {"dataset": self.dataset_name, "root": self.root, "options": self.options,
                "splits": self.splits, "limit": self.limit}


def is_test_split(name: str | None) -> bool:
    """A split that holds evaluation images: "test", or a name with "test" as one of its parts
    (RSNA's "gloria-test", SIIM's "image-test")."""
    return name is not None and "test" in str(name).lower().replace("_", "-").split("-")


class NoTestSamples:
    """A training adapter that refuses test images: `bench train` never reads a test split, for
    training or for checkpoint selection. Raises on a test split, and on any sample whose own
    ``meta["split"]`` says test (an adapter whose training split leaks test images)."""

    def __init__(self, dataset: Any, name: str):
        self.dataset, self.name = dataset, name
        split = getattr(dataset, "split", None)
        if is_test_split(split):
            raise UsageError(f"bench train never reads a test split ({name}, split {split})")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, attr: str) -> Any:  # root, split, config() ... of the adapter
        return getattr(self.dataset, attr)

    def load(self, index: int) -> Any:
        s = self.dataset.load(index)
        if s is not None and is_test_split(s.meta.get("split")):
            raise UsageError(f"{self.name} ({self.dataset.split}) row {index}: sample {s.id} "
                             f"belongs to the test split {s.meta['split']!r}; bench train never "
                             f"reads test images")
        return s


def seeded_loader(ds: Any, batch_size: int, *, shuffle: bool, drop_last: bool, epoch: int,
                  seed: int, rank: int = 0, world: int = 1, workers: int = 0,
                  collate_fn: Any = None) -> Any:
    """The DataLoader of every pair task: shuffled by a generator seeded with (seed, epoch), so
    a run repeats exactly and resumes where it stopped; under ``torchrun`` a DistributedSampler
    (same seed, set to the epoch) gives each rank its share."""
    import torch
    from torch.utils.data import DataLoader, DistributedSampler

    sampler = None
    if world > 1:
        sampler = DistributedSampler(ds, world, rank, shuffle=shuffle, seed=seed,
                                     drop_last=drop_last)
        sampler.set_epoch(epoch)
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle and sampler is None,
                      sampler=sampler, drop_last=drop_last, num_workers=workers,
                      collate_fn=collate_fn, generator=g)


class SplitLoaders:
    """`train_loader` and `val_loader` of a task that has `train_set` (with an `epoch`
    attribute: its augmentation draws), `val_set` (None, or fewer than 2 items: no validation),
    `bs`, `seed`, `workers` and a `collate_fn()`; both through `seeded_loader`."""

    def collate_fn(self) -> Any:
        raise NotImplementedError

    def _loader(self, ds: Any, shuffle: bool, epoch: int, rank: int, world: int,
                drop_last: bool) -> Any:
        return seeded_loader(ds, self.bs, shuffle=shuffle, drop_last=drop_last, epoch=epoch,
                             seed=self.seed, rank=rank, world=world, workers=self.workers,
                             collate_fn=self.collate_fn())

    def train_loader(self, epoch: int, rank: int, world: int) -> Any:
        self.train_set.epoch = epoch
        return self._loader(self.train_set, True, epoch, rank, world, drop_last=True)

    def val_loader(self, epoch: int, rank: int, world: int) -> Any:
        if self.val_set is None or len(self.val_set) < 2:
            return []
        return self._loader(self.val_set, False, 0, rank, world,
                            drop_last=len(self.val_set) >= self.bs * world)
