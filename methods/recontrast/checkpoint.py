"""ReContrast weights: the harness's files and a ``ReContrast`` module's state dict.

- **The harness's** (``bench train recontrast``): safetensors with method "recontrast", the
  `NetworkConfig` and ``encoder_bn_train``.
- **A ReContrast state dict** (``encoder.``, ``encoder_freeze.``, ``bottleneck.``,
  ``decoder.`` with the six ``out`` convs): the official repository saves none, so this is what
  ``torch.save(model.state_dict())`` of its module gives, bare or under ``state_dict`` /
  ``model``, ``module.`` stripped (`bench.methods.anomaly.checkpoint`). Loaded strictly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.errors import CheckpointError
from bench.methods._shared import checkpoints as shared
from bench.methods.anomaly import checkpoint as layouts
from bench.methods.anomaly.networks import NetworkConfig

from .model import ReContrastNet

METHOD = "recontrast"


def load_model(path: str | Path) -> tuple[ReContrastNet, dict[str, Any]]:
    if shared.is_harness_file(path):
        state, config, _ = shared.read_weights(path, METHOD)
        model = ReContrastNet(NetworkConfig.from_json(config),
                              bool(config.get("encoder_bn_train", False)))
        shared.load_into(model, state, str(path))
        return model, {"format": "bench train recontrast"}
    conv = layouts.load_checkpoint(path)
    if conv.layout != "recontrast":
        raise CheckpointError(f"{path}: a {conv.description}, not ReContrast; load it with "
                              f"method 'rdpp'")
    model = ReContrastNet(conv.config)
    shared.load_into(model, conv.state, str(path))
    return model, {"format": conv.layout, "layout": conv.description,
                   "notes": list(conv.notes)}
