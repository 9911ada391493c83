"""AFLoc's checkpoints: the official Lightning release and the harness's own files.

The official release is a PyTorch Lightning checkpoint: ``state_dict`` keys prefixed
``afloc.`` (stripped up to the last occurrence, as ``afloc/builder.py`` does) and an OmegaConf
``hyper_parameters``, read safely by `bench.methods._shared.checkpoints`. The model is rebuilt
from those hyper-parameters and the weight shapes (the BERT architecture is not in them: the
official code fetches it from the Hub by ``bert_type``). ``bench train afloc`` writes the
harness's safetensors format (method "afloc").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bench.errors import CheckpointError
from bench.methods._shared import checkpoints as shared
from bench.methods._shared.encoders import bert_config_from_state

METHOD = "afloc"


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor], config: dict[str, Any],
                 tokenizer_json: str | None) -> None:
    shared.save_weights(path, state_dict, config, tokenizer_json, method=METHOD)


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], str | None]:
    return shared.read_weights(path, METHOD)


def read_official(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict with the ``afloc.`` prefix stripped, hyper_parameters as plain dicts)."""
    return shared.read_lightning(path, "afloc.")


# hyper-parameters that change what the model computes at inference, with the one value this
# implementation follows (afloc/config.yaml); a checkpoint trained otherwise is refused rather
# than run as if it matched
_FIXED_OFFICIAL = {("model", "norm"): False, ("model", "text", "norm"): False,
                   ("model", "text", "aggregate_method"): "sum",
                   ("model", "text", "agg_tokens"): True}


def _refuse_unsupported(hp: dict[str, Any]) -> None:
    for keys, expected in _FIXED_OFFICIAL.items():
        node: Any = hp
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        if node is not None and node != expected:
            raise CheckpointError(
                f"checkpoint hyper_parameters set {'.'.join(keys)}={node!r}; this loader "
                f"implements only the released config's {expected!r}")


def config_from_official(hp: dict[str, Any], state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """AFLocConfig fields from the official hyper_parameters and the weight shapes.

    The BERT architecture is not in the hyper_parameters (the official code fetches it from
    the Hub by ``bert_type``); it is inferred from the embedding and layer shapes.
    """
    _refuse_unsupported(hp)
    model = hp.get("model") or {}
    text = model.get("text") or {}
    af = model.get("afloc") or {}
    data = hp.get("data") or {}
    vision = model.get("vision") or {}
    arch = {"resnet_50": "resnet50", "resnet_18": "resnet18"}.get(
        vision.get("model_name", "resnet_50"), vision.get("model_name", "resnet50"))
    levels = ["report"] if af.get("use_global_report_loss", True) else []
    if af.get("use_local_sent_loss", True):
        levels.append("sentence")
    if af.get("use_local_word_loss", True) or "img_encoder.local2_embedder.weight" in state:
        levels.append("word")
    return {
        "arch": arch, "imagenet_weights": False, "input_size": 299,
        "bert": bert_config_from_state(state),
        "text_encoder": text.get("bert_type"),
        "last_n_layers": int(text.get("last_n_layers", 4)),
        "word_num": int((data.get("text") or {}).get("word_num", 97)),
        "levels": levels,
        "tau1": float(af.get("temp1", 4.0)), "tau2": float(af.get("temp2", 5.0)),
        "tau3": float(af.get("temp3", 10.0)), "text_mode": "faithful", "preset": "official",
    }
