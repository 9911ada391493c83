"""CAM methods over a supervised classifier: ``gradcam``, ``gradcampp``, ``eigencam``, one table.

Each row of `CAMS` registers a method: a `bench.methods.classifier` classifier (any checkpoint
it loads, or an ensemble) and a class of the ``grad-cam`` package (pytorch-grad-cam). The
``cam`` option swaps in any other class of the package by name (``--method-arg
gradcam.cam=LayerCAM``, ``HiResCAM``, ``XGradCAM``, ``ScoreCAM``, ...). How the package is used,
and why:

- **One target per (image, query)**: the package sums ``target(output)`` over
  ``zip(targets, outputs)``, so one target for a batch of several images gives a CAM to image 0
  only (pytorch-grad-cam #328, #264, #322). Each (image, query) pair is one row of the batch
  (the image repeated, BatchNorm in eval mode) with its own ``ClassifierOutputTarget``.
- **Logit targets**: the classifier returns logits and the target is the query's logit. Grad-CAM
  is invariant to the sigmoid (its derivative p(1-p) is one positive factor per map, which the
  min-max scaling cancels); **Grad-CAM++ is not** (its alpha mixes the gradient's 2nd and 3rd
  powers, eq. 19, which assumes an exponential output, #369), so its maps here are those of the
  logit, and would differ on the probability.
- **The DenseNet hook**: torchvision's DenseNet applies an in-place ReLU to ``norm5``'s output
  in ``forward``; a hook on ``features.norm5`` (the package README's ``model.features[-1]``)
  stores post-ReLU activations on the CPU and pre-ReLU ones on a GPU. The classifier here runs
  that ReLU as a module that is not in place (``final_relu``) and the CAMs hook its output,
  the rectified features the head pools: the same on every device. ResNets: ``layer4[-1]``.
- **One CAM object per classifier**, built once and entered as a ``with`` context, reused for
  every batch and released in `close` (the package's leak reports, #132, #195, #483).
- **Eigen-CAM ignores targets** (#281): its map is the first principal component of the
  activations, the same for every pathology of an image (it is computed once per image and
  shared); the SVD's sign is arbitrary, so a map can come out inverted (and ReLU-zeroed).
- **The backbone runs once per image**: for the classes whose maps are a function of the target
  layer's activations and of the target's gradient there (`ON_FEATURES`: Grad-CAM, Grad-CAM++,
  Eigen-CAM, LayerCAM, ...), the package is handed the classifier's head (global average pool
  + linear) with the features as its input, so each (image, query) row costs a head's forward
  and backward, not the backbone's; the maps are the same (the gradient of a logit with respect
  to the features does not depend on what came before them; a test checks it against the
  whole-network path). Other classes (ScoreCAM, AblationCAM, FullGrad, ...) run the whole
  network per row.
- Maps: the package's output, ReLU then min-max scaled per map on the feature grid and resized
  (bilinear) to the input side, on the classifier's frame (a square resize by default, as
  CheXlocalize's 320 x 320). An ensemble averages its members' maps (and probabilities), as
  CheXlocalize's ensembles did.
- `classify` gives the classifier's sigmoid probabilities, so these methods fill the
  diagnosis columns too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from bench.errors import UsageError
from bench.methods.base import Option, parse_bool
from bench.methods.classifier.method import ClassifierBase
from bench.registry import register_method
from bench.types import Capabilities, Query, Sample

# package classes whose maps do not depend on the target (computed once per image)
TARGET_AGNOSTIC = frozenset({"EigenCAM", "KPCA_CAM"})
# package classes whose maps depend only on the target layer's activations and gradients: run
# on the classifier's head with the features as input (the backbone once per image)
ON_FEATURES = frozenset({"GradCAM", "GradCAMPlusPlus", "XGradCAM", "HiResCAM", "LayerCAM",
                         "GradCAMElementWise", "EigenCAM", "EigenGradCAM", "KPCA_CAM"})
# package classes that are not CAM methods of the BaseCAM kind
NOT_CAMS = frozenset({"ActivationsAndGradients", "GuidedBackpropReLUModel", "AblationLayer",
                      "AblationLayerVit", "AblationLayerFasterRCNN",
                      "DeepFeatureFactorization", "SESS", "RefineCAM"})
LOGIT_NOTE = ("targets are the classifier's logits (one per image and pathology); Grad-CAM is "
              "invariant to the sigmoid, Grad-CAM++ is not (its maps here are the logit's)")


@dataclass(frozen=True)
class CamRow:
    name: str
    package_class: str
    description: str
    map_note: str
    query_agnostic: bool = False


CAMS = (
    CamRow("gradcam", "GradCAM",
           "Grad-CAM over a supervised classifier (pytorch-grad-cam; logit targets)",
           LOGIT_NOTE + "."),
    CamRow("gradcampp", "GradCAMPlusPlus",
           "Grad-CAM++ over a supervised classifier (pytorch-grad-cam; logit targets)",
           LOGIT_NOTE + "; the package's eq. 19 weights."),
    CamRow("eigencam", "EigenCAM",
           "Eigen-CAM over a supervised classifier (pytorch-grad-cam; ignores the target: "
           "one map per image)",
           "ignores the target: every pathology of an image gets the same map (the "
           "first principal component of the last features; its sign is arbitrary).",
           query_agnostic=True),
)


def cam_class(name: str) -> type:
    """A class of the grad-cam package by name; UsageError naming the known ones."""
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.base_cam import BaseCAM

    known = sorted(n for n in dir(pgc) if isinstance(getattr(pgc, n), type)
                   and issubclass(getattr(pgc, n), BaseCAM) and n not in NOT_CAMS)
    if name not in known:
        raise UsageError(f"grad-cam has no CAM class {name!r} (known: {', '.join(known)})")
    return getattr(pgc, name)


def cam_maps(cam: Any, x: torch.Tensor, targets: list[int]) -> np.ndarray:
    """The package's maps [B, H, W] for a batch whose row b is scored on output targets[b]: one
    ``ClassifierOutputTarget`` per row, never one for the batch."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if len(targets) != x.shape[0]:
        raise ValueError("one target per row of the batch")
    with torch.enable_grad():
        out = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    return np.asarray(out, dtype=np.float32)


