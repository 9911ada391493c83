"""The ``recontrast`` method: ReContrast's anomaly map and image score (query-agnostic).

Weights: ``checkpoint=`` ``bench train recontrast``'s file, or a ``ReContrast`` module's state
dict (the official repository saves none; its module's ``state_dict()``, bare or under
``state_dict`` / ``model``, ``module.`` stripped; `checkpoint`). Without one, the checkpoint of
``bench train recontrast --dataset synthetic-mimic --preset tiny`` where it exists, else the
tiny network with RANDOM weights (a notice says so in run.json).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from bench.imaging.geometry import RESIZE
from bench.methods.anomaly.method import AnomalyMethod, one_class_train_options
from bench.methods.base import Option, parse_bool
from bench.registry import register_method

from .checkpoint import load_model
from .model import ReContrastNet
from .train import PRESETS, make_task, network_config

DESCRIPTION = ("ReContrast: one-class anomaly detection (trainable + frozen WRN50-2, "
               "cross-reconstruction); trained on normal images; one anomaly map per image "
               "(query-agnostic), score = map max")


@register_method("recontrast")
class ReContrastMethod(AnomalyMethod):
    """ReContrast: sum over six cross-reconstruction pairs of 1 - cosine."""

    description = DESCRIPTION
    frame_kind = RESIZE
    train_presets = tuple(PRESETS)
    train_option_specs: ClassVar[dict[str, Option]] = {
        **one_class_train_options("start from ImageNet weights (local torchvision cache; "
                                  "paper: true, tiny: false)", "iterations"),
        "encoder_lr": Option(None, "learning rate of the trainable encoder (default 1e-5)",
                             float),
        "encoder_bn_train": Option(False, "train the encoder's BatchNorm (official: off for "
                                   "OCT, on for APTOS)", parse_bool),
    }

    def build(self, checkpoint: str | None, seed: int) -> tuple[torch.nn.Module, dict[str, Any]]:
        if checkpoint:
            return load_model(checkpoint)
        model = ReContrastNet(network_config("tiny"))
        model.freeze_copy()
        return model, {"format": "none", "random_init": True,
                       "notice": "no checkpoint: tiny ReContrast with RANDOM weights (train "
                                 "one with bench train recontrast)"}

    @classmethod
    def train_task(cls, request: Any, data: Any) -> Any:
        return make_task(request, data)
