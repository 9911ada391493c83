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
convirt-mimic zoo entry dates from 2021-12-27 (commit f70e16c), so its file may say
``visual.cnn.N``; those keys are read as ``visual.model.N`` (the same modules). Nothing else is
renamed: any other missing, unexpected or mis-shaped key is an error naming it
(``embeddings.position_ids``, a buffer that the transformers of 2021 saved, is tolerated).

The zoo folder also holds the ``config.yml`` the weights were trained with; its text settings
(``dataset.seq.processing``, ``tokenizer_max_len``) are read from beside the ``.pth`` where it
is (`zoo_text_settings`). Without it, the text is read as the config of the day the zoo entry
was added (no ``processing``: R2Gen's cleaning entered the config on 2022-01-22, dc7215e), 128
tokens.

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


def tokenizer_from_saved(tokenizer_json: str, text_kind: str) -> Any:
    """The tokenizer a harness checkpoint carries: the tiny preset's WordPiece (a BERT
    tokenizer), or the paper preset's RoBERTa byte-level BPE with RoBERTa's special tokens."""
    from bench.methods._shared.encoders import tokenizer_from_json

    if text_kind == "bert":
        return tokenizer_from_json(tokenizer_json)
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(tokenizer_json),
                                   bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", cls_token="<s>", sep_token="</s>",
                                   mask_token="<mask>")


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


ZOO_CONFIG = "config.yml"
# ViLMedic's `processing` names -> the harness's text cleaning
PROCESSING = {"r2gen_clean_report": "r2gen", None: "none"}


def zoo_text_settings(path: str | Path) -> tuple[dict[str, Any], str]:
    """({"text_clean", "max_length"}, where they came from) for a ViLMedic ``.pth``: its zoo
    folder's ``config.yml`` where present, else the config of the zoo entry's day."""
    cfg_path = Path(path).with_name(ZOO_CONFIG)
    if not cfg_path.is_file():
        return ({"text_clean": "none", "max_length": 128},
                "no config.yml beside the checkpoint: ViLMedic's convirt-mimic config of "
                "2021-12-27 (no text processing, 128 tokens)")
    import yaml

    try:
        data = yaml.safe_load(cfg_path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CheckpointError(f"{cfg_path}: not a readable YAML file ({type(exc).__name__})"
                              ) from exc
    seq = ((data or {}).get("dataset") or {}).get("seq") or {}
    processing = seq.get("processing")
    if processing not in PROCESSING:
        raise CheckpointError(f"{cfg_path}: dataset.seq.processing={processing!r} is not "
                              f"implemented here (r2gen_clean_report, or none)")
    try:
        max_length = int(seq.get("tokenizer_max_len") or 128)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{cfg_path}: dataset.seq.tokenizer_max_len="
                              f"{seq.get('tokenizer_max_len')!r} is not a number") from exc
    return {"text_clean": PROCESSING[processing], "max_length": max_length}, str(cfg_path)


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
