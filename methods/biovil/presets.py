"""BioViL's model presets.

``paper``: the released architecture: torchvision ResNet-50 (ImageNet weights from the local
torchvision cache when present) with the 1x1-conv projector to 128, CXR-BERT
(``microsoft/BiomedVLP-CXR-BERT-specialized`` or any CXR-BERT folder, offline) with its
projection head, the official input (min-max uint8, Resize 512, CenterCrop 480, no
normalisation); training reports truncated at 512 tokens (CXR-BERT's positions).
``tiny``: the encoders and budget of AFLoc's and ConVIRT's tiny presets, so they compare on equal
terms: the small ResNet (one BasicBlock per stage, widths 16-128, random init), a 4-layer BERT
of width 64 from scratch (no dropout) with a WordPiece vocabulary built from the training
reports, both heads kept (MLM head and projection head), joint size 64, input Resize 256 +
CenterCrop 224, reports truncated at 128 tokens.
"""

from __future__ import annotations

from typing import Any

from bench.methods._shared.encoders import SMALL_WIDTHS, TINY_BERT

from .checkpoint import TEXT_REPO
from .model import BioViLConfig

PRESETS = ("paper", "tiny")
DEFAULT_TEXT_ENCODER = TEXT_REPO
TINY_JOINT = 64


def preset_config(preset: str, **overrides: Any) -> BioViLConfig:
    """The config of a preset; `text_config` of ``paper`` is filled from the CXR-BERT folder."""
    if preset == "paper":
        cfg = BioViLConfig(arch="resnet50", imagenet_weights=True, joint_dim=128,
                           text_config={}, text_encoder=DEFAULT_TEXT_ENCODER, resize=512,
                           crop=480, max_length=512, preset="paper")
    elif preset == "tiny":
        cfg = BioViLConfig(arch="small", small_widths=SMALL_WIDTHS, imagenet_weights=False,
                           joint_dim=TINY_JOINT,
                           text_config={**TINY_BERT, "projection_size": TINY_JOINT},
                           text_encoder=None, resize=256, crop=224, max_length=128,
                           preset="tiny")
    else:
        raise ValueError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg
