"""RD++'s multiscale projection layer (official ``utils_train.MultiProjectionLayer``).

RD++ inserts a small trainable projection between the frozen teacher and the student: each of
the teacher's three feature maps goes through its own bottleneck of four 3x3 convolutions
(c -> c/2 -> c/4 -> c/2 -> c), each followed by a parameter-free InstanceNorm2d and a
LeakyReLU. The module and attribute names (``proj_a/b/c``, ``proj`` as an ``nn.Sequential``)
are kept so that a state dict saved by the official code (``checkpoint['proj']``) loads here
unchanged; InstanceNorm2d's default ``affine=False`` contributes no keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ProjLayer(nn.Module):
    """One scale's bottleneck; keys ``proj.{0,3,6,9}.{weight,bias}`` as in the official code."""

    def __init__(self, in_c: int, out_c: int):
        super().__init__()
        widths = [in_c, in_c // 2, in_c // 4, in_c // 2, out_c]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(c_in, c_out, kernel_size=3, stride=1, padding=1),
                       nn.InstanceNorm2d(c_out), nn.LeakyReLU()]
        self.proj = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class MultiProjectionLayer(nn.Module):
    """Projections of the teacher's 4*base, 8*base and 16*base channel maps (base=64 for the
    wide ResNet-50 teacher of the paper)."""

    def __init__(self, base: int = 64):
        super().__init__()
        self.proj_a = ProjLayer(base * 4, base * 4)
        self.proj_b = ProjLayer(base * 8, base * 8)
        self.proj_c = ProjLayer(base * 16, base * 16)

    def _project(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != 3:
            raise ValueError(f"expected 3 feature maps, got {len(features)}")
        return [self.proj_a(features[0]), self.proj_b(features[1]), self.proj_c(features[2])]

    def forward(self, features: Sequence[torch.Tensor],
                features_noise: Sequence[torch.Tensor] | None = None):
        """The projected clean maps; with ``features_noise`` (teacher maps of the
        pseudo-anomalous images) the pair ``(projected noise maps, projected clean maps)``,
        in that order, which is what the official training step unpacks."""
        if features_noise is None:
            return self._project(features)
        return self._project(features_noise), self._project(features)
