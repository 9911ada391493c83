"""The ``classifier`` method: a supervised multi-label classifier's probabilities (sigmoid of
its logits), and the machinery the CAM methods (`bench.methods.cam`) build on: loading one
classifier or an ensemble, the input recipe each checkpoint declares, and matching a query's
pathology to a head output.

Weights: ``checkpoint=`` any file `checkpoint.load_classifier` reads (``bench train
classifier``'s safetensors, a torchvision-layout state dict, torchxrayvision's DenseNet);
``ensemble=A,B,...`` adds more checkpoints of the same input recipe, whose probabilities (and
maps) are averaged, as CheXlocalize averaged its ensembles. Without a checkpoint the tiny
preset's architecture is built with RANDOM weights (a notice says so in run.json).
"""

from __future__ import annotations

import gc
from typing import Any, ClassVar

import numpy as np
import torch

from bench.errors import UsageError
from bench.imaging.geometry import Frame
from bench.methods.base import SUPERVISED, Method, Option, parse_bool, sha256_file
from bench.registry import register_method
from bench.types import Capabilities, Sample

from .model import Classifier, ClassifierConfig
from .train import BLANKS, POLICIES, PRESETS, recipe_of

DESCRIPTION = ("Supervised multi-label classifier (DenseNet-121 / ResNet-50 / ResNet-152, "
               "CheXpert uncertainty policies); probabilities = sigmoid(logits)")
# the names one label goes by in different label sets (CheXlocalize, CheXpert, NIH/xrv)
ALIASES = {"Airspace Opacity": ("Lung Opacity",), "Lung Opacity": ("Airspace Opacity",),
           "Pleural Effusion": ("Effusion",), "Effusion": ("Pleural Effusion",)}
TINY = ClassifierConfig(arch="densenet-tiny", size=PRESETS["tiny"]["size"],
                        imagenet_weights=False, preset="tiny", source="random init")


def split_list(raw: Any) -> list[str]:
    if isinstance(raw, (list, tuple)):
        return [str(x).strip() for x in raw if str(x).strip()]
    return [x.strip() for x in str(raw).split(",") if x.strip()]


def head_index(pathologies: list[str], pathology: str) -> int:
    """The head output of `pathology` (directly, or by an alias); UsageError if none."""
    for name in (pathology, *ALIASES.get(pathology, ())):
        if name in pathologies:
            return pathologies.index(name)
    raise UsageError(f"the classifier has no output for {pathology!r} (it predicts "
                     f"{', '.join(p for p in pathologies if p)})")


