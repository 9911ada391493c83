"""Saving and loading AFLoc weights without ever unpickling arbitrary objects.

Our format: one ``.safetensors`` file; the model config (JSON) and the tokenizer
(``tokenizer.json`` text) travel in its metadata, so a checkpoint is self-contained and
loads offline. The official release is a PyTorch Lightning checkpoint (``state_dict`` keys
prefixed ``afloc.``, ``hyper_parameters`` an OmegaConf ``DictConfig``); it is read with
``torch.load(weights_only=True)`` where the only extra globals allowed are inert stand-ins
for the OmegaConf containers, ``typing.Any`` and the Lightning callback classes used as dict
keys. Those stand-ins only record state, so any other global (``os.system``, ...) is refused.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from bench.errors import CheckpointError
from bench.store import publish, temp_beside

FORMAT = "afloc-bench/1"
POSITION_IDS = "text_encoder.model.embeddings.position_ids"


# -- our format ----------------------------------------------------------------------------

def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor], config: dict[str, Any],
                 tokenizer_json: str | None) -> None:
    """Atomically write weights + config + tokenizer into one safetensors file."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()
               if k != POSITION_IDS}
    meta = {"format": FORMAT, "config": json.dumps(config, sort_keys=True)}
    if tokenizer_json is not None:
        meta["tokenizer"] = tokenizer_json
    fd, tmp = temp_beside(path)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def is_safetensors(path: str | Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n < (1 << 30) and head[8:9] == b"{"


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], str | None]:
    """(state_dict, config, tokenizer_json) of one of our checkpoints."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: safetensors file without AFLoc metadata "
                              f"(format={meta.get('format')!r}); expected {FORMAT}")
    return state, json.loads(meta["config"]), meta.get("tokenizer")


# -- the official Lightning checkpoint ----------------------------------------------------

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


def _plain(obj: Any) -> Any:
    """Turn recorded OmegaConf stand-ins into plain dicts/lists/scalars."""
    if isinstance(obj, _Inert):
        state = obj.__dict__.get("_state")
        qual = type(obj)._qualname
        if isinstance(state, dict) and "_content" in state:
            return _plain(state["_content"])
        if isinstance(state, dict) and "_val" in state:
            return _plain(state["_val"])
        if qual.endswith("AttributeDict") and isinstance(state, dict):
            return {k: _plain(v) for k, v in state.items()}
        return f"<{qual}>"
    if isinstance(obj, dict):
        return {(k if isinstance(k, (str, int, float)) else str(k)): _plain(v)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
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


def read_official(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict with the ``afloc.`` prefix stripped, hyper_parameters as plain dicts)."""
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
    state = {}
    for k, v in ckpt["state_dict"].items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{path}: state_dict entry {k!r} is not a tensor")
        state[k.split("afloc.")[-1]] = v  # official: strip up to the last "afloc."
    hp = _plain(ckpt.get("hyper_parameters") or {})
    if not isinstance(hp, dict):
        hp = {}
    return state, hp


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
        "bert": infer_bert_config(state),
        "text_encoder": text.get("bert_type"),
        "last_n_layers": int(text.get("last_n_layers", 4)),
        "word_num": int((data.get("text") or {}).get("word_num", 97)),
        "levels": levels,
        "tau1": float(af.get("temp1", 4.0)), "tau2": float(af.get("temp2", 5.0)),
        "tau3": float(af.get("temp3", 10.0)), "text_mode": "faithful", "preset": "official",
    }


def infer_bert_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    p = "text_encoder.model."
    try:
        vocab, hidden = state[p + "embeddings.word_embeddings.weight"].shape
        max_pos = state[p + "embeddings.position_embeddings.weight"].shape[0]
        type_vocab = state[p + "embeddings.token_type_embeddings.weight"].shape[0]
        inter = state[p + "encoder.layer.0.intermediate.dense.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointError(f"checkpoint has no BERT weights ({exc.args[0]} missing)") from exc
    layers = 1 + max(int(k[len(p + "encoder.layer."):].split(".")[0]) for k in state
                     if k.startswith(p + "encoder.layer."))
    return {"vocab_size": int(vocab), "hidden_size": int(hidden),
            "num_hidden_layers": int(layers), "num_attention_heads": max(1, int(hidden) // 64),
            "intermediate_size": int(inter), "max_position_embeddings": int(max_pos),
            "type_vocab_size": int(type_vocab)}


def compare_state(model_state: dict[str, torch.Tensor],
                  ckpt_state: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Which keys are missing, unexpected or of another shape (position_ids tolerated)."""
    mk = set(model_state) - {POSITION_IDS}
    ck = set(ckpt_state) - {POSITION_IDS}
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


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str,
              strict: bool = True) -> dict[str, list[str]]:
    """Load `state`. With `strict`, any difference (except position_ids) is an error. Without
    it (the official newer builder's ``strict=False``), missing and unexpected keys are
    allowed and named in a warning, as torch prints them there, and a shape mismatch is still
    an error, as torch's ``load_state_dict`` raises it whatever ``strict`` says."""
    own = model.state_dict()
    diff = compare_state(own, state)
    if diff["shape"] or (strict and (diff["missing"] or diff["unexpected"])):
        raise CheckpointError(f"{source}: checkpoint does not match the model: "
                              f"{describe_diff(diff)}")
    if diff["missing"] or diff["unexpected"]:
        warnings.warn(f"{source}: loaded with strict=false; {describe_diff(diff)} (missing "
                      f"weights keep their initialisation)", stacklevel=2)
    usable = {k: v for k, v in state.items() if k != POSITION_IDS and k in own
              and tuple(v.shape) == tuple(own[k].shape)}
    model.load_state_dict(usable, strict=False)
    return diff


__all__ = ["save_weights", "read_weights", "is_safetensors", "read_official",
           "config_from_official", "compare_state", "load_into", "safe_torch_load"]
