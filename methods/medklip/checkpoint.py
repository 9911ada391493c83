"""MedKLIP's checkpoints: the released ``checkpoint_final.pth`` and the harness's files.

The release (``PreTrain_MedKLIP/train_MedKLIP.py``) is a ``torch.save`` dict with ``model``,
``optimizer``, ``lr_scheduler``, ``config`` and ``epoch``; ``model`` was saved from
``nn.DataParallel``, so every key starts with ``module.`` (342 keys with ResNet-50). It is read
with ``torch.load(weights_only=True)`` and the platform's inert stand-ins
(`bench.methods._shared.checkpoints`): a file that pickles any other global is refused with the
global it names. The ``module.`` prefix is stripped (a file mixing prefixed and bare keys is
refused) and the weights load strictly: any missing, unexpected or mis-shaped key is named. A
bare state dict (``torch.save(ckpt["model"])``) is accepted too.

The query book is not in the release (`queries`). ``bench train medklip`` writes the harness's
safetensors format (method "medklip"): the model's keys without prefix, the query book as
``disease_book`` and, for the tiny preset, its text encoder under ``text.`` (so new queries can
be embedded) and its tokenizer in the metadata.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from bench.errors import CheckpointError
from bench.methods._shared import checkpoints as shared

METHOD = "medklip"
PREFIX = "module."
BOOK_KEY = "disease_book"
TEXT_PREFIX = "text."


def read_official(path: str | Path) -> dict[str, torch.Tensor]:
    """The model state dict of a released MedKLIP ``.pth``, ``module.`` stripped."""
    obj = shared.safe_torch_load(path)
    if isinstance(obj, Mapping) and "model" in obj:
        state = shared.tensors_only(obj["model"], str(path), "the 'model' entry")
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor)
                                                  for v in obj.values()):
        state = dict(obj)
    else:
        keys = ", ".join(map(repr, list(obj)[:5])) if isinstance(obj, Mapping) else ""
        raise CheckpointError(f"{path}: not a MedKLIP checkpoint: no 'model' state dict "
                              f"(top-level entries: {keys or type(obj).__name__})")
    prefixed = [k.startswith(PREFIX) for k in state]
    if any(prefixed) and not all(prefixed):
        bare = next(k for k in state if not k.startswith(PREFIX))
        raise CheckpointError(f"{path}: some keys start with {PREFIX!r} and some do not "
                              f"(e.g. {bare!r})")
    return shared.strip_prefix(state, PREFIX) if any(prefixed) else state


def save_weights(path: str | Path, state_dict: Mapping[str, torch.Tensor],
                 book: torch.Tensor, text_state: Mapping[str, torch.Tensor] | None,
                 config: dict[str, Any], tokenizer_json: str | None) -> None:
    tensors = dict(state_dict)
    tensors[BOOK_KEY] = book
    for k, v in (text_state or {}).items():
        tensors[TEXT_PREFIX + k] = v
    shared.save_weights(path, tensors, config, tokenizer_json, method=METHOD)


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], torch.Tensor,
                                            dict[str, torch.Tensor], dict[str, Any],
                                            str | None]:
    """(model state, query book, text-encoder state, config, tokenizer json) of a harness
    checkpoint."""
    state, config, tok = shared.read_weights(path, METHOD)
    if BOOK_KEY not in state:
        raise CheckpointError(f"{path}: harness MedKLIP checkpoint without its query book "
                              f"({BOOK_KEY!r})")
    book = state.pop(BOOK_KEY)
    text = {k[len(TEXT_PREFIX):]: state.pop(k) for k in list(state) if k.startswith(TEXT_PREFIX)}
    return state, book, text, config, tok