class HeadOnly(torch.nn.Module):
    """A classifier's head (global average pool + linear) taking its features: the CAM input
    when the backbone has run already. `tap` (an identity) is the CAM's target layer."""

    def __init__(self, classifier: torch.nn.Module):
        super().__init__()
        self.tap = torch.nn.Identity()
        self.head = classifier.head()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.tap(features).mean((2, 3)))


def upsample(maps: np.ndarray, size: int) -> np.ndarray:
    """Grid maps -> the input side as the package finishes them: min-max, cv2 bilinear, min-max
    (`scale_cam_image` per layer, then the layer average's)."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    return scale_cam_image(np.maximum(scale_cam_image(maps, (size, size)), 0))


class CamMethod(ClassifierBase):
    """A CAM of the grad-cam package over a classifier; subclasses are made from `CAMS`."""

    capabilities = Capabilities(localize=True, classify=True)
    row: ClassVar[CamRow]
    option_specs: ClassVar[dict[str, Option]] = {
        **ClassifierBase.option_specs,
        "cam": Option(None, "any CAM class of the grad-cam package by name (default: the "
                      "method's own, e.g. GradCAM)"),
        "eigen_smooth": Option(False, "the package's eigen_smooth (first principal component "
                               "of the weighted activations)", parse_bool),
    }

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", seed: int = 0,
                 **options: Any):
        super().__init__(checkpoint, device, seed, **options)
        self.cam_name = self.option("cam") or self.row.package_class
        cls = cam_class(self.cam_name)
        self.target_agnostic = self.cam_name in TARGET_AGNOSTIC
        self.on_features = self.cam_name in ON_FEATURES
        self.cams = []
        for m in self.models:  # one CAM object per member, reused for every batch
            if self.on_features:
                head = HeadOnly(m).to(self.device).eval()
                cam = cls(model=head, target_layers=[head.tap])
            else:
                cam = cls(model=m, target_layers=[m.target_layer()])
            self.cams.append(cam.__enter__())

    def _maps(self, x: list[torch.Tensor], targets: list[list[int]]) -> np.ndarray:
        """Mean over members of the maps of rows x[member][b] on targets[member][b]: the
        members' features (`on_features`) or the images."""
        maps = []
        for cam, xm, t in zip(self.cams, x, targets):
            if self.on_features:  # a leaf that takes the gradient (the backbone ran already)
                xm = xm.detach().requires_grad_(True)
            if self.option("eigen_smooth"):
                from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

                with torch.enable_grad():
                    m = np.asarray(cam(input_tensor=xm, targets=[ClassifierOutputTarget(int(i))
                                                                  for i in t],
                                       eigen_smooth=True), np.float32)
            else:
                m = cam_maps(cam, xm, t)
            maps.append(upsample(m, self.frame.size) if self.on_features else m)
        return np.mean(maps, 0).astype(np.float32) if len(maps) > 1 else maps[0]

    def _cam_inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per member, what its CAM object takes: the features (once per image, one image per
        pass, so a map never depends on the images batched with it) or x."""
        if not self.on_features:
            return [x] * len(self.models)
        with torch.no_grad():
            return [torch.cat([m.feature_map(x[i:i + 1]) for i in range(x.shape[0])])
                    for m in self.models]

    def localize(self, samples: list[Sample], queries: list[list[Query]]) -> list[list[np.ndarray]]:
        self._check_open()
        if len(samples) != len(queries):
            raise UsageError("localize: one query list per sample")
        out: list[list[np.ndarray | None]] = [[None] * len(qs) for qs in queries]
        heads = self.indices(sorted({q.pathology for qs in queries for q in qs}))
        names = sorted({q.pathology for qs in queries for q in qs})
        head_of = [dict(zip(names, h)) for h in heads]  # per member: pathology -> output
        for a in range(0, len(samples), self.batch_size):
            chunk = list(range(a, min(a + self.batch_size, len(samples))))
            x = self._cam_inputs(self.inputs([samples[i] for i in chunk]))
            if self.target_agnostic:  # one map per image, whatever the query
                rows = [i for i in chunk if queries[i]]
                if not rows:
                    continue
                sel = [chunk.index(i) for i in rows]
                firsts = [[h[queries[i][0].pathology] for i in rows] for h in head_of]
                maps = self._maps([xm[sel] for xm in x], firsts)
                for i, m in zip(rows, maps):
                    out[i] = [m] * len(queries[i])
                continue
            items = [(i, k) for i in chunk for k in range(len(queries[i]))]
            # the head path: one image's queries per pass, so a map never depends on which
            # other images the caller batched with it (numpy's buffered sums)
            parts = ([[(i, k) for k in range(len(queries[i]))] for i in chunk if queries[i]]
                     if self.on_features else
                     [items[b:b + self.batch_size] for b in range(0, len(items),
                                                                  self.batch_size)])
            for part in parts:
                rows = [chunk.index(i) for i, _ in part]
                xb = [xm[rows] for xm in x]
                targets = [[h[queries[i][k].pathology] for i, k in part] for h in head_of]
                for (i, k), m in zip(part, self._maps(xb, targets)):
                    out[i][k] = m
        return out  # type: ignore[return-value]

    def config(self) -> dict[str, Any]:
        return {**super().config(), "cam": self.cam_name,
                "target_layer": ("final_relu (the DenseNet's rectified norm5 output, not in "
                                 "place)" if self.models[0].cfg.family == "densenet"
                                 else "layer4[-1]"),
                "targets": "logits, one per (image, pathology)",
                "target_agnostic": self.target_agnostic,
                "backbone_once_per_image": self.on_features,
                "eigen_smooth": bool(self.option("eigen_smooth")),
                "map": "package output: ReLU, min-max per map, bilinear to the input side; "
                       "ensemble mean", "note": self.row.map_note}

    def close(self) -> None:
        for cam in getattr(self, "cams", []):
            cam.__exit__(None, None, None)
        self.cams = []
        super().close()

    @classmethod
    def default_checkpoint(cls) -> str | None:
        """The tiny classifier `bench train classifier --dataset synthetic-mimic --preset tiny`
        writes (the classifier's default)."""
        from bench.paths import default_checkpoint

        p = default_checkpoint("classifier")
        return str(p) if p else None


def _make(row: CamRow) -> type:
    cls = type(f"{row.package_class}Method", (CamMethod,), {
        "row": row, "description": row.description, "query_agnostic": row.query_agnostic,
        "__module__": __name__,
        "__doc__": f"{row.description}. {row.map_note}"})
    return register_method(row.name)(cls)


CAM_METHODS = {row.name: _make(row) for row in CAMS}
