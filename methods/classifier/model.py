"""The multi-label classifier: a torchvision backbone with a linear head over P pathologies.

Architectures: ``densenet121`` (CheXlocalize's main one), ``resnet50``, ``resnet152`` and
``densenet-tiny`` (a torchvision DenseNet with 4 blocks of 2 layers, growth 16: the tiny CPU
preset; the same module names, so hooks and loaders treat it as the DenseNet-121).

The state dict keeps **torchvision's layout** (``features.*`` + ``classifier.*`` for a DenseNet,
``conv1.* ... layer4.* fc.*`` for a ResNet), so a torchvision-layout checkpoint loads as is.
The one change from torchvision's forward is the DenseNet's last ReLU: torchvision applies
``F.relu(features, inplace=True)`` in ``forward``, which overwrites the output of ``norm5`` in
place. A CAM hooked on ``norm5`` then keeps post-ReLU activations on the CPU (where
``.cpu()`` is the same storage) and pre-ReLU ones on a GPU (where it is a copy). Here that ReLU
is a module of its own, ``final_relu``, not in place, and the CAMs hook its output: the
rectified features the head pools, the same on every device. It has no weights, so the state
dict is unchanged.

Logits come out (no sigmoid): the CAM targets are the logits (`bench.methods.cam`).
torchxrayvision's DenseNet takes one channel scaled to [-1024, 1024]; ``input_kind="xrv"``
turns the harness's [0, 1] grey tensor into that inside `forward`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn

ARCHS = ("densenet121", "resnet50", "resnet152", "densenet-tiny")
TINY_DENSENET = {"growth_rate": 16, "block_config": (2, 2, 2, 2), "num_init_features": 24,
                 "bn_size": 2}
INPUT_KINDS = ("rgb", "xrv")


@dataclass
class ClassifierConfig:
    arch: str = "densenet121"
    pathologies: list[str] = field(default_factory=list)
    size: int = 320
    frame: str = "square"  # bench.imaging.geometry kind: square (CheXlocalize), short_side_crop
    normalize: str = "imagenet"  # bench.imaging.recipes NORMALIZATIONS
    input_kind: str = "rgb"  # rgb: 3 channels as normalised; xrv: 1 channel in [-1024, 1024]
    imagenet_weights: bool = True
    uncertainty: str | None = None  # the policy it was trained with (None: not trained here)
    preset: str | None = None
    source: str = "bench train classifier"

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ClassifierConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @property
    def family(self) -> str:
        return "densenet" if self.arch.startswith("densenet") else "resnet"


def _backbone(cfg: ClassifierConfig, in_channels: int) -> tuple[nn.Module, str]:
    import torchvision

    from bench.methods._shared.encoders import load_imagenet

    if cfg.arch not in ARCHS:
        raise ValueError(f"unknown classifier architecture {cfg.arch!r} (known: "
                         f"{', '.join(ARCHS)})")
    if cfg.arch == "densenet-tiny":
        net = torchvision.models.DenseNet(**TINY_DENSENET)
        note = "random init (tiny DenseNet)"
    else:
        net = getattr(torchvision.models, cfg.arch)(weights=None)
        note = load_imagenet(net, cfg.arch) if cfg.imagenet_weights else "random init"
    if in_channels != 3:  # torchxrayvision's one-channel stem
        old = net.features.conv0
        net.features.conv0 = nn.Conv2d(in_channels, old.out_channels, 7, 2, 3, bias=False)
    return net, note


class Classifier(nn.Module):
    """Backbone + linear head; `forward` gives logits [N, P]."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        if not cfg.pathologies:
            raise ValueError("a classifier needs at least one pathology")
        if cfg.input_kind not in INPUT_KINDS:
            raise ValueError(f"input_kind must be one of {INPUT_KINDS}")
        self.cfg = cfg
        net, self.weights_note = _backbone(cfg, 1 if cfg.input_kind == "xrv" else 3)
        n = len(cfg.pathologies)
        if cfg.family == "densenet":
            self.features = net.features
            self.final_relu = nn.ReLU(inplace=False)
            self.classifier = nn.Linear(net.classifier.in_features, n)
        else:
            for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3",
                         "layer4"):
                setattr(self, name, getattr(net, name))
            self.fc = nn.Linear(net.fc.in_features, n)

    def head(self) -> nn.Linear:
        return self.classifier if self.cfg.family == "densenet" else self.fc

    def target_layer(self) -> nn.Module:
        """The module whose output the CAMs read: the DenseNet's rectified final features
        (``final_relu``), a ResNet's last bottleneck."""
        return self.final_relu if self.cfg.family == "densenet" else self.layer4[-1]

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.input_kind == "xrv":  # [0, 1] grey ("unit") -> torchxrayvision's scale
            return x[:, :1] * 2048.0 - 1024.0
        return x

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prepare_input(x)
        if self.cfg.family == "densenet":
            return self.final_relu(self.features(x))
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head()(self.feature_map(x).mean((2, 3)))
