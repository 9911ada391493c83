"""The networks RD++ and ReContrast share: a WRN-style encoder, the one-class bottleneck
embedding (OCBE) and the reverse decoder.

Both methods build on Reverse Distillation (Deng & Li, CVPR 2022): a frozen (RD++) or partly
trained (ReContrast) ImageNet Wide-ResNet-50-2 encoder gives the features of layer1-3, the OCBE
fuses them into one low-resolution embedding, and a decoder that mirrors the encoder, upsampling
with 2x2 transposed convolutions, reconstructs the three feature maps. The paper's sizes are
`PAPER` (256 px input, stage planes 64/128/256, bottleneck width 2x as in ``wide_resnet50_2``);
`TINY` keeps the same structure at CPU scale.

Key names follow the official code, so its state dicts load without renaming:

- `Encoder`: torchvision's ResNet names (``conv1``, ``bn1``, ``layer1``-``layer3``, built from
  torchvision's own ``Bottleneck``); no ``layer4``/``fc`` (ReContrast sets them to None, RD++
  computes ``layer4`` and discards it). With `PAPER` it is ``wide_resnet50_2`` without those.
- `OCBE`: the official ``BN_layer`` (``conv1``-``conv3``/``bn1``-``bn3`` for the two shallow
  features, ``bn_layer.N`` residual blocks on their concatenation, and ``conv4``/``bn4``, which
  the official class creates but never uses; kept so official files load strictly). RD++ builds
  it from ``AttnBottleneck``, ReContrast and anomalib from ``Bottleneck``; the two classes have
  the same parameters and the same forward (RD++'s ``attention`` flag is stored and never read),
  so torchvision's ``Bottleneck`` serves both.
- `Decoder`: the official ``de_wide_resnet50_2`` (``layer1``-``layer3`` of `DecoderBottleneck`,
  ``upsample`` on the first block of each stage). It returns the shallowest, largest feature
  first, ``[layer3, layer2, layer1]`` outputs, matching the encoder's ``[layer1, layer2,
  layer3]``. With ``output_conv = k > 0`` (ReContrast: 2) it adds 1x1 convolutions ``out1``,
  ``out2``, ``out3`` (``nn.ModuleList`` of k each, with bias) and returns ``3k`` maps in the
  official order ``out1[i](f1), out2[i](f2), out3[i](f3)`` for ``i`` in ``range(k)``, where
  ``f1`` is the largest map.

Initialisation is the official one: ``kaiming_normal_(mode="fan_out", nonlinearity="relu")`` for
every ``nn.Conv2d`` weight, BatchNorm weight 1 and bias 0; transposed convolutions and conv
biases keep PyTorch's defaults (the official loops only touch ``nn.Conv2d`` and norms).

Channels with ``base = b``: encoder features ``4b, 8b, 16b`` at ``size/4, size/8, size/16``; the
OCBE embedding ``32b`` at ``size/32``. A bottleneck block with ``planes`` channels has inner width
``int(planes * width_per_group / 64)``, torchvision's rule (64 -> ResNet-50, 128 -> WRN-50-2).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torchvision.models.resnet import Bottleneck, conv1x1, conv3x3

EXPANSION = Bottleneck.expansion  # 4
# the file torchvision (and the official model_urls) name for wide_resnet50_2's ImageNet weights
IMAGENET_FILE = "wide_resnet50_2-95faca4d.pth"


@dataclass
class NetworkConfig:
    """Sizes of the encoder, OCBE and decoder (the official ones by default)."""

    base: int = 64  # stem width and stage-1 planes; stages use base, 2 base, 4 base planes
    width_per_group: int = 128  # bottleneck inner width per 64 planes (128: "wide")
    encoder_blocks: tuple[int, int, int] = (3, 4, 6)
    decoder_blocks: tuple[int, int, int] = (3, 4, 6)  # decoder layer1 (deepest), layer2, layer3
    ocbe_blocks: int = 3
    # the OCBE's own width_per_group where it differs (anomalib's OCBE is built without the
    # backbone's width: 64 under a wide_resnet50_2); None: width_per_group
    ocbe_width_per_group: int | None = None
    output_conv: int = 0  # 1x1 output convs per decoder stage: 0 RD/RD++, 2 ReContrast
    size: int = 256  # input side in pixels

    def __post_init__(self) -> None:
        self.encoder_blocks = tuple(int(n) for n in self.encoder_blocks)  # type: ignore
        self.decoder_blocks = tuple(int(n) for n in self.decoder_blocks)  # type: ignore
        for name in ("encoder_blocks", "decoder_blocks"):
            blocks = getattr(self, name)
            if len(blocks) != 3 or min(blocks) < 1:
                raise ValueError(f"{name} must be 3 positive block counts, got {blocks}")
        for name in ("base", "width_per_group", "ocbe_blocks", "size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.ocbe_width_per_group is not None and self.ocbe_width_per_group < 1:
            raise ValueError(f"ocbe_width_per_group must be positive or None, got "
                             f"{self.ocbe_width_per_group}")
        if self.output_conv < 0:
            raise ValueError(f"output_conv must be >= 0, got {self.output_conv}")
        if self.size % 32:
            raise ValueError(f"size must be a multiple of 32 (the OCBE embedding is size/32 "
                             f"and the decoder upsamples it back), got {self.size}")

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> NetworkConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @property
    def ocbe_width(self) -> int:
        """The OCBE blocks' width_per_group."""
        return self.width_per_group if self.ocbe_width_per_group is None \
            else self.ocbe_width_per_group

    @property
    def planes(self) -> tuple[int, int, int]:
        b = self.base
        return (b, 2 * b, 4 * b)

    @property
    def channels(self) -> tuple[int, int, int]:
        """Channels of the encoder's (and the decoder's) three feature maps, largest first."""
        return tuple(p * EXPANSION for p in self.planes)  # type: ignore[return-value]

    @property
    def embedding_channels(self) -> int:
        return 8 * self.base * EXPANSION

    @property
    def grids(self) -> tuple[int, int, int]:
        """Side of the three feature maps, largest first."""
        return (self.size // 4, self.size // 8, self.size // 16)


PAPER = NetworkConfig()
# CPU scale: same structure; one block per stage, planes 16/32/64, inner width = planes / 2
TINY = NetworkConfig(base=16, width_per_group=32, encoder_blocks=(1, 1, 1),
                     decoder_blocks=(1, 1, 1), ocbe_blocks=1, size=128)


def init_official(module: nn.Module) -> None:
    """The official initialisation loop (what torchvision's ResNet and RD's classes run)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


def _stage(inplanes: int, planes: int, blocks: int, stride: int, width_per_group: int,
           first_inplanes: int | None = None) -> nn.Sequential:
    """torchvision's ``ResNet._make_layer`` for ``Bottleneck`` (groups 1, no dilation); the
    OCBE's first block reads `first_inplanes` (the concatenation) instead of `inplanes`."""
    first = inplanes if first_inplanes is None else first_inplanes
    out = planes * EXPANSION
    down = None
    if stride != 1 or inplanes != out:
        down = nn.Sequential(conv1x1(first, out, stride), nn.BatchNorm2d(out))
    layers = [Bottleneck(first, planes, stride, down, 1, width_per_group)]
    layers += [Bottleneck(out, planes, base_width=width_per_group) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """WRN-style ResNet up to layer3; forward gives [layer1, layer2, layer3] features."""

    def __init__(self, cfg: NetworkConfig = PAPER) -> None:
        super().__init__()
        self.cfg = cfg
        b = cfg.base
        self.conv1 = nn.Conv2d(3, b, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(b)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = b
        for i, (planes, n) in enumerate(zip(cfg.planes, cfg.encoder_blocks)):
            self.add_module(f"layer{i + 1}", _stage(inplanes, planes, n, 1 if i == 0 else 2,
                                                    cfg.width_per_group))
            inplanes = planes * EXPANSION
        init_official(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        return [f1, f2, f3]


def imagenet_path() -> Path:
    """Where torchvision keeps wide_resnet50_2's ImageNet (IMAGENET1K_V1) weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILE


def load_imagenet(encoder: Encoder, path: str | Path | None = None) -> str:
    """Load ImageNet weights into `encoder` from the local torch hub cache (never downloads),
    or from `path`; strict apart from ``layer4.*``/``fc.*``, which are dropped. Returns a note
    saying what was loaded, or why the encoder stays randomly initialised."""
    from bench.methods._shared import checkpoints as shared

    if path is None:
        cfg = encoder.cfg
        paper = (cfg.base, cfg.width_per_group, cfg.encoder_blocks) == \
            (PAPER.base, PAPER.width_per_group, PAPER.encoder_blocks)
        if not paper:
            return (f"random init: ImageNet weights exist only for the paper encoder "
                    f"(wide_resnet50_2), not base {cfg.base}, width_per_group "
                    f"{cfg.width_per_group}, blocks {cfg.encoder_blocks}")
        path = imagenet_path()
    p = Path(path)
    if not p.is_file():
        return f"random init: ImageNet weights {p.name} not found in {p.parent}"
    state = shared.tensors_only(shared.safe_torch_load(p), str(p))
    dropped = {k for k in state if k.startswith(("layer4.", "fc."))}
    state = {k: v for k, v in state.items() if k not in dropped}
    shared.load_into(encoder, state, str(p), strict=True)
    return f"ImageNet {p.name} (layer1-3; {len(dropped)} layer4/fc tensors not used)"


class OCBE(nn.Module):
    """One-class bottleneck embedding (the official ``BN_layer``): forward([f1, f2, f3]) -> the
    embedding, ``32 * base`` channels at size/32 (half of f3's side)."""

    def __init__(self, cfg: NetworkConfig = PAPER) -> None:
        super().__init__()
        self.cfg = cfg
        c1, c2, c3 = cfg.channels
        self.bn_layer = _stage(c3, 2 * cfg.planes[2], cfg.ocbe_blocks, 2, cfg.ocbe_width,
                               first_inplanes=3 * c3)
        self.conv1 = conv3x3(c1, c2, 2)
        self.bn1 = nn.BatchNorm2d(c2)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(c2, c3, 2)
        self.bn2 = nn.BatchNorm2d(c3)
        self.conv3 = conv3x3(c2, c3, 2)
        self.bn3 = nn.BatchNorm2d(c3)
        # created, never used in forward, by the official class (saved in its files)
        self.conv4 = conv1x1(2 * cfg.embedding_channels, cfg.embedding_channels, 1)
        self.bn4 = nn.BatchNorm2d(cfg.embedding_channels)
        init_official(self)

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        a = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x[0]))))))
        b = self.relu(self.bn3(self.conv3(x[1])))
        return self.bn_layer(torch.cat([a, b, x[2]], 1)).contiguous()


