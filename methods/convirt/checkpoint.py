"""ConVIRT's checkpoints: ViLMedic's ``selfsup/convirt-mimic`` release and the harness's files.

ViLMedic's model zoo (``vilmedic/zoo/modeling_auto.py``) ships one ``*.pth`` per model: a
``torch.save`` dict whose ``"model"`` entry is the state dict, loaded with ``strict=True``; its
trainer (``executors/trainor.py``) also saves ``"config"`` (an OmegaConf container) and training
state there. It is read here with ``torch.load(weights_only=True)`` and the platform's inert
stand-ins (`bench.methods._shared.checkpoints`), so a file that would run code, or that pickles
any other object, is refused with the global it names. A file holding the bare state dict (e.g.
``torch.save(ckpt["model"], ...)``) is accepted too.

Key layout: see `model`. ViLMedic's visual wrapper held the backbone as ``cnn`` until
2023-09-28 (``CNN.cnn``, ``VisualEncoder.cnn``; renamed ``model`` in commit de7ed39), and the
convirt-mimic zoo entry dates from 2021-12-21, so its file may say ``visual.cnn.N``; those keys
are read as ``visual.model.N`` (the same modules). Nothing else is renamed: any other missing,
unexpected or mis-shaped key is an error naming it (``embeddings.position_ids``, a buffer that
the transformers of 2021 saved, is tolerated).

``bench train convirt`` writes the harness's safetensors format (method "convirt").
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from bench.errors import CheckpointError
from bench.methods._shared import checkpoints as shared

METHOD = "convirt"
OFFICIAL_TEXT_ENCODER = "allenai/biomed_roberta_base"
VISUAL = "visual.model."
LEGACY_VISUAL = "visual.cnn."


def save_weights(path: str | Path, state_dict: Mapping[str, torch.Tensor],
                 config: dict[str, Any], tokenizer_json: str | None) -> None:
    shared.save_weights(path, state_dict, config, tokenizer_json, method=METHOD)


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], str | None]:
    return shared.read_weights(path, METHOD)


def read_official(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a ViLMedic ``.pth`` (its ``"model"`` entry, or the file itself when it
    is a bare state dict), with ``visual.cnn.`` keys read as ``visual.model.``."""
    obj = shared.safe_torch_load(path)
    if isinstance(obj, Mapping) and "model" in obj:
        state = shared.tensors_only(obj["model"], str(path), "the 'model' entry")
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor)
                                                  for v in obj.values()):
        state = dict(obj)
    else:
        keys = ", ".join(map(repr, list(obj)[:5])) if isinstance(obj, Mapping) else ""
        raise CheckpointError(f"{path}: not a ViLMedic checkpoint: no 'model' state dict "
                              f"(top-level entries: {keys or type(obj).__name__})")
    return legacy_visual_keys(state, str(path))


def legacy_visual_keys(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """``visual.cnn.N...`` -> ``visual.model.N...`` (a file with both is refused)."""
    legacy = [k for k in state if k.startswith(LEGACY_VISUAL)]
    if not legacy:
        return state
    if any(k.startswith(VISUAL) for k in state):
        raise CheckpointError(f"{source}: checkpoint holds both {VISUAL}* and {LEGACY_VISUAL}* "
                              f"keys (e.g. {legacy[0]})")
    return {(VISUAL + k[len(LEGACY_VISUAL):] if k.startswith(LEGACY_VISUAL) else k): v
            for k, v in state.items()}


def load_text_config(source: str) -> Any:
    """The Hugging Face config of a text encoder, from a local folder or the offline cache."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source, local_files_only=True, trust_remote_code=False)
    except Exception as exc:
        raise CheckpointError(
            f"text encoder {source!r} is not available offline: pass text_encoder=<local folder "
            f"with its config.json and tokenizer files> (for ViLMedic's convirt-mimic: "
            f"{OFFICIAL_TEXT_ENCODER}), or put it in the Hugging Face cache "
            f"({type(exc).__name__})") from exc


def text_kind_of(config: Any) -> str:
    kind = getattr(config, "model_type", None)
    if kind not in ("roberta", "bert"):
        raise CheckpointError(f"text encoder of type {kind!r}: ConVIRT here runs a RoBERTa "
                              f"(ViLMedic's release) or a BERT (the tiny preset)")
    return kind
