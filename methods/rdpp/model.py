"""RD++ (Tien et al., CVPR 2023): reverse distillation with multi-projection layers.

A frozen teacher (WRN50-2 layers 1-3, always in eval mode) gives features at three scales; a
projection layer per scale (`projection.MultiProjectionLayer`) filters them, the OCBE bottleneck
fuses the projections, and the student decoder reconstructs the **unprojected** teacher
features, which is what the anomaly map compares. Submodule names (`proj`, `bn`, `decoder`) are
the keys of the official checkpoint (``{'proj', 'decoder', 'bn'}``).

Without projection layers (``proj=None``) this is plain Reverse Distillation (Deng & Li, 2022),
which is what an anomalib ``ReverseDistillation`` checkpoint holds.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.methods.anomaly.networks import OCBE, Decoder, Encoder, NetworkConfig

from .projection import MultiProjectionLayer


class RDPP(nn.Module):
    def __init__(self, cfg: NetworkConfig, projection: bool = True):
        super().__init__()
        if cfg.output_conv != 0:
            raise ValueError("RD++'s decoder has one output per scale (output_conv=0)")
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.encoder.requires_grad_(False)
        self.proj = MultiProjectionLayer(base=cfg.base) if projection else None
        self.bn = OCBE(cfg)
        self.decoder = Decoder(cfg)

    @property
    def has_projection(self) -> bool:
        return self.proj is not None

    def teacher(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder(x)

    def student(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        projected = self.proj(features) if self.proj is not None else features
        return self.decoder(self.bn(projected))

    def pairs(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        t = self.teacher(x)
        return t, self.student(t)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return self.pairs(x)

    def train(self, mode: bool = True) -> RDPP:
        super().train(mode)
        self.encoder.eval()  # the teacher never trains, BatchNorm included
        return self
