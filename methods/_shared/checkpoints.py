"""Saving and loading weights without ever unpickling arbitrary objects.

**Our format** (every method trained with ``bench train``): one ``.safetensors`` file whose
metadata carries the method's name, its model config (JSON) and, where the method has one, its
tokenizer (``tokenizer.json`` text), so a checkpoint is self-contained and loads offline. Files
written before the metadata named the method are AFLoc's (the only trainable method then).

**Released checkpoints** come as pickles (PyTorch Lightning ``.ckpt``, ``torch.save`` dicts).
They are read with ``torch.load(weights_only=True)``, where the only extra globals allowed are
inert stand-ins for the OmegaConf containers, ``typing.Any`` and the Lightning classes that
appear in such files. The stand-ins only record state, so any other global (``os.system``, ...)
is refused. Then the state dict is compared key by key with the model, and every key that is
missing, unexpected or of another shape is named. ``embeddings.position_ids``, a buffer that
older transformers saved and newer ones do not, is tolerated wherever it appears.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from bench.errors import CheckpointError
from bench.store import atomic_write

FORMAT = "afloc-bench/1"  # the harness's package name, not the method's
LEGACY_METHOD = "afloc"  # files without a "method" entry predate it; only AFLoc was trainable
TOLERATED_SUFFIXES = ("embeddings.position_ids",)


# -- our format ------------------------------------------------------------------------------

def save_weights(path: str | Path, state_dict: Mapping[str, torch.Tensor],
                 config: dict[str, Any], tokenizer_json: str | None = None,
                 method: str = LEGACY_METHOD) -> None:
    """Atomically write weights + method + config + tokenizer into one safetensors file."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()
               if not tolerated(k)}
    meta = {"format": FORMAT, "method": method, "config": json.dumps(config, sort_keys=True)}
    if tokenizer_json is not None:
        meta["tokenizer"] = tokenizer_json
    with atomic_write(path) as tmp:
        save_file(tensors, tmp, metadata=meta)


def is_safetensors(path: str | Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n < (1 << 30) and head[8:9] == b"{"


def is_harness_file(path: str | Path) -> bool:
    """A safetensors file with the harness's metadata (written by ``bench train``), as opposed
    to a released checkpoint; an unreadable safetensors file is an error naming it."""
    if file_format(path) != "safetensors":
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format") == FORMAT
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc


def read_weights(path: str | Path, method: str
                 ) -> tuple[dict[str, torch.Tensor], dict[str, Any], str | None]:
    """(state_dict, config, tokenizer_json) of one of our checkpoints, written for `method`."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: safetensors file without the harness's metadata "
                              f"(format={meta.get('format')!r}); expected {FORMAT}")
    written_for = meta.get("method", LEGACY_METHOD)
    if written_for != method:
        raise CheckpointError(f"{path}: written by bench train {written_for}, not "
                              f"{method}: load it with method '{written_for}'")
    try:
        config = json.loads(meta["config"])
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: its model config is missing or not JSON") from exc
    return state, config, meta.get("tokenizer")


def file_format(path: str | Path) -> str:
    """'safetensors' or 'pickle' (what a loader should try), from the file's first bytes."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist")
    return "safetensors" if is_safetensors(p) else "pickle"


# -- released pickles --------------------------------------------------------------------------

class _Inert:
    """Stand-in for an allow-listed class: records constructor args and pickled state only."""

    def __new__(cls, *args: Any, **kwargs: Any):
        obj = object.__new__(cls)
        obj.__dict__["_args"] = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:
            state = {**(state[0] or {}), **(state[1] or {})}
        self.__dict__["_state"] = state


def _make_stub(name: str) -> type:
    return type(name.rsplit(".", 1)[-1], (_Inert,), {"_qualname": name})


def _plain_dict(*args: Any) -> dict:
    """``collections.defaultdict(factory)`` -> a plain dict (the factory is never called)."""
    return {}


_STUB_NAMES = [
    "omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig",
    "omegaconf.base.Metadata", "omegaconf.base.ContainerMetadata", "omegaconf.base.Node",
    "omegaconf.nodes.AnyNode", "omegaconf.nodes.ValueNode", "omegaconf.nodes.StringNode",
    "omegaconf.nodes.IntegerNode", "omegaconf.nodes.FloatNode", "omegaconf.nodes.BooleanNode",
    "omegaconf.nodes.EnumNode", "omegaconf.nodes.BytesNode", "omegaconf.nodes.PathNode",
    "typing.Any", "builtins.list", "__builtin__.list", "builtins.dict", "__builtin__.dict",
    "builtins.object", "__builtin__.object",
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "pytorch_lightning.callbacks.early_stopping.EarlyStopping",
    "pytorch_lightning.callbacks.lr_monitor.LearningRateMonitor",
    "pytorch_lightning.utilities.parsing.AttributeDict",
]
_STUBS = {name: _make_stub(name) for name in _STUB_NAMES}


def _safe_globals() -> list[tuple[Any, str]]:
    out: list[tuple[Any, str]] = [(cls, name) for name, cls in _STUBS.items()]
    out += [(_plain_dict, "collections.defaultdict"), (int, "__builtin__.long"),
            (int, "builtins.int"), (float, "builtins.float")]
    return out


def plain(obj: Any) -> Any:
    """Turn recorded OmegaConf / Lightning stand-ins into plain dicts, lists and scalars."""
    if isinstance(obj, _Inert):
        state = obj.__dict__.get("_state")
        qual = type(obj)._qualname
        if isinstance(state, dict) and "_content" in state:
            return plain(state["_content"])
        if isinstance(state, dict) and "_val" in state:
            return plain(state["_val"])
        if qual.endswith("AttributeDict") and isinstance(state, dict):
            return {k: plain(v) for k, v in state.items()}
        return f"<{qual}>"
    if isinstance(obj, dict):
        return {(k if isinstance(k, (str, int, float)) else str(k)): plain(v)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load(weights_only=True)`` allowing only the inert stand-ins above."""
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        msg = str(exc).strip().splitlines()
        first = next((m for m in msg if "GLOBAL" in m or "Unsupported" in m or "global" in m),
                     msg[0] if msg else type(exc).__name__)
        raise CheckpointError(f"{path}: refused to load (only tensors and known config "
                              f"containers are allowed): {first.strip()}") from exc


def tensors_only(state: Any, source: str, what: str = "state_dict") -> dict[str, torch.Tensor]:
    """`state` as {key: tensor}, or an error naming the first entry that is not a tensor."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source}: {what} is not a mapping of tensors")
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{source}: {what} entry {k!r} is not a tensor")
    return dict(state)


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str,
                 last: bool = False) -> dict[str, torch.Tensor]:
    """Keys without `prefix`: only where they start with it, or (`last`) up to its last
    occurrence anywhere in the key, as GLoRIA's and AFLoc's ``k.split("gloria.")[-1]``."""
    if last:
        return {k.split(prefix)[-1]: v for k, v in state.items()}
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def read_lightning(path: str | Path, prefix: str) -> tuple[dict[str, torch.Tensor],
                                                           dict[str, Any]]:
    """(state_dict with everything up to the last `prefix` stripped from each key, the
    ``hyper_parameters`` as plain dicts) of a Lightning checkpoint."""
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
    state = strip_prefix(tensors_only(ckpt["state_dict"], str(path)), prefix, last=True)
    hp = plain(ckpt.get("hyper_parameters") or {})
    return state, hp if isinstance(hp, dict) else {}


