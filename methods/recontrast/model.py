"""ReContrast (Guo et al., NeurIPS 2023): a trainable and a frozen copy of the same encoder,
one shared bottleneck and a six-output decoder that cross-reconstructs them.

Both encoders' features go through the bottleneck and decoder in one batch (the trainable half
first). Decoder head 0 on the trainable half reconstructs the *frozen* features; head 1 on the
frozen half reconstructs the *trainable* ones. `forward` gives (encoder features, decoder
features) as six aligned pairs: frozen layers 1-3, then trainable layers 1-3. Submodule names
(`encoder`, `encoder_freeze`, `bottleneck`, `decoder`) are the official module's, so its
``state_dict`` loads as is.

BatchNorm of the trainable encoder: the official scripts choose per dataset whether it trains
(off for OCT and several MVTec classes, on for APTOS and the rest; "chosen empirically"); here
`encoder_bn_train` (off by default, as for OCT, the grey medical images closest to chest X-rays).
The frozen encoder is always in eval mode.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from bench.methods.anomaly.networks import OCBE, Decoder, Encoder, NetworkConfig


class ReContrastNet(nn.Module):
    def __init__(self, cfg: NetworkConfig, encoder_bn_train: bool = False):
        super().__init__()
        if cfg.output_conv != 2:
            raise ValueError("ReContrast's decoder has two output heads (output_conv=2)")
        self.cfg = cfg
        self.encoder_bn_train = bool(encoder_bn_train)
        self.encoder = Encoder(cfg)
        self.encoder_freeze = copy.deepcopy(self.encoder)
        self.encoder_freeze.requires_grad_(False)
        self.bottleneck = OCBE(cfg)
        self.decoder = Decoder(cfg)

    def freeze_copy(self) -> None:
        """Make the frozen encoder a copy of the trainable one (after loading its weights), as
        the official script deep-copies the ImageNet encoder."""
        self.encoder_freeze.load_state_dict(self.encoder.state_dict())

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        en = self.encoder(x)
        with torch.no_grad():
            en_freeze = self.encoder_freeze(x)
        both = [torch.cat([a, b], dim=0) for a, b in zip(en, en_freeze)]
        de = [d.chunk(2, dim=0) for d in self.decoder(self.bottleneck(both))]
        de = [de[0][0], de[1][0], de[2][0], de[3][1], de[4][1], de[5][1]]
        return list(en_freeze) + list(en), de

    def pairs(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return self.forward(x)

    def train(self, mode: bool = True) -> ReContrastNet:
        self.training = mode
        self.encoder.train(mode and self.encoder_bn_train)
        self.encoder_freeze.train(False)
        self.bottleneck.train(mode)
        self.decoder.train(mode)
        return self


def alpha_at(iteration: int, total_iterations: int, start: float = -3.0,
             final: float = 1.0, warm: float = 0.1) -> float:
    """The hard-mining factor's ramp: from `start` to `final` over the first `warm` of the
    iterations, then `final` (official: min(-3 + 4 * it / (0.1 * total), 1))."""
    return min(start + (final - start) * iteration / (total_iterations * warm), final)


def global_cosine_hm(encoder: list[torch.Tensor], decoder: list[torch.Tensor], alpha: float,
                     factor: float = 0.0) -> torch.Tensor:
    """ReContrast's loss over aligned pairs: per pair, the mean over the batch of 1 - cosine of
    the flattened (encoder features, detached; decoder features) maps, summed over pairs. Hard
    mining: the gradient reaching the decoder features is multiplied by `factor` (0: dropped)
    at the locations whose own 1 - cosine is below mean + alpha * std of that pair's distances
    (std with Bessel's correction, as torch's default)."""
    loss = encoder[0].new_zeros((), dtype=torch.float32)
    for a, b in zip(encoder, decoder, strict=True):
        a = a.detach()
        with torch.no_grad():
            dist = 1 - F.cosine_similarity(a, b, dim=1).unsqueeze(1)
            thresh = dist.mean() + alpha * dist.reshape(-1).std()
            keep = torch.where(dist < thresh, torch.full_like(dist, factor),
                               torch.ones_like(dist))
        loss = loss + torch.mean(1 - F.cosine_similarity(a.reshape(a.shape[0], -1),
                                                         b.reshape(b.shape[0], -1), dim=1))
        if b.requires_grad:
            b.register_hook(lambda g, k=keep: g * k)
    return loss


def recontrast_loss(encoder: list[torch.Tensor], decoder: list[torch.Tensor],
                    alpha: float) -> torch.Tensor:
    """Half the hard-mined loss of each branch (frozen targets, trainable targets)."""
    return (global_cosine_hm(encoder[:3], decoder[:3], alpha) / 2
            + global_cosine_hm(encoder[3:], decoder[3:], alpha) / 2)
