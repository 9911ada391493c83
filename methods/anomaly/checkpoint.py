"""RD++, RD and ReContrast checkpoints users already have, turned into our layout safely.

Layouts read (`detect_layout` names them, `LAYOUTS` describes them):

- ``rdpp``: the official RD++ file (``main.py``: ``torch.save({'proj': ..., 'decoder': ...,
  'bn': ...})``, the state dicts of ``MultiProjectionLayer(base=64)``, ``de_wide_resnet50_2()``
  and ``BN_layer``). Mapped to ``proj.``, ``decoder.``, ``bn.``; the encoder is not in the file
  (the frozen ImageNet WRN-50-2).
- ``rd``: the same without ``proj``, as the original RD code (RD4AD) saves it
  (``{'bn': ..., 'decoder': ...}``): plain Reverse Distillation, no projection layers.
- ``anomalib-lightning`` / ``anomalib``: anomalib's ``ReverseDistillation`` Lightning checkpoint
  (``state_dict`` with ``model.`` before the torch model's keys, plus post-processor buffers
  such as ``post_processor.image_min`` that are dropped and named) or a bare
  ``ReverseDistillationModel`` state dict. ``encoder.feature_extractor.*`` (timm's
  ``features_only`` wide_resnet50_2: torchvision's key names, layer1-3) -> ``encoder.*``,
  ``bottleneck.*`` -> ``bn.*``, ``decoder.*`` -> ``decoder.*``. anomalib has no projection
  layers (``has_proj`` False: the method runs plain RD and says so) and its OCBE is built with
  ``width_per_group=64`` whatever the backbone (inner width 512 under wide_resnet50_2, where the
  official one has 1024): `config_from_state` reads that into ``ocbe_width_per_group``. anomalib
  before its October 2023 refactor had no ``conv4``/``bn4`` in the OCBE; as the official forward
  never uses them, they are then filled with the official initial values and named in the notes.
- ``recontrast``: a ``ReContrast`` module's state dict (``encoder.``, ``encoder_freeze.``,
  ``bottleneck.``, ``decoder.`` with ``out1``-``out3``), bare or under ``state_dict`` /
  ``model`` / ``model_state_dict``, with a ``module.`` (DataParallel) or ``model.`` (a wrapping
  module) prefix on every key stripped. The official repository never saves one; this is the
  layout of ``ReContrast(...).state_dict()``. Kept as is: our ReContrast model uses these names.

Our RD/RD++ model has submodules ``encoder``, ``proj`` (official ``MultiProjectionLayer`` names:
``proj_a.proj.0.weight`` ...), ``bn`` (`OCBE`) and ``decoder`` (`Decoder`).

Files are read with ``torch.load(weights_only=True)``. Lightning checkpoints pickle a few
objects besides tensors (anomalib's ``AnomalyMapGenerationMode`` enum in ``hyper_parameters``,
older anomalib its transforms); globals from anomalib, Lightning, torchvision's transforms and
``torch.nn`` modules are then read through inert stand-ins that only record their arguments
and state (`bench.methods._shared.checkpoints`), so nothing in the file is executed; any other
global is refused. A safetensors file is read as a bare state dict. Every key that differs from
the expected layout is named.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.errors import CheckpointError
from bench.methods._shared import checkpoints as shared

from .networks import EXPANSION, PAPER, NetworkConfig

LAYOUTS = {
    "rdpp": "official RD++ file {'proj', 'decoder', 'bn'}",
    "rd": "official RD file {'bn', 'decoder'} (no projection layers)",
    "anomalib-lightning": "anomalib ReverseDistillation Lightning checkpoint",
    "anomalib": "anomalib ReverseDistillationModel state dict",
    "recontrast": "ReContrast module state dict",
}
RD_PARTS = ("proj", "bn", "decoder")  # official RD++ file entries = our submodule names
RECONTRAST_PREFIXES = ("encoder.", "encoder_freeze.", "bottleneck.", "decoder.")
ANOMALIB_PREFIXES = {"encoder.feature_extractor.": "encoder.", "bottleneck.": "bn.",
                     "decoder.": "decoder."}
WRAPPERS = ("state_dict", "model", "model_state_dict")
STRIPPED = ("module.", "model.")
# globals a Lightning / anomalib checkpoint may pickle outside its tensors; read as inert
# stand-ins that record state and run nothing
STUB_NAMESPACES = ("anomalib.", "lightning.", "lightning_fabric.", "pytorch_lightning.",
                   "torchvision.transforms.", "torch.nn.modules.", "jsonargparse.")


@dataclass
class Converted:
    """A checkpoint in our layout."""

    layout: str  # a LAYOUTS key
    state: dict[str, torch.Tensor]
    config: NetworkConfig
    source: str
    notes: list[str] = field(default_factory=list)
    # a Lightning file's hyper_parameters as plain values (anomalib: backbone, layers,
    # anomaly_map_mode as its string value)
    hparams: dict[str, Any] = field(default_factory=dict)

    @property
    def has_proj(self) -> bool:
        """RD++'s projection layers are in the file (False: plain RD)."""
        return any(k.startswith("proj.") for k in self.state)

    @property
    def has_encoder(self) -> bool:
        """The encoder's weights are in the file (else: the ImageNet encoder)."""
        return any(k.startswith("encoder.") for k in self.state)

    @property
    def description(self) -> str:
        return LAYOUTS[self.layout]