# -- comparing and loading ---------------------------------------------------------------------

def tolerated(key: str) -> bool:
    return key.endswith(TOLERATED_SUFFIXES)


def compare_state(model_state: Mapping[str, torch.Tensor],
                  ckpt_state: Mapping[str, torch.Tensor]) -> dict[str, list[str]]:
    """Which keys are missing, unexpected or of another shape (position_ids tolerated)."""
    mk = {k for k in model_state if not tolerated(k)}
    ck = {k for k in ckpt_state if not tolerated(k)}
    shapes = [f"{k}: checkpoint {tuple(ckpt_state[k].shape)} vs model "
              f"{tuple(model_state[k].shape)}" for k in sorted(mk & ck)
              if tuple(ckpt_state[k].shape) != tuple(model_state[k].shape)]
    return {"missing": sorted(mk - ck), "unexpected": sorted(ck - mk), "shape": shapes}


def describe_diff(diff: dict[str, list[str]], limit: int = 8) -> str:
    parts = []
    for what in ("missing", "unexpected", "shape"):
        items = diff[what]
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{len(items)} {what}: {', '.join(items[:limit])}{more}")
    return "; ".join(parts)


def load_into(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str,
              strict: bool = True) -> dict[str, list[str]]:
    """Load `state`. With `strict`, any difference (position_ids aside) is an error naming the
    keys. Without it (e.g. AFLoc's newer builder's ``strict=False``), missing and unexpected
    keys are allowed and named in a warning, as torch prints them there, and a shape mismatch is
    still an error, as torch's ``load_state_dict`` raises it whatever ``strict`` says."""
    own = model.state_dict()
    diff = compare_state(own, state)
    if diff["shape"] or (strict and (diff["missing"] or diff["unexpected"])):
        raise CheckpointError(f"{source}: checkpoint does not match the model: "
                              f"{describe_diff(diff)}")
    if diff["missing"] or diff["unexpected"]:
        warnings.warn(f"{source}: loaded with strict=false; {describe_diff(diff)} (missing "
                      f"weights keep their initialisation)", stacklevel=2)
    usable = {k: v for k, v in state.items() if not tolerated(k) and k in own
              and tuple(v.shape) == tuple(own[k].shape)}
    model.load_state_dict(usable, strict=False)
    return diff

