"""`bench train rdpp`: RD++ on normal images, selected on validation data only.

Per batch, as the official ``main.py``: the clean images and a copy with one simplex-noise
patch each (`noise`) go through the frozen teacher; the projection layers take both; the
bottleneck and decoder reconstruct the teacher's clean features from the clean projections.
Loss = L_distill + 0.2 L_proj (`loss`). Two Adam optimizers with betas (0.5, 0.999): projection
lr 1e-3, bottleneck + decoder lr 5e-3. Gradients of two batches are summed before each step
(the official ``accumulation_steps = 2``).

Presets (`PRESETS`), in batches (`bench.methods.anomaly.train`: an epoch of the loop is a block
of batches, validated after each):

- ``paper``: WRN50-2 (ImageNet weights from the local torchvision cache), 256 x 256 (cv2
  INTER_LINEAR, the official ``cv2.resize``), batch 16, 2,000 batches (1,000 optimizer steps of
  32 images) in 4 blocks. The official code has no chest X-ray schedule, only MVTec epochs per
  class (10 to 300 over a few hundred images); the harness gives RD++ the iteration budget of
  ReContrast's official medical settings (1,000 steps of 32 images), so the two detectors see
  the same number of images.
- ``tiny``: the same 2,000 batches (1,000 optimizer steps) with the tiny network (random init)
  at 128 and batch 8, in 10 blocks of 200, and the
  SSOT term taken as the exact zero it is (``--ssot zero``; `loss.projection_terms`): it is
  the Sinkhorn divergence between the batch and a reordering of the same batch, which geomloss
  returns as |S| <= 5e-10 with gradients <= 2e-15 after ~370 annealing iterations per scale,
  most of a CPU step. ``--ssot geomloss`` (the paper preset's) runs it as the official code.

Departures from the official code: the checkpoint is chosen on validation images (the official
keeps the epoch with the best mean of three test metrics); the pre-frame is uint8 (the official
resizes ``img / 255.`` in float64: at most one grey level apart); the noise is added in float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.imaging.geometry import SQUARE_LINEAR, Frame
from bench.imaging.recipes import Recipe
from bench.methods._shared import checkpoints as shared
from bench.methods.anomaly.networks import NetworkConfig, load_imagenet
from bench.methods.anomaly.train import (
    OneClassTask,
    normalized,
    one_class_data,
    preset_config,
    preset_network,
)
from bench.train.loop import Optimization, seed_everything
from bench.train.run import preset_settings

from .loss import WEIGHT_PROJ, rdpp_loss
from .model import RDPP
from .noise import SimplexPseudoAnomaly

METHOD = "rdpp"
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"epochs": 4, "block": 500, "batch_size": 16, "lr": 5e-3, "proj_lr": 1e-3,
              "accumulate": 2, "bn_recalibration": 0, "network": "paper", "imagenet": True,
              "ssot": "geomloss"},
    "tiny": {"epochs": 10, "block": 200, "batch_size": 8, "lr": 5e-3, "proj_lr": 1e-3,
             "accumulate": 2, "bn_recalibration": 0, "network": "tiny", "imagenet": False,
             "ssot": "zero"},
}
BETAS = (0.5, 0.999)


def network_config(name: str) -> NetworkConfig:
    return preset_config(name, output_conv=0)


def recipe_of(cfg: NetworkConfig) -> Recipe:
    """cv2 INTER_LINEAR to S x S (the official ``cv2.resize(img / 255., (256, 256))``),
    ImageNet normalisation."""
    return Recipe("cv2-gray", Frame(SQUARE_LINEAR, cfg.size), "imagenet")


def save_weights(path: str | Path, model: RDPP) -> None:
    shared.save_weights(path, model.state_dict(),
                        {**model.cfg.to_json(), "projection": model.has_projection},
                        method=METHOD)


class RDPPTask(OneClassTask):
    def __init__(self, model: RDPP, lr: float, proj_lr: float, accumulate: int,
                 noise: SimplexPseudoAnomaly, weight_proj: float = WEIGHT_PROJ,
                 ssot: str = "geomloss", **kw: Any):
        super().__init__(**kw)
        self.model = model
        self.lr, self.proj_lr, self.accumulate = lr, proj_lr, accumulate
        self.noise, self.weight_proj, self.ssot = noise, weight_proj, ssot

    def configure_optimizers(self) -> Optimization:
        m = self.model
        return Optimization([
            torch.optim.Adam(m.proj.parameters(), lr=self.proj_lr, betas=BETAS),
            torch.optim.Adam(list(m.decoder.parameters()) + list(m.bn.parameters()),
                             lr=self.lr, betas=BETAS)])

    def loss(self, model: torch.nn.Module, batch: Any, gather: Any) -> dict[str, torch.Tensor]:
        net = getattr(model, "module", model)
        x01 = batch.float().div_(255.0).unsqueeze(1).expand(-1, 3, -1, -1)
        noisy = self.noise.apply_batch(x01, rng=None)  # numpy's global state, as the official
        teacher = net.teacher(normalized(x01))
        teacher_noisy = net.teacher(normalized(noisy))
        proj_noisy, proj = net.proj(teacher, features_noise=teacher_noisy)
        student = net.decoder(net.bn(proj))
        return rdpp_loss(teacher, student, teacher_noisy, proj_noisy, proj, self.weight_proj,
                         ssot=self.ssot)

    def export(self, path: Path) -> None:
        save_weights(path, self.model)


def make_task(req: Any, data: Any) -> tuple[RDPPTask, dict[str, Any]]:
    preset = PRESETS[req.preset]
    cfg, imagenet = preset_network(req, preset, output_conv=0)
    settings = {**preset_settings(req, preset), "block": req.option("block") or preset["block"],
                "proj_lr": req.option("proj_lr") or preset["proj_lr"],
                "accumulate": preset["accumulate"], "weight_proj": req.option("weight_proj"),
                "ssot": req.option("ssot") or preset["ssot"],
                "betas": list(BETAS), "network": cfg.to_json(), "imagenet": bool(imagenet)}
    recipe = recipe_of(cfg)
    oc = one_class_data(data, recipe, req.seed, req.option("val_images"))
    seed_everything(req.seed)
    # as the official: the simplex permutation's seed is numpy's first draw after the seed
    noise_seed = int(np.random.randint(-10_000_000_000, 10_000_000_000))
    model = RDPP(cfg)
    weights = load_imagenet(model.encoder) if imagenet else "random init (tiny preset)"
    settings["noise_seed"] = noise_seed
    if req.channels_last:  # the same function in NHWC; files are saved contiguous
        model.to(memory_format=torch.channels_last)
    info = {"model": cfg.to_json(), "image_weights": weights, "frame": recipe.describe(),
            "official_departure": "checkpoint chosen on validation images; the official keeps "
                                  "the epoch with the best test metrics"}
    task = RDPPTask(model, settings["lr"], settings["proj_lr"], settings["accumulate"],
                    SimplexPseudoAnomaly(cfg.size, noise_seed), settings["weight_proj"],
                    settings["ssot"], data=oc, batch_size=settings["batch_size"],
                    block=settings["block"], seed=req.seed, size=cfg.size,
                    workers=req.workers, info=info)
    return task, settings
