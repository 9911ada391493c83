"""The progress bar must not change what is trained: same batches, same losses, bar or not."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from bench.train.loop import Optimization, Scheduled, TrainConfig, TrainTask, train


class ToyTask(TrainTask):
    """A linear model on 64 points, shuffled by a seeded generator as AFLoc's task does."""

    grad_clip = 0.25

    def configure_optimizers(self) -> Optimization:
        optim = torch.optim.Adam(self.model.parameters(), lr=1e-2, betas=(0.5, 0.999))
        return Optimization([optim], [Scheduled(torch.optim.lr_scheduler.StepLR(optim, 1, 0.9))])

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Linear(3, 1)
        self.x = torch.randn(64, 3)
        self.y = torch.randn(64, 1)
        self.seen: list[list[int]] = []

    def train_loader(self, epoch: int, rank: int, world: int) -> DataLoader:
        g = torch.Generator().manual_seed(1000 + epoch)
        return DataLoader(list(range(64)), batch_size=8, shuffle=True, drop_last=True,
                          generator=g)

    def val_loader(self, epoch: int, rank: int, world: int) -> list:
        return [torch.arange(8)]

    def loss(self, model, batch, gather):
        if model.training:
            self.seen.append(batch.tolist())
        err = model(self.x[batch]) - self.y[batch]
        return {"loss": (err ** 2).mean()}

    def batch_size(self, batch) -> int:
        return len(batch)

    def to_device(self, batch, device):
        return batch

    def export(self, path: Path) -> None:
        path.write_bytes(b"")


def run(tmp_path: Path, progress: bool) -> tuple[list[list[int]], list[float]]:
    task = ToyTask()
    cfg = TrainConfig(epochs=2, precision="fp32", device="cpu",
                      out=str(tmp_path / f"p{int(progress)}"), progress=progress,
                      bn_recalibration_batches=0)
    history = train(task, cfg, log=lambda *a, **k: None)
    return task.seen, [e["val_loss"] for e in history["epochs"]]


def test_the_progress_bar_does_not_change_the_batches_or_the_losses(tmp_path):
    quiet, shown = run(tmp_path, False), run(tmp_path, True)
    assert len(quiet[0]) == 16  # 8 steps x 2 epochs
    assert shown == quiet
    # and the order is the generator's own: epoch 0's first batch as a bare loader gives it
    g = torch.Generator().manual_seed(1000)
    first = next(iter(DataLoader(list(range(64)), batch_size=8, shuffle=True, drop_last=True,
                                 generator=g)))
    assert quiet[0][0] == first.tolist()
