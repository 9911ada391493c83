"""Classifier checkpoints: the harness's files and the ones users already have.

- **The harness's** (``bench train classifier``): safetensors with method "classifier" and the
  `ClassifierConfig` (architecture, pathologies in head order, input frame and normalisation,
  uncertainty policy).
- **A torchvision-layout state dict** (``torch.save(model.state_dict())`` of a torchvision
  DenseNet-121 / ResNet-50 / ResNet-152 whose head was replaced by a P-way linear layer, as
  CheXpert-style training scripts write it): a bare state dict, or one under ``state_dict`` /
  ``model`` / ``model_state_dict``, with ``module.`` / ``model.`` prefixes stripped and
  torchvision's old DenseNet key names (``norm.1``) renamed. The architecture is read off the
  keys and shapes; the pathologies are the ``pathologies`` option, else, for a 14-way head,
  CheXlocalize's ``CHEXPERT_TASKS`` order.
- **torchxrayvision's DenseNet** (a state dict with a one-channel ``features.conv0``, or the
  pickled module its releases ship, e.g. ``nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121
  -d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt``, from a local file: nothing is downloaded). The
  ``op_threshs`` buffer is dropped, so the head gives plain logits (no sigmoid, no
  ``op_norm``); the input is one channel at 224 in [-1024, 1024] (`model`); the pathologies are
  the ``pathologies`` option, else those of ``xrv_weights`` (default
  ``densenet121-res224-all``) as the installed torchxrayvision lists them. The pickled module is
  read with ``torch.load(weights_only=True)`` and inert stand-ins for torchxrayvision's and
  ``torch.nn``'s module classes that only record state; nothing is executed.

Every key that differs from the model is named (`bench.methods._shared.checkpoints.load_into`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from bench.errors import CheckpointError
from bench.methods._shared import checkpoints as shared

from .model import Classifier, ClassifierConfig

METHOD = "classifier"
# CheXlocalize eval_constants.CHEXPERT_TASKS: the head order of its 14-way models
CHEXPERT_TASKS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion",
    "Airspace Opacity", "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax",
    "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices",
)
# torchxrayvision model_urls['densenet121-res224-all']['labels'] (used when it is not installed)
XRV_ALL = ("Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema",
           "Fibrosis", "Effusion", "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule",
           "Mass", "Hernia", "Lung Lesion", "Fracture", "Lung Opacity",
           "Enlarged Cardiomediastinum")
WRAPPERS = ("state_dict", "model", "model_state_dict")
PREFIXES = ("module.", "model.")


def save_weights(path: str | Path, model: Classifier) -> None:
    shared.save_weights(path, model.state_dict(), model.cfg.to_json(), method=METHOD)


def load_classifier(path: str | Path, pathologies: list[str] | None = None,
                    size: int | None = None, xrv_weights: str | None = None,
                    ) -> tuple[Classifier, dict[str, Any]]:
    """(model in eval mode, info) from any of the three formats."""
    p = Path(path)
    if shared.file_format(p) == "safetensors":
        try:
            state, cfg_json, _ = shared.read_weights(p, METHOD)
        except CheckpointError as exc:
            if "without the harness's metadata" not in str(exc):
                raise
            from safetensors.torch import load_file

            return _from_state(load_file(str(p)), str(p), pathologies, size, xrv_weights)
        cfg = ClassifierConfig.from_json(cfg_json)
        cfg.imagenet_weights = False  # every weight comes from the file
        model = Classifier(cfg)
        shared.load_into(model, state, str(p), strict=True)
        return model.eval(), {"format": "afloc-bench safetensors (bench train classifier)"}
    obj = read_pickle(p)
    return _from_state(obj, str(p), pathologies, size, xrv_weights)


def read_pickle(path: Path) -> Any:
    """A ``torch.save`` file: plain tensors and containers, or a pickled torchxrayvision /
    torchvision module read through inert stand-ins (`module_state`)."""
    try:
        return shared.safe_torch_load(path)
    except CheckpointError as first:
        stubs: dict[str, type] = {}
        for _ in range(64):  # one stand-in per module class the file names
            try:
                with torch.serialization.safe_globals(_stub_globals(stubs)):
                    obj = torch.load(str(path), map_location="cpu", weights_only=True)
                return module_state(obj)
            except Exception as exc:  # the next global the file asks for
                name = _unsupported_global(str(exc))
                if name is None or name in stubs or not _module_class(name):
                    raise first from exc
                stubs[name] = shared._make_stub(name)
        raise first


def _module_class(name: str) -> bool:
    return (name.startswith("torchxrayvision.") or name.startswith("torch.nn.modules.")
            or name.startswith("torchvision.models."))


def _unsupported_global(message: str) -> str | None:
    m = re.search(r"GLOBAL ([\w.]+)", message)
    return m.group(1) if m else None


def _stub_globals(stubs: dict[str, type]) -> list[Any]:
    out: list[Any] = [(cls, name) for name, cls in stubs.items()]
    out += [set, (set, "builtins.set"), (torch.nn.Parameter, "torch.nn.parameter.Parameter")]
    return out


def module_state(obj: Any, prefix: str = "") -> Any:
    """A pickled module read through stand-ins -> its flat state dict (parameters and buffers,
    torch's key names); anything else is returned as is."""
    if not isinstance(obj, shared._Inert):
        return obj
    state = obj.__dict__.get("_state") or {}
    out: dict[str, torch.Tensor] = {}
    for kind in ("_parameters", "_buffers"):
        for k, v in (state.get(kind) or {}).items():
            if isinstance(v, torch.Tensor) and k not in state.get("_non_persistent_buffers_set",
                                                                  ()):
                out[prefix + k] = v.detach()
    for k, child in (state.get("_modules") or {}).items():
        if child is not None:
            sub = module_state(child, f"{prefix}{k}.")
            if isinstance(sub, dict):
                out.update(sub)
    return out


def unwrap(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The state dict of a torch.save file: bare, or under a usual wrapper key."""
    if isinstance(obj, Mapping):
        for key in WRAPPERS:
            if key in obj and isinstance(obj[key], Mapping):
                return unwrap(obj[key], source)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and len(tensors) == len(obj):
            state = dict(tensors)
            for prefix in PREFIXES:
                if all(k.startswith(prefix) for k in state):
                    state = {k[len(prefix):]: v for k, v in state.items()}
            from bench.methods._shared.encoders import _densenet_keys

            return _densenet_keys(state)
    keys = ", ".join(map(repr, list(obj)[:5])) if isinstance(obj, Mapping) else ""
    raise CheckpointError(f"{source}: not a classifier state dict (top-level entries: "
                          f"{keys or type(obj).__name__})")


def infer_arch(state: Mapping[str, torch.Tensor], source: str) -> str:
    if any(k.startswith("features.denseblock") for k in state):
        n3 = len({k.split(".")[2] for k in state if k.startswith("features.denseblock3.")})
        return "densenet121" if n3 == 24 else "densenet-tiny" if n3 == 2 else _unknown(source)
    if "layer4.0.conv3.weight" in state:
        n3 = len({k.split(".")[1] for k in state if k.startswith("layer3.")})
        return {6: "resnet50", 36: "resnet152"}.get(n3) or _unknown(source)
    return _unknown(source)


def _unknown(source: str) -> str:
    raise CheckpointError(f"{source}: not a DenseNet-121, ResNet-50 or ResNet-152 in "
                          f"torchvision's layout (features.denseblock*/classifier or "
                          f"layer1-4/fc keys)")


def xrv_labels(weights: str | None) -> list[str]:
    name = weights or "densenet121-res224-all"
    try:
        from torchxrayvision.models import model_urls

        return list(model_urls[name]["labels"])
    except ImportError:
        if name in ("all", "densenet121-res224-all"):
            return list(XRV_ALL)
        raise CheckpointError(f"torchxrayvision is not installed: pass pathologies=... for "
                              f"the {name} weights") from None
    except KeyError:
        raise CheckpointError(f"torchxrayvision knows no weights named {name!r}") from None


def _from_state(obj: Any, source: str, pathologies: list[str] | None, size: int | None,
                xrv_weights: str | None) -> tuple[Classifier, dict[str, Any]]:
    state = unwrap(obj, source)
    dropped = [k for k in state if k == "op_threshs" or k.endswith(".op_threshs")]
    for k in dropped:
        state.pop(k)
    arch = infer_arch(state, source)
    head = "classifier.weight" if arch.startswith("densenet") else "fc.weight"
    if head not in state:
        raise CheckpointError(f"{source}: no head weight {head!r}")
    n = int(state[head].shape[0])
    conv0 = state.get("features.conv0.weight")
    xrv = conv0 is not None and int(conv0.shape[1]) == 1
    if pathologies:
        names = list(pathologies)
    elif xrv:
        names = xrv_labels(xrv_weights)
    elif n == len(CHEXPERT_TASKS):
        names = list(CHEXPERT_TASKS)
    else:
        raise CheckpointError(f"{source}: a {n}-way head; pass pathologies=NAME,NAME,... in "
                              f"head order")
    if len(names) != n:
        raise CheckpointError(f"{source}: the head has {n} outputs but {len(names)} "
                              f"pathologies were given")
    if xrv:
        cfg = ClassifierConfig(arch=arch, pathologies=names, size=size or 224,
                               frame="short_side_crop", normalize="unit", input_kind="xrv",
                               imagenet_weights=False, source="torchxrayvision DenseNet")
    else:
        cfg = ClassifierConfig(arch=arch, pathologies=names, size=size or 320, frame="square",
                               normalize="imagenet", imagenet_weights=False,
                               source="torchvision-layout state dict")
    model = Classifier(cfg)
    shared.load_into(model, state, source, strict=True)
    info = {"format": cfg.source, "arch": arch}
    if dropped:
        info["dropped"] = "op_threshs (torchxrayvision's sigmoid + op_norm calibration)"
    return model.eval(), info
