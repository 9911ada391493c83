"""CheXzero's checkpoints: the released ``.pt`` files, ensembles of them, and the harness's files.

**Released** (Google Drive folder of the CheXzero README, ``checkpoints/chexzero_weights/``,
e.g. ``best_64_5e-05_original_22000_0.864.pt``): each is ``torch.save(model.state_dict())`` of
OpenAI-CLIP ViT-B/32 after ``clip.load(..., jit=False)`` on a GPU, so 302 tensors, 195 of them
fp16 (``convert_weights``: conv, linear and attention weights, projections) and 107 fp32. It is
read with ``torch.load(weights_only=True)`` (`bench.methods._shared.checkpoints`), so a pickle
that names any other global is refused with that global's name, then loaded **strictly** into
open_clip's ``ViT-B-32-quickgelu`` (cast to fp32, as ``load_state_dict`` does into an fp32
model): a missing, unexpected or mis-shaped key (a ViT-B/16's ``visual.conv1.weight``, say) is
an error naming it. A safetensors file without the harness's metadata holding the same keys
(open_clip's own release of OpenAI's weights) is read the same way. OpenAI's TorchScript
archive (``ViT-B-32.pt`` from its CDN) is code, not a state dict, and is refused with a note.

**Ensembles**: the official ``ensemble_models`` runs every path of ``sorted(model_paths)`` and
averages the probabilities. The ``checkpoint`` option takes one file, a folder (its ``*.pt`` and
``*.pth`` files) or several paths separated by commas (or a JSON list); `checkpoint_paths`
orders them by ``sorted`` of the path strings, as the official code does.

**Ours**: ``bench train chexzero`` writes the harness's safetensors format (method
"chexzero"), whose config names the architecture (the preset's).
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from bench.errors import CheckpointError
from bench.methods._shared import checkpoints as shared

METHOD = "chexzero"
RELEASE_SUFFIXES = (".pt", ".pth")


def checkpoint_paths(value: Any) -> list[Path]:
    """The files a ``checkpoint`` value names, sorted as the official ensemble sorts them."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        items = [str(v) for v in value]
    else:
        items = [s.strip() for s in str(value).split(",") if s.strip()]
    files: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(q) for q in p.iterdir()
                           if q.is_file() and q.suffix.lower() in RELEASE_SUFFIXES)
            if not found:
                raise CheckpointError(f"checkpoint folder {p} holds no .pt or .pth file")
            files += found
        elif p.is_file():
            files.append(str(p))
        else:
            raise CheckpointError(f"checkpoint {p} does not exist")
    if not files:
        raise CheckpointError(f"no checkpoint file in {value!r}")
    return [Path(f) for f in sorted(files)]


def save_weights(path: str | Path, state_dict: Mapping[str, torch.Tensor],
                 config: dict[str, Any]) -> None:
    shared.save_weights(path, state_dict, config, None, method=METHOD)


def read_harness(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state, config, _ = shared.read_weights(path, METHOD)
    return state, config


def read_official(path: str | Path) -> dict[str, torch.Tensor]:
    """The OpenAI-CLIP state dict of a released file (a pickled bare state dict, or a
    safetensors file of the same keys), tensors as stored (fp16 and fp32 mixed)."""
    path = Path(path)
    if shared.file_format(path) == "safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    if _is_torchscript(path):
        raise CheckpointError(f"{path}: a TorchScript archive (OpenAI's own ViT-B-32.pt), not a "
                              f"state dict; the harness does not run archived code: save its "
                              f"state dict (torch.jit.load(path).state_dict()) with torch.save, "
                              f"or pass open_clip's safetensors of the same weights")
    obj = shared.safe_torch_load(path)
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor)
                                                for v in obj.values()):
        return dict(obj)
    if isinstance(obj, Mapping):
        keys = ", ".join(map(repr, list(obj)[:5]))
        raise CheckpointError(f"{path}: not a CheXzero checkpoint: expected a bare state dict "
                              f"(torch.save(model.state_dict())) of tensors, found entries "
                              f"{keys or '(none)'}")
    raise CheckpointError(f"{path}: not a CheXzero checkpoint: holds a {type(obj).__name__}, "
                          f"not a state dict")


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.split("/", 1)[-1].startswith("code/") for n in z.namelist())


def dtype_counts(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """{"float16": n, "float32": m, ...} of a state dict (recorded in the method's config)."""
    out: dict[str, int] = {}
    for v in state.values():
        name = str(v.dtype).replace("torch.", "")
        out[name] = out.get(name, 0) + 1
    return dict(sorted(out.items()))
