"""RD++ weights: the harness's files and the official and anomalib layouts.

- **The harness's** (``bench train rdpp``): safetensors with method "rdpp" and the
  `NetworkConfig` (plus whether it has projection layers).
- **Official RD++** (``{'proj', 'decoder', 'bn'}``) and **RD** (``{'bn', 'decoder'}``) files:
  the teacher is not in them; it is the ImageNet WRN50-2, read from the local torchvision cache
  (an error names the file when it is absent: a trained student on a random teacher means
  nothing).
- **anomalib** ``ReverseDistillation`` (Lightning checkpoint or the torch model's state dict):
  encoder, bottleneck and decoder are all in the file; no projection layers, so the model is
  plain Reverse Distillation and run.json says so.

The conversion and layout detection are `bench.methods.anomaly.checkpoint`'s; every key that
differs from the model is named (`load_into`, strict).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.errors import CheckpointError
from bench.methods._shared import checkpoints as shared
from bench.methods.anomaly import checkpoint as layouts
from bench.methods.anomaly.networks import NetworkConfig, imagenet_path, load_imagenet

from .model import RDPP

METHOD = "rdpp"


def load_model(path: str | Path) -> tuple[RDPP, dict[str, Any]]:
    """(model, info for run.json) from any layout above."""
    if shared.is_harness_file(path):
        state, config, _ = shared.read_weights(path, METHOD)
        cfg = NetworkConfig.from_json(config)
        model = RDPP(cfg, projection=bool(config.get("projection", True)))
        shared.load_into(model, state, str(path))
        return model, {"format": "bench train rdpp", "projection": model.has_projection}
    conv = layouts.load_checkpoint(path)
    if conv.layout == "recontrast":
        raise CheckpointError(f"{path}: a ReContrast checkpoint; load it with method "
                              f"'recontrast'")
    cfg = NetworkConfig.from_json({**conv.config.to_json(), "output_conv": 0})
    model = RDPP(cfg, projection=conv.has_proj)
    notes = list(conv.notes)
    if not conv.has_encoder:
        weights = load_imagenet(model.encoder)
        if weights.startswith("random init"):
            raise CheckpointError(f"{path}: the {conv.description} holds no teacher; it is "
                                  f"the ImageNet WRN50-2 ({imagenet_path()}), which is not "
                                  f"here ({weights})")
        notes.append(f"teacher: {weights}")
        state = {**{f"encoder.{k}": v for k, v in model.encoder.state_dict().items()},
                 **conv.state}
    else:
        state = conv.state
    shared.load_into(model, state, str(path))
    kind = "RD++" if conv.has_proj else "plain Reverse Distillation (no projection layers)"
    return model, {"format": conv.layout, "layout": conv.description, "model": kind,
                   "projection": conv.has_proj, "notes": notes}
