"""GLoRIA's checkpoints: the released Lightning files and the harness's own.

The releases (``chexpert_resnet50.ckpt``, ``chexpert_resnet18.ckpt``) are PyTorch Lightning
checkpoints: ``state_dict`` keys prefixed ``gloria.`` (stripped up to the last occurrence, as
``load_gloria`` does) and an OmegaConf ``hyper_parameters``, read safely by
`bench.methods._shared.checkpoints`. ``load_gloria`` loads strictly; the one key newer
transformers no longer keep, ``embeddings.position_ids``, is tolerated. The model is rebuilt
from the hyper-parameters and the weight shapes (the BERT architecture is not in them: the
official code fetched it from the Hub by ``bert_type``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bench.errors import CheckpointError
from bench.methods._shared import checkpoints as shared
from bench.methods._shared.encoders import bert_config_from_state

METHOD = "gloria"
ARCHS = {"resnet_50": "resnet50", "resnet_18": "resnet18"}
# hyper-parameters that change what the model computes, with the released config's value;
# a checkpoint trained otherwise is refused rather than run as if it matched
_FIXED = {("model", "norm"): False, ("model", "text", "norm"): False,
          ("model", "text", "aggregate_method"): "sum", ("model", "text", "agg_tokens"): True}


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor], config: dict[str, Any],
                 tokenizer_json: str | None) -> None:
    shared.save_weights(path, state_dict, config, tokenizer_json, method=METHOD)


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], str | None]:
    return shared.read_weights(path, METHOD)


def read_official(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict with the ``gloria.`` prefix stripped, hyper_parameters as plain dicts)."""
    return shared.read_lightning(path, "gloria.")


def _get(hp: dict[str, Any], *keys: str) -> Any:
    node: Any = hp
    for k in keys:
        node = node.get(k) if isinstance(node, dict) else None
    return node


def config_from_official(hp: dict[str, Any], state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """GLoRIAConfig fields from the released hyper_parameters and the weight shapes."""
    for keys, expected in _FIXED.items():
        value = _get(hp, *keys)
        if value is not None and value != expected:
            raise CheckpointError(f"checkpoint hyper_parameters set {'.'.join(keys)}={value!r}; "
                                  f"this loader implements only the released config's "
                                  f"{expected!r}")
    name = _get(hp, "model", "vision", "model_name") or "resnet_50"
    if name not in ARCHS:
        raise CheckpointError(f"checkpoint backbone {name!r} is not one GLoRIA released "
                              f"({', '.join(ARCHS)})")
    if "img_encoder.local_embedder.weight" not in state:
        raise CheckpointError("checkpoint has no img_encoder.local_embedder.weight: not a "
                              "GLoRIA pretraining checkpoint")
    bert = bert_config_from_state(state)
    dim = _get(hp, "model", "text", "embedding_dim")
    if dim is not None and int(dim) != bert["hidden_size"]:
        raise CheckpointError(f"checkpoint embedding_dim {dim} differs from its BERT width "
                              f"{bert['hidden_size']} (GLoRIA has no text projection)")
    gl = _get(hp, "model", "gloria") or {}
    return {
        "arch": ARCHS[name], "imagenet_weights": False, "input_size": 299,
        "interm_channels": int(state["img_encoder.local_embedder.weight"].shape[1]),
        "bert": bert, "text_encoder": _get(hp, "model", "text", "bert_type"),
        "last_n_layers": int(_get(hp, "model", "text", "last_n_layers") or 4),
        "word_num": int(_get(hp, "data", "text", "word_num") or 97),
        "tau1": float(gl.get("temp1", 4.0)), "tau2": float(gl.get("temp2", 5.0)),
        "tau3": float(gl.get("temp3", 10.0)),
        "local_weight": float(gl.get("local_loss_weight", 1.0)),
        "global_weight": float(gl.get("global_loss_weight", 1.0)),
        "text_mode": "faithful", "preset": "official",
    }
