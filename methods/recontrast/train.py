"""`bench train recontrast`: ReContrast on normal images, selected on validation data only.

Presets (`PRESETS`), in optimizer iterations (`bench.methods.anomaly.train`: an epoch of the
loop is a block of iterations, validated after each):

- ``paper``: the official medical settings (``recontrast_oct.py`` / ``recontrast_aptos.py``):
  WRN50-2 (ImageNet weights from the local torchvision cache), 256 x 256 (``Resize((256, 256))``
  then ImageNet normalisation), batch 32, 1,000 iterations, AdamW lr 2e-3 (bottleneck + decoder)
  and 1e-5 (trainable encoder), betas (0.9, 0.999), weight decay 1e-5, hard-mining alpha from -3
  to 1 over the first 10% of iterations, encoder BatchNorm frozen (OCT's choice; ``--encoder-bn-
  train true`` is APTOS's), validation every 250 iterations (when the official code evaluates the
  test set).
- ``tiny``: the same 1,000 iterations and schedule with the tiny network
  (`bench.methods.anomaly.networks.TINY`, random init) at 128 and batch 8, in 10 blocks of 100:
  minutes on a CPU.

Departure from the official code: the official scripts track the best test AUROC; here the
checkpoint is chosen on validation images (see `bench.methods.anomaly.train`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bench.imaging.geometry import RESIZE, Frame
from bench.imaging.recipes import Recipe
from bench.methods._shared import checkpoints as shared
from bench.methods.anomaly.networks import NetworkConfig, load_imagenet
from bench.methods.anomaly.train import OneClassTask, one_class_data, preset_config, preset_network
from bench.train.loop import Optimization, seed_everything
from bench.train.run import preset_settings

from .model import ReContrastNet, alpha_at, recontrast_loss

METHOD = "recontrast"
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"epochs": 4, "block": 250, "batch_size": 32, "lr": 2e-3, "encoder_lr": 1e-5,
              "weight_decay": 1e-5, "bn_recalibration": 0, "network": "paper",
              "imagenet": True},
    "tiny": {"epochs": 10, "block": 100, "batch_size": 8, "lr": 2e-3, "encoder_lr": 1e-5,
             "weight_decay": 1e-5, "bn_recalibration": 0, "network": "tiny",
             "imagenet": False},
}

def network_config(name: str) -> NetworkConfig:
    return preset_config(name, output_conv=2)


def recipe_of(cfg: NetworkConfig) -> Recipe:
    """torchvision ``Resize((S, S))`` on the PIL image (bilinear, antialiased), ImageNet
    normalisation; the official CenterCrop(256) of a 256 image is the identity."""
    return Recipe("cv2-gray", Frame(RESIZE, cfg.size), "imagenet")


def save_weights(path: str | Path, model: ReContrastNet) -> None:
    shared.save_weights(path, model.state_dict(),
                        {**model.cfg.to_json(), "encoder_bn_train": model.encoder_bn_train},
                        method=METHOD)


class ReContrastTask(OneClassTask):
    def __init__(self, model: ReContrastNet, lr: float, encoder_lr: float, weight_decay: float,
                 total_iterations: int, **kw: Any):
        super().__init__(**kw)
        self.model = model
        self.lr, self.encoder_lr, self.weight_decay = lr, encoder_lr, weight_decay
        self.total_iterations = total_iterations
        self.step_in_block = 0

    def configure_optimizers(self) -> Optimization:
        m = self.model
        return Optimization([
            torch.optim.AdamW(list(m.decoder.parameters()) + list(m.bottleneck.parameters()),
                              lr=self.lr, betas=(0.9, 0.999), weight_decay=self.weight_decay),
            torch.optim.AdamW(list(m.encoder.parameters()), lr=self.encoder_lr,
                              betas=(0.9, 0.999), weight_decay=self.weight_decay)])

    def train_loader(self, epoch: int, rank: int, world: int) -> Any:
        self.step_in_block = 0
        return super().train_loader(epoch, rank, world)

    def iteration(self) -> int:
        return self.epoch * self.block + self.step_in_block

    def loss(self, model: torch.nn.Module, batch: Any, gather: Any) -> dict[str, torch.Tensor]:
        alpha = alpha_at(self.iteration(), self.total_iterations)
        en, de = model(self.inputs(batch))
        if model.training:
            self.step_in_block += 1
        return {"loss": recontrast_loss(en, de, alpha)}

    def export(self, path: Path) -> None:
        save_weights(path, self.model)


def make_task(req: Any, data: Any) -> tuple[ReContrastTask, dict[str, Any]]:
    preset = PRESETS[req.preset]
    cfg, imagenet = preset_network(req, preset, output_conv=2)
    settings = {**preset_settings(req, preset), "block": req.option("block") or preset["block"],
                "encoder_lr": req.option("encoder_lr") or preset["encoder_lr"],
                "weight_decay": preset["weight_decay"], "network": cfg.to_json(),
                "imagenet": bool(imagenet),
                "encoder_bn_train": bool(req.option("encoder_bn_train"))}
    settings["iterations"] = settings["epochs"] * settings["block"]
    recipe = recipe_of(cfg)
    oc = one_class_data(data, recipe, req.seed, req.option("val_images"))
    seed_everything(req.seed)
    model = ReContrastNet(cfg, settings["encoder_bn_train"])
    weights = load_imagenet(model.encoder) if imagenet else "random init (tiny preset)"
    model.freeze_copy()
    if req.channels_last:  # the same function in NHWC; files are saved contiguous
        model.to(memory_format=torch.channels_last)
    info = {"model": cfg.to_json(), "image_weights": weights, "frame": recipe.describe(),
            "official_departure": "checkpoint chosen on validation images; the official "
                                  "scripts keep the best test AUROC"}
    task = ReContrastTask(model, settings["lr"], settings["encoder_lr"],
                          settings["weight_decay"], settings["iterations"], data=oc,
                          batch_size=settings["batch_size"], block=settings["block"],
                          seed=req.seed, size=cfg.size, workers=req.workers, info=info)
    return task, settings
