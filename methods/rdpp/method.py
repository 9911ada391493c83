"""The ``rdpp`` method: RD++'s anomaly map and image score (query-agnostic).

Weights: ``checkpoint=`` ``bench train rdpp``'s file; the official RD++ checkpoint
(``torch.save({'proj', 'decoder', 'bn'})``; the teacher is the ImageNet WRN50-2, read from the
local torchvision cache); or an anomalib ``ReverseDistillation`` checkpoint (Lightning or the
torch model's state dict), which is plain Reverse Distillation: no projection layers, run and
labelled as such (`checkpoint`). Without one, the checkpoint of ``bench train rdpp --dataset
synthetic-mimic --preset tiny`` where it exists, else the tiny network with RANDOM weights (a
notice says so in run.json).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from bench.imaging.geometry import SQUARE_LINEAR
from bench.methods.anomaly.method import AnomalyMethod, one_class_train_options
from bench.methods.base import Option
from bench.registry import register_method

from .checkpoint import load_model
from .model import RDPP
from .train import PRESETS, make_task, network_config

DESCRIPTION = ("RD++: one-class anomaly detection (frozen WRN50-2 teacher, multi-projection, "
               "OCBE, reverse-distillation student); trained on normal images; one anomaly map "
               "per image (query-agnostic), score = map max")


@register_method("rdpp")
class RDPPMethod(AnomalyMethod):
    """RD++: sum over three scales of 1 - cosine between teacher and student features."""

    description = DESCRIPTION
    frame_kind = SQUARE_LINEAR
    train_presets = tuple(PRESETS)
    train_option_specs: ClassVar[dict[str, Option]] = {
        **one_class_train_options("teacher from ImageNet weights (local torchvision cache; "
                                  "paper: true, tiny: false)", "batches"),
        "proj_lr": Option(None, "learning rate of the projection layers (default 1e-3)", float),
        "weight_proj": Option(0.2, "weight of the projection loss (official 0.2)", float),
        "ssot": Option(None, "SSOT term: geomloss (official; paper preset) or zero (its exact "
                       "value, a divergence of the batch from itself; tiny preset)",
                       choices=("geomloss", "zero")),
    }

    def build(self, checkpoint: str | None, seed: int) -> tuple[torch.nn.Module, dict[str, Any]]:
        if checkpoint:
            return load_model(checkpoint)
        return RDPP(network_config("tiny")), {
            "format": "none", "random_init": True,
            "notice": "no checkpoint: tiny RD++ with RANDOM weights (train one with bench "
                      "train rdpp)"}

    @classmethod
    def train_task(cls, request: Any, data: Any) -> Any:
        return make_task(request, data)
