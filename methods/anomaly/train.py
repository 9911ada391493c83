"""What RD++ and ReContrast share in `bench train`: normal images in, a checkpoint chosen on
validation data only.

**Training images**: the normal images of the dataset's training split (`NormalImages`: "No
Finding" = 1 where the labels have it, else no positive label), on the method's pre-frame.

**Validation** (checkpoint selection), never the test split (`bench.train.data.NoTestSamples`):

- with a validation split: its normal and abnormal images (abnormal = any positive label);
- without one: a seeded tenth of the training normals is held out, and the training split's
  abnormal images (never trained on) are the abnormal ones;
- at most `val_images` of them (a seeded draw keeping the normal/abnormal ratio).

The best checkpoint has the highest image AUROC (normal 0 vs abnormal 1, the image score of the
official test code) on these images; with no abnormal validation image, the lowest training
loss. Both official repositories pick their best epoch on the **test** set; this is where the
harness departs from them.

**Schedule**: both recipes count optimizer iterations (ReContrast's medical settings: 1,000
iterations of 32 images, the test set evaluated every 250). The loop's "epoch" here is a block of
`block` batches drawn from an endless, seeded stream of shuffled passes over the normals
(`BlockSampler`), so validation runs every block whatever the dataset's size, and a run resumes
exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from bench.errors import UsageError
from bench.imaging.recipes import NORMALIZATIONS, Recipe
from bench.train.data import Prepared, TrainingData, is_normal, normals_of
from bench.train.loop import TrainTask

from .maps import anomaly_maps, image_scores
from .networks import PAPER, TINY, NetworkConfig

VAL_FRACTION = 0.1


@dataclass
class OneClassData:
    """Training normals (positions into `train.frames`) and the validation images with their
    normal (0) / abnormal (1) labels."""

    train_frames: np.ndarray
    train_index: np.ndarray
    val_frames: np.ndarray
    val_index: np.ndarray
    val_labels: np.ndarray
    skipped: dict[str, int]
    val_source: str

    def describe(self) -> dict[str, Any]:
        return {"train_normals": int(len(self.train_index)),
                "val_normals": int((self.val_labels == 0).sum()),
                "val_abnormals": int((self.val_labels == 1).sum()),
                "val_source": self.val_source, "skipped": dict(self.skipped)}


def preset_network(req: Any, preset: dict[str, Any], output_conv: int) -> tuple[NetworkConfig,
                                                                                  bool]:
    """(network config, start from ImageNet weights?) of a request: the preset's network
    (`PAPER` or `TINY`, with the method's decoder heads), the request's `network`, `size` and
    `imagenet` options where given."""
    cfg = preset_config(req.option("network") or preset["network"], output_conv)
    if req.option("size"):
        cfg = replace(cfg, size=int(req.option("size")))
    imagenet = preset["imagenet"] if req.option("imagenet") is None else req.option("imagenet")
    return cfg, bool(imagenet)


def preset_config(name: str, output_conv: int) -> NetworkConfig:
    """The `paper` or `tiny` network with `output_conv` decoder heads (RD++ 0, ReContrast 2)."""
    return replace({"paper": PAPER, "tiny": TINY}[name], output_conv=output_conv)


def normal_labels(p: Prepared) -> np.ndarray:
    """Per prepared image: 0 normal, 1 abnormal, -1 unlabelled."""
    out = np.full(len(p), -1, dtype=np.int64)
    for i, lab in enumerate(p.labels):
        n = is_normal(lab)
        if n is not None:
            out[i] = 0 if n else 1
    return out


def _cap(index: np.ndarray, labels: np.ndarray, cap: int | None,
         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """At most `cap` validation images, drawn per class in proportion (seeded)."""
    if cap is None or len(index) <= cap:
        return index, labels
    keep = []
    for c in (0, 1):
        members = index[labels == c]
        k = int(round(cap * len(members) / len(index)))
        keep.append(rng.choice(members, size=min(k, len(members)), replace=False))
    kept = np.sort(np.concatenate(keep))
    lookup = dict(zip(index.tolist(), labels.tolist()))
    return kept, np.asarray([lookup[i] for i in kept.tolist()], dtype=np.int64)


def one_class_data(data: TrainingData, recipe: Recipe, seed: int,
                   val_images: int | None = 1000) -> OneClassData:
    """The training normals and the validation images (see the module docstring)."""
    train = data.prepared("train", recipe, "all")
    normals = normals_of(train)
    if len(normals) == 0:
        raise UsageError(f"no normal training images in {data.dataset_name} "
                         f"({data.split('train')}): one-class training needs images without "
                         f"any positive label (or 'No Finding' = 1)")
    rng = np.random.default_rng(seed)
    val = data.prepared("val", recipe, "all")
    train_index = normals.index
    if val is not None and len(val):
        lab = normal_labels(val)
        val_index = np.flatnonzero(lab >= 0)
        val_frames, val_labels = val.frames, lab[val_index]
        source = f"split {data.split('val')}"
    else:
        order = rng.permutation(train_index)
        n_val = max(1, int(round(VAL_FRACTION * len(order))))
        held = np.sort(order[:n_val])
        train_index = np.sort(order[n_val:])
        abnormal = np.flatnonzero(normal_labels(train) == 1)
        val_index = np.concatenate([held, abnormal])
        val_labels = np.concatenate([np.zeros(len(held), np.int64), np.ones(len(abnormal),
                                                                            np.int64)])
        order = np.argsort(val_index, kind="stable")
        val_index, val_labels = val_index[order], val_labels[order]
        val_frames = train.frames
        source = (f"{VAL_FRACTION:.0%} of the training normals held out (seed {seed}) and the "
                  f"training split's abnormal images")
    if len(train_index) == 0:
        raise UsageError(f"{data.dataset_name}: too few normal training images "
                         f"({len(normals)}) to hold out validation images")
    val_index, val_labels = _cap(val_index, val_labels, val_images, rng)
    return OneClassData(train.frames, np.asarray(train_index, np.int64), val_frames,
                        np.asarray(val_index, np.int64), val_labels, normals.skipped, source)


class FrameSet(Dataset):
    """uint8 frames [S, S] at the given positions."""

    def __init__(self, frames: np.ndarray, index: np.ndarray):
        self.frames, self.index = frames, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.frames[self.index[i]])


class BlockSampler(Sampler[int]):
    """Block `epoch` of an endless stream of seeded shuffled passes over `n` items: `block *
    batch` positions, pass k shuffled by a generator seeded with (seed, k); a short last batch
    of a pass never happens because the stream runs on into the next pass."""

    def __init__(self, n: int, batch: int, block: int, seed: int, epoch: int = 0):
        self.n, self.batch, self.block, self.seed, self.epoch = n, batch, block, seed, epoch

    def positions(self) -> np.ndarray:
        per = self.block * self.batch
        start, stop = self.epoch * per, (self.epoch + 1) * per
        out, k = [], start // self.n
        while k * self.n < stop:
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(
                self.seed * 1_000_003 + k)).numpy()
            lo, hi = max(start - k * self.n, 0), min(stop - k * self.n, self.n)
            out.append(perm[lo:hi])
            k += 1
        return np.concatenate(out)

    def __iter__(self):
        return iter(self.positions().tolist())

    def __len__(self) -> int:
        return self.block * self.batch


def normalized(x01: torch.Tensor, normalize: str = "imagenet") -> torch.Tensor:
    """[B, S, S] grey or [B, 3, S, S] values in [0, 1] -> [B, 3, S, S] normalised."""
    mean, std = NORMALIZATIONS[normalize]
    x = x01.unsqueeze(1).expand(-1, 3, -1, -1) if x01.dim() == 3 else x01
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous()


def stack_uint8(items: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(items))


class OneClassTask(TrainTask):
    """The shared half of a one-class task: the block loader of normals, validation AUROC
    selection. Subclasses give `model` (with `pairs(x)`: the (teacher, student) feature lists
    of a batch), `loss`, `configure_optimizers` and `export`."""

    normalize = "imagenet"

    def __init__(self, data: OneClassData, batch_size: int, block: int, seed: int,
                 size: int, workers: int = 0, smoothing: str = "scipy", max_ratio: float = 0.0,
                 info: dict[str, Any] | None = None):
        self.data, self.bs, self.block, self.seed = data, batch_size, block, seed
        self.size, self.workers = size, workers
        self.smoothing, self.max_ratio = smoothing, max_ratio
        self.train_set = FrameSet(data.train_frames, data.train_index)
        self.val_set = FrameSet(data.val_frames, data.val_index)
        self.has_abnormal = bool((data.val_labels == 1).any() and (data.val_labels == 0).any())
        self.selection = ("val_auroc", "max") if self.has_abnormal else ("train_loss", "min")
        self.epoch = 0
        self.info = info or {}

    def train_loader(self, epoch: int, rank: int, world: int) -> DataLoader:
        self.epoch = epoch
        sampler = BlockSampler(len(self.train_set), self.bs * world, self.block, self.seed,
                               epoch)
        if world > 1:  # each rank its interleaved share of the block
            sampler = _RankShare(sampler, rank, world)
        return DataLoader(self.train_set, batch_size=self.bs, sampler=sampler, drop_last=True,
                          num_workers=self.workers, collate_fn=stack_uint8)

    def val_loader(self, epoch: int, rank: int, world: int) -> Any:
        return []  # no validation loss: selection is on `validation_scores`

    def inputs(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [B, S, S] on the device -> the model's normalised float input, computed where
        the frames are (the same operations as `bench.imaging.recipes.to_tensor`)."""
        return normalized(frames.float().div_(255.0), self.normalize)

    def pairs(self, model: torch.nn.Module, x: torch.Tensor) -> tuple[list, list]:
        """The (teacher, student) feature lists of a batch: the model's own `pairs`."""
        return model.pairs(x)

    @torch.no_grad()
    def validation_scores(self, model: torch.nn.Module, device: torch.device,
                          epoch: int) -> dict[str, float]:
        if not self.has_abnormal:
            return {"val_auroc": float("nan")}
        from sklearn.metrics import roc_auc_score

        net = getattr(model, "module", model)
        was = net.training
        net.eval()
        scores = []
        for a in range(0, len(self.val_set), self.bs):
            frames = stack_uint8([self.val_set[i] for i in range(a, min(a + self.bs,
                                                                     len(self.val_set)))])
            t, s = self.pairs(net, self.inputs(frames.to(device)))
            scores.append(image_scores(anomaly_maps(t, s, self.size, self.smoothing),
                                       self.max_ratio))
        net.train(was)
        return {"val_auroc": float(roc_auc_score(self.data.val_labels, np.concatenate(scores)))}

    def batch_size(self, batch: Any) -> int:
        return int(batch.shape[0])

    def describe(self) -> dict[str, Any]:
        return {**self.info, "images": self.data.describe(),
                "selection": ("validation image AUROC (normal vs abnormal)" if self.has_abnormal
                              else "training loss (no abnormal validation image)")}

    def data_line(self, seconds: float) -> str:
        d = self.data.describe()
        return (f"normal training images {d['train_normals']}; validation {d['val_normals']} "
                f"normal + {d['val_abnormals']} abnormal ({d['val_source']}); selection on "
                f"{self.selection[0]}; prepared in {seconds:.1f} s")


class _RankShare(Sampler[int]):
    """Rank `rank`'s positions of a block: every `world`-th one, so the ranks' batches together
    are the block's global batches."""

    def __init__(self, inner: BlockSampler, rank: int, world: int):
        self.inner, self.rank, self.world = inner, rank, world

    def __iter__(self):
        return iter(self.inner.positions()[self.rank::self.world].tolist())

    def __len__(self) -> int:
        return len(self.inner) // self.world