class DecoderBottleneck(nn.Module):
    """The official decoder block: a Bottleneck whose 3x3 conv is a 2x2 stride-2 transposed
    conv when it upsamples, and whose shortcut ``upsample`` does the same."""

    expansion = EXPANSION

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 upsample: nn.Module | None = None, width_per_group: int = 64) -> None:
        super().__init__()
        width = int(planes * (width_per_group / 64.0))
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        if stride == 2:
            self.conv2: nn.Module = nn.ConvTranspose2d(width, width, kernel_size=2, stride=2,
                                                       bias=False)
        else:
            self.conv2 = conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * EXPANSION)
        self.bn3 = nn.BatchNorm2d(planes * EXPANSION)
        self.relu = nn.ReLU(inplace=True)
        self.upsample = upsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.upsample is None else self.upsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class Decoder(nn.Module):
    """The official reverse decoder (``de_wide_resnet50_2``, ReContrast's ``output_conv``)."""

    def __init__(self, cfg: NetworkConfig = PAPER) -> None:
        super().__init__()
        self.cfg = cfg
        inplanes = cfg.embedding_channels
        for i, (planes, n) in enumerate(zip(reversed(cfg.planes), cfg.decoder_blocks)):
            out = planes * EXPANSION
            up = nn.Sequential(nn.ConvTranspose2d(inplanes, out, kernel_size=2, stride=2,
                                                  bias=False), nn.BatchNorm2d(out))
            blocks = [DecoderBottleneck(inplanes, planes, 2, up, cfg.width_per_group)]
            blocks += [DecoderBottleneck(out, planes, width_per_group=cfg.width_per_group)
                       for _ in range(1, n)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = out
        self.output_conv = cfg.output_conv
        if cfg.output_conv > 0:
            c1, c2, c3 = cfg.channels
            self.out1 = nn.ModuleList(nn.Conv2d(c1, c1, 1) for _ in range(cfg.output_conv))
            self.out2 = nn.ModuleList(nn.Conv2d(c2, c2, 1) for _ in range(cfg.output_conv))
            self.out3 = nn.ModuleList(nn.Conv2d(c3, c3, 1) for _ in range(cfg.output_conv))
        init_official(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f3 = self.layer1(x)
        f2 = self.layer2(f3)
        f1 = self.layer3(f2)
        if self.output_conv == 0:
            return [f1, f2, f3]
        out: list[torch.Tensor] = []
        for i in range(self.output_conv):
            out += [self.out1[i](f1), self.out2[i](f2), self.out3[i](f3)]
        return out