def part(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under `prefix` ("bn.", "decoder." ...), without it: one submodule's state."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


# -- reading -----------------------------------------------------------------------------------

def read_checkpoint(path: str | Path) -> Any:
    """The file's content: a bare state dict (safetensors) or what ``torch.save`` stored."""
    p = Path(path)
    if shared.file_format(p) == "safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except Exception as exc:
            raise CheckpointError(f"{p}: not a readable safetensors file ({exc})") from exc
    try:
        return shared.safe_torch_load(p)
    except CheckpointError as first:
        return _load_with_stubs(p, first)


def _load_with_stubs(path: Path, first: CheckpointError) -> Any:
    stubs: dict[str, type] = {}
    for _ in range(64):  # one stand-in per class the file names
        try:
            allowed = shared._safe_globals() + [(cls, name) for name, cls in stubs.items()]
            allowed += [(set, "builtins.set"), (tuple, "builtins.tuple")]
            with torch.serialization.safe_globals(allowed):
                return torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # the next global the file asks for
            m = re.search(r"GLOBAL ([\w.]+)", str(exc))
            name = m.group(1) if m else None
            if name is None or name in stubs or not name.startswith(STUB_NAMESPACES):
                raise first from exc
            stubs[name] = shared._make_stub(name)
    raise first


def load_checkpoint(path: str | Path) -> Converted:
    """Read `path` and convert it to our layout (`convert`)."""
    return convert(read_checkpoint(path), str(path))


# -- recognising -------------------------------------------------------------------------------

def _is_state(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _strip_common(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Without a ``module.`` / ``model.`` prefix that every key carries (repeatedly)."""
    out = dict(state)
    changed = True
    while changed and out:
        changed = False
        for prefix in STRIPPED:
            if all(k.startswith(prefix) for k in out):
                out = {k[len(prefix):]: v for k, v in out.items()}
                changed = True
    return out


def _flat(obj: Any) -> dict[str, torch.Tensor] | None:
    """A state dict: bare or under a usual wrapper key, with common prefixes stripped."""
    if _is_state(obj):
        return _strip_common(obj)
    if isinstance(obj, Mapping):
        for key in WRAPPERS:
            if key in obj:
                found = _flat(obj[key])
                if found is not None:
                    return found
    return None


def _anomalib(keys: Any, prefix: str = "") -> bool:
    keys = list(keys)
    return any(k.startswith(prefix + "encoder.feature_extractor.") for k in keys) and any(
        k.startswith(prefix + "bottleneck.bn_layer.") for k in keys)


def _entries(obj: Any) -> str:
    if isinstance(obj, Mapping):
        shown = ", ".join(repr(k) for k in list(obj)[:6])
        return f"top-level entries: {shown}{' ...' if len(obj) > 6 else ''}" if obj else "empty"
    return f"a {type(obj).__name__}"


def detect_layout(obj: Any, source: str = "checkpoint") -> str:
    """Which of `LAYOUTS` a loaded file is; a one-line `CheckpointError` naming `source` when
    none matches."""
    if isinstance(obj, Mapping):
        if all(isinstance(obj.get(k), Mapping) for k in ("bn", "decoder")):
            return "rdpp" if isinstance(obj.get("proj"), Mapping) else "rd"
        sd = obj.get("state_dict")
        if isinstance(sd, Mapping) and _anomalib(sd, "model."):
            return "anomalib-lightning"
        flat = _flat(obj)
        if flat is not None:
            if _anomalib(flat) or _anomalib(flat, "model."):
                return "anomalib"
            if all(any(k.startswith(p) for k in flat) for p in RECONTRAST_PREFIXES):
                return "recontrast"
    raise CheckpointError(
        f"{source}: not an RD++ ({{'proj','decoder','bn'}}), RD ({{'bn','decoder'}}), anomalib "
        f"Reverse Distillation or ReContrast checkpoint ({_entries(obj)})")


# -- converting --------------------------------------------------------------------------------

def convert(obj: Any, source: str = "checkpoint") -> Converted:
    """A loaded file (`read_checkpoint`) in our layout, with the config its shapes imply."""
    layout = detect_layout(obj, source)
    notes: list[str] = []
    if layout in ("rdpp", "rd"):
        state = {}
        for name in RD_PARTS:
            if name not in obj:
                continue
            sub = _strip_common(shared.tensors_only(obj[name], source, repr(name)))
            state.update({f"{name}.{k}": v for k, v in sub.items()})
        extra = [k for k in obj if k not in RD_PARTS]
        if extra:
            notes.append(f"ignored entries: {', '.join(map(str, extra))}")
        if layout == "rd":
            notes.append("no projection layers in the file: plain Reverse Distillation")
        notes.append("no encoder in the file: the encoder is the ImageNet WRN-50-2")
    elif layout in ("anomalib-lightning", "anomalib"):
        raw = obj["state_dict"] if layout == "anomalib-lightning" else _flat(obj)
        state = _from_anomalib(shared.tensors_only(raw, source), source, notes)
    else:
        state = _flat(obj) or {}
        other = [k for k in state if not k.startswith(RECONTRAST_PREFIXES)]
        if other:
            raise CheckpointError(f"{source}: ReContrast state dict with keys outside "
                                  f"{', '.join(RECONTRAST_PREFIXES)}: {_names(other)}")
    cfg = config_from_state(state, source)
    if layout.startswith("anomalib") and "bn.conv4.weight" not in state:
        filled = _official_conv4(cfg)
        state.update(filled)
        notes.append(f"{', '.join(sorted(filled))} absent (anomalib before its 2023 refactor); "
                     f"unused in forward, filled with the official initial values")
    hp = _plain(obj.get("hyper_parameters")) if isinstance(obj, Mapping) else None
    return Converted(layout, state, cfg, source, notes, hp if isinstance(hp, dict) else {})


def _plain(obj: Any) -> Any:
    """`shared.plain`, with an enum member recorded by a stand-in turned into its value."""
    if isinstance(obj, shared._Inert):
        args = obj.__dict__.get("_args") or ()
        if obj.__dict__.get("_state") is None and len(args) == 1 and \
                isinstance(args[0], (str, int, float)):
            return args[0]
        return shared.plain(obj)
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _names(keys: list[str], limit: int = 6) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _from_anomalib(sd: dict[str, torch.Tensor], source: str,
                   notes: list[str]) -> dict[str, torch.Tensor]:
    prefix = "model." if _anomalib(sd, "model.") else ""
    dropped = [k for k in sd if not k.startswith(prefix)] if prefix else []
    if dropped:
        notes.append(f"dropped (not network weights): {_names(dropped)}")
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for k, v in sd.items():
        if not k.startswith(prefix):
            continue
        key = k[len(prefix):]
        for theirs, ours in ANOMALIB_PREFIXES.items():
            if key.startswith(theirs):
                out[ours + key[len(theirs):]] = v
                break
        else:
            unknown.append(k)
    if unknown:
        raise CheckpointError(f"{source}: anomalib Reverse Distillation keys with no "
                              f"counterpart here: {_names(unknown)}")
    notes.append("no projection layers in anomalib's model: plain Reverse Distillation")
    return out


def _official_conv4(cfg: NetworkConfig) -> dict[str, torch.Tensor]:
    c = cfg.embedding_channels
    w = torch.empty(c, 2 * c, 1, 1)
    torch.nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    return {"bn.conv4.weight": w, "bn.bn4.weight": torch.ones(c), "bn.bn4.bias": torch.zeros(c),
            "bn.bn4.running_mean": torch.zeros(c), "bn.bn4.running_var": torch.ones(c),
            "bn.bn4.num_batches_tracked": torch.tensor(0)}


# -- the config a state dict implies -----------------------------------------------------------

def _count(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def _shape(state: Mapping[str, torch.Tensor], key: str, source: str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"{source}: no {key!r}, so its sizes cannot be read")
    return tuple(state[key].shape)


def _width_per_group(state: Mapping[str, torch.Tensor], prefix: str, planes: tuple[int, ...],
                     source: str, stages: tuple[str, ...] = ("layer1", "layer2", "layer3"),
                     ) -> int:
    """The width_per_group that gives each stage's inner width (torchvision's int rule)."""
    widths = [_shape(state, f"{prefix}{s}.0.conv1.weight", source)[0] for s in stages]
    wpg = round(widths[0] * 64 / planes[0])
    if wpg < 1 or any(int(p * (wpg / 64.0)) != w for p, w in zip(planes, widths)):
        raise CheckpointError(f"{source}: inner widths {widths} of {prefix}{'/'.join(stages)} "
                              f"fit no width_per_group for planes {list(planes)}")
    return wpg


def config_from_state(state: Mapping[str, torch.Tensor], source: str = "checkpoint",
                      size: int = PAPER.size) -> NetworkConfig:
    """The `NetworkConfig` whose modules have `state`'s shapes (our layout: ``bn.`` or
    ``bottleneck.`` for the OCBE, ``decoder.``, optionally ``encoder.``/``encoder_freeze.``/
    ``proj.``). Encoder blocks not in the file are the paper's; `size` is not in a file."""
    ocbe = "bn." if any(k.startswith("bn.bn_layer.") for k in state) else "bottleneck."
    if "decoder.layer1.0.conv1.weight" in state and \
            "decoder.layer1.0.conv3.weight" not in state:
        raise CheckpointError(f"{source}: a BasicBlock decoder (resnet18/34 backbone); only "
                              f"Bottleneck backbones (wide_resnet50_2 ...) are supported")
    c1 = _shape(state, f"{ocbe}conv1.weight", source)[1]
    if c1 % EXPANSION:
        raise CheckpointError(f"{source}: {ocbe}conv1 reads {c1} channels, not a multiple of "
                              f"{EXPANSION} (Bottleneck backbones only)")
    base = c1 // EXPANSION
    planes = (base, 2 * base, 4 * base)
    wpg = _width_per_group(state, "decoder.", planes[::-1], source)
    ocbe_wpg = _width_per_group(state, ocbe, (8 * base,), source, ("bn_layer",))
    kw: dict[str, Any] = {}
    for enc in ("encoder.", "encoder_freeze."):
        if f"{enc}conv1.weight" not in state:
            continue
        stem = _shape(state, f"{enc}conv1.weight", source)[0]
        enc_wpg = _width_per_group(state, enc, planes, source)
        blocks = tuple(_count(state, f"{enc}layer{i}.") for i in (1, 2, 3))
        if stem != base or enc_wpg != wpg:
            raise CheckpointError(f"{source}: {enc[:-1]} (base {stem}, width_per_group "
                                  f"{enc_wpg}) does not match the decoder (base {base}, "
                                  f"width_per_group {wpg})")
        if kw.get("encoder_blocks", blocks) != blocks:
            raise CheckpointError(f"{source}: encoder and encoder_freeze differ in depth "
                                  f"({kw['encoder_blocks']} vs {blocks})")
        kw["encoder_blocks"] = blocks
    proj = state.get("proj.proj_a.proj.0.weight")
    if proj is not None and proj.shape[1] != planes[0] * EXPANSION:
        raise CheckpointError(f"{source}: proj_a reads {proj.shape[1]} channels, the encoder's "
                              f"layer1 gives {planes[0] * EXPANSION}")
    return NetworkConfig(
        base=base, width_per_group=wpg,
        decoder_blocks=tuple(_count(state, f"decoder.layer{i}.") for i in (1, 2, 3)),
        ocbe_blocks=_count(state, f"{ocbe}bn_layer."),
        ocbe_width_per_group=None if ocbe_wpg == wpg else ocbe_wpg,
        output_conv=_count(state, "decoder.out1."), size=size, **kw)