class ClassifierBase(Method):
    """Loads the classifier(s); `classify` averages the members' sigmoid probabilities."""

    learning = SUPERVISED
    option_specs: ClassVar[dict[str, Option]] = {
        "checkpoint": Option(None, "classifier weights: bench train classifier's file, a "
                             "torchvision-layout state dict, or torchxrayvision's DenseNet"),
        "ensemble": Option(None, "more classifier checkpoints (comma-separated) whose outputs "
                           "are averaged with the checkpoint's", split_list),
        "pathologies": Option(None, "head order of a state dict that does not say it "
                              "(comma-separated; default for a 14-way head: CheXlocalize's "
                              "CHEXPERT_TASKS)", split_list),
        "size": Option(None, "input side of a state dict (default 320; torchxrayvision 224)",
                       int),
        "xrv_weights": Option(None, "torchxrayvision weights name giving the labels of its "
                              "DenseNet (default densenet121-res224-all)"),
        "batch_size": Option(16, "images per forward pass", int),
    }

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", seed: int = 0,
                 **options: Any):
        super().__init__(checkpoint, device, seed, **options)
        self.batch_size = int(self.option("batch_size"))
        paths = ([checkpoint] if checkpoint else []) + list(self.option("ensemble") or [])
        self.models: list[Classifier] = []
        self.infos: list[dict[str, Any]] = []
        if not paths:
            torch.manual_seed(seed)
            from bench.datasets.mimic_cxr import CHEXPERT_LABELS

            cfg = ClassifierConfig(**{**TINY.to_json(), "pathologies": list(CHEXPERT_LABELS)})
            self.models.append(Classifier(cfg))
            self.infos.append({"format": "none", "random_init": True,
                               "notice": "no checkpoint: tiny DenseNet with RANDOM weights "
                                         "(train one with bench train classifier)"})
        for p in paths:
            from .checkpoint import load_classifier

            model, info = load_classifier(p, self.option("pathologies"), self.option("size"),
                                          self.option("xrv_weights"))
            self.models.append(model)
            self.infos.append({"checkpoint": str(p), **info})
        first = self.models[0].cfg
        for m, p in zip(self.models[1:], paths[1:]):
            c = m.cfg
            if (c.size, c.frame, c.normalize, c.input_kind) != (first.size, first.frame,
                                                                 first.normalize,
                                                                 first.input_kind):
                raise UsageError(f"ensemble member {p} sees other inputs ({c.frame} {c.size}, "
                                 f"{c.normalize}) than {paths[0]} ({first.frame} {first.size}, "
                                 f"{first.normalize})")
        for m in self.models:
            m.to(device).eval()
        self.pathologies = list(first.pathologies)
        recipe = recipe_of(first)
        self.recipes = {"localize": recipe, "classify": recipe}
        self.frame = Frame(first.frame, first.size)

    def _check_open(self) -> None:
        if self.closed:
            raise UsageError(f"method '{self.name}' was closed; build a new one")

    def indices(self, pathologies: list[str]) -> list[list[int]]:
        """Per member, the head outputs of `pathologies` (members may order them apart)."""
        return [[head_index(list(m.cfg.pathologies), p) for p in pathologies]
                for m in self.models]

    def inputs(self, samples: list[Sample]) -> torch.Tensor:
        return self.recipes["classify"].tensor(samples).to(self.device)

    @torch.no_grad()
    def classify(self, samples: list[Sample], pathologies: list[str]) -> np.ndarray:
        self._check_open()
        idx = self.indices(pathologies)
        out = []
        for a in range(0, len(samples), self.batch_size):
            x = self.inputs(samples[a:a + self.batch_size])
            probs = torch.stack([torch.sigmoid(m(x).float())[:, i]
                                 for m, i in zip(self.models, idx)]).mean(0)
            out.append(probs.cpu().double().numpy())
        return np.concatenate(out, 0) if out else np.zeros((0, len(pathologies)))

    def config(self) -> dict[str, Any]:
        cfg = self.models[0].cfg
        return {"arch": cfg.arch, "pathologies": cfg.pathologies, "size": cfg.size,
                "frame": cfg.frame, "normalize": cfg.normalize, "input_kind": cfg.input_kind,
                "uncertainty": cfg.uncertainty, "members": len(self.models),
                "ensemble": [str(p) for p in self.option("ensemble") or []],
                "checkpoints": self.infos, "probability": "sigmoid(logit), ensemble mean",
                "random_init": any(i.get("random_init") for i in self.infos),
                "notice": next((i["notice"] for i in self.infos if "notice" in i), None)}

    def close(self) -> None:
        self.models = []
        super().close()
        gc.collect()

    @classmethod
    def weights_identity(cls, options: dict[str, Any]) -> dict[str, Any] | None:
        members = split_list(options.get("ensemble") or [])
        if not members:
            return None
        return {"ensemble": [{"path": p, "sha256": sha256_file(p)} for p in members]}


@register_method("classifier")
class ClassifierMethod(ClassifierBase):
    """Supervised multi-label classifier; probabilities = sigmoid(logits)."""

    capabilities = Capabilities(classify=True, trainable=True)
    description = DESCRIPTION

    train_presets = tuple(PRESETS)
    train_option_specs: ClassVar[dict[str, Option]] = {
        "arch": Option(None, "densenet121 (paper), resnet50, resnet152, densenet-tiny (tiny)",
                       choices=("densenet121", "resnet50", "resnet152", "densenet-tiny")),
        "size": Option(None, "input side, square resize (paper 320, tiny 224)", int),
        "uncertainty": Option("u-ones", "CheXpert uncertain labels: u-ones, u-zeros, ignore",
                              choices=POLICIES),
        "blank": Option("zero", "unmentioned labels: zero (CheXpert's convention) or ignore",
                        choices=BLANKS),
        "imagenet": Option(None, "start from ImageNet weights (local torchvision cache; paper: "
                           "true, tiny: false)", parse_bool),
        "pathologies": Option(None, "train on these labels only (comma-separated; default: "
                              "the dataset's)", split_list),
    }

    @classmethod
    def train_task(cls, request: Any, data: Any) -> Any:
        from .train import make_task

        return make_task(request, data)

