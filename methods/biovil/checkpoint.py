"""BioViL's weights: the released image ``.pt``, the CXR-BERT folder, and the harness's files.

**Image** (``image/model/pretrained.py``): ``biovil_image_resnet50_proj_size_128.pt`` in the
``microsoft/BiomedVLP-CXR-BERT-specialized`` repository (revision v1.1) is a pickled
``OrderedDict`` of tensors (328 keys, `model.ImageModel`), which hi-ml loads with a strict
``load_state_dict``. It is read here with ``torch.load(weights_only=True)`` and the platform's
allow-list (`bench.methods._shared.checkpoints`), so a pickle naming any other global is refused
with the global it names; then compared key by key (every missing, unexpected or mis-shaped key
is named).

**Text** (``CXRBertModel.from_pretrained(..., revision="v1.1")``): a folder (or the offline
Hugging Face cache of ``microsoft/BiomedVLP-CXR-BERT-specialized``) with ``config.json``
(``model_type`` "cxr-bert", BERT-base, ``projection_size`` 128), ``vocab.txt`` and
``pytorch_model.bin`` (read ``weights_only``) or ``model.safetensors``: 210 keys, ``bert.*``,
``cls.predictions.*`` and ``cls_projection_head.*``, loaded strictly. Two tied copies that a
file may leave out (``cls.predictions.decoder.weight`` = the word embeddings,
``cls.predictions.decoder.bias`` = ``cls.predictions.bias``, as transformers ties them) are
filled from their twin; ``embeddings.position_ids`` is tolerated. Never remote code.

``bench train biovil`` writes the harness's safetensors format (method "biovil"): the image
model under ``image.``, CXR-BERT under ``text.``, the config and the tokenizer in the metadata.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from bench.errors import CheckpointError
from bench.methods._shared import checkpoints as shared

METHOD = "biovil"
TEXT_REPO = "microsoft/BiomedVLP-CXR-BERT-specialized"
TEXT_REVISION = "v1.1"
IMAGE_FILE = "biovil_image_resnet50_proj_size_128.pt"
IMAGE_MD5 = "02ce6ee460f72efd599295f440dbb453"
TIED = {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias"}


def save_weights(path: str | Path, state_dict: Mapping[str, torch.Tensor],
                 config: dict[str, Any], tokenizer_json: str | None) -> None:
    # tied parameters share storage, which safetensors refuses: each is written as its own copy
    shared.save_weights(path, {k: v.detach().clone() for k, v in state_dict.items()}, config,
                        tokenizer_json, method=METHOD)


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], str | None]:
    return shared.read_weights(path, METHOD)


def read_image_pt(path: str | Path) -> dict[str, torch.Tensor]:
    """The released image state dict (a bare mapping of tensors)."""
    obj = shared.safe_torch_load(path)
    if isinstance(obj, Mapping) and "state_dict" in obj and not isinstance(
            obj.get("state_dict"), torch.Tensor):
        raise CheckpointError(f"{path}: not BioViL's image weights: a training checkpoint "
                              f"('state_dict' entry), not hi-ml's plain state dict")
    return shared.tensors_only(obj, str(path), "the image state dict")


def resolve_text_folder(source: str) -> Path:
    """A local CXR-BERT folder, or the offline Hugging Face snapshot of an id (revision v1.1
    where cached, else the cached default)."""
    p = Path(source)
    if p.is_dir():
        return p
    if p.exists() or source.startswith((".", "/", "~")):
        raise CheckpointError(f"text encoder {source!r} is not a folder")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover
        raise CheckpointError("huggingface_hub is needed to read the Hugging Face cache") from exc
    for revision in ((TEXT_REVISION, None) if source == TEXT_REPO else (None,)):
        try:
            return Path(snapshot_download(source, revision=revision, local_files_only=True))
        except Exception:
            continue
    raise CheckpointError(
        f"text encoder {source!r} is not available offline: pass text_encoder=<local folder "
        f"with CXR-BERT's config.json, vocab.txt and pytorch_model.bin> (BioViL: {TEXT_REPO}, "
        f"revision {TEXT_REVISION}), or put it in the Hugging Face cache")


def read_text_config(folder: Path) -> dict[str, Any]:
    cfg_path = folder / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{cfg_path}: missing or not JSON ({type(exc).__name__})") from exc
    kind = cfg.get("model_type")
    if kind not in ("cxr-bert", "bert"):
        raise CheckpointError(f"{cfg_path}: model_type {kind!r}; BioViL's text model is a "
                              f"CXR-BERT (model_type 'cxr-bert')")
    return cfg


def read_text_state(folder: Path) -> dict[str, torch.Tensor]:
    """CXR-BERT's state dict: model.safetensors where present, else pytorch_model.bin
    (``weights_only``), tied copies filled from their twins."""
    st, binary = folder / "model.safetensors", folder / "pytorch_model.bin"
    if st.is_file():
        from safetensors.torch import load_file

        try:
            state = load_file(str(st))
        except Exception as exc:
            raise CheckpointError(f"{st}: not a readable safetensors file ({exc})") from exc
    elif binary.is_file():
        state = shared.tensors_only(shared.safe_torch_load(binary), str(binary))
    else:
        raise CheckpointError(f"{folder}: no model.safetensors or pytorch_model.bin "
                              f"(CXR-BERT's weights)")
    for key, twin in TIED.items():
        if key not in state and twin in state:
            state[key] = state[twin]
    return state
