"""RD++'s training losses (official ``utils_train.loss_fucntion`` and ``Revisit_RDLoss``).

``distillation_loss``: for each scale, 1 - cosine between the teacher's and the student's
flattened per-sample maps, averaged over the batch; summed over scales (plain RD's loss).

``projection_loss`` trains the projection layer, (SSOT + 0.01 Recon + 0.1 Contrast) / 1.11:

* SSOT: per scale, the debiased Sinkhorn divergence between two point clouds in R^(C*H*W), the
  batch's softmaxed, flattened projected clean maps, and the same rows in a shuffled batch
  order;
* Recon: per scale, the mean over batch and pixels of 1 - cosine along channels between the
  projected pseudo-anomalous and the projected clean maps (``CosineSimilarity()`` on 4-D
  tensors compares channel vectors, unlike the distillation loss);
* Contrast: per scale, ``CosineEmbeddingLoss(margin=0.5)`` with target -1, i.e. the batch mean
  of max(0, cos - 0.5), between the teacher's (unprojected) pseudo-anomalous maps and the
  projected clean maps.

``rdpp_loss`` is the training step's total, distill + weight_proj * proj (weight_proj 0.2).

The Sinkhorn term uses ``geomloss.SamplesLoss`` with every argument of the official call: it is
the package the official code uses, so the value is the official one by construction rather
than a re-derivation (epsilon annealing from diameter**p = 1e14 down to blur**p = 0.0025 in
steps of scaling**p, one last extrapolation step, debiasing); it is maintained (0.3.x keeps the
0.2 solver as ``geomloss._legacy``, which is what ``SamplesLoss`` runs: its code is that of the
official pin 0.2.6, formatting and docstrings aside, diffed for 0.3.1); and for a batch-sized
cloud its "auto" backend picks the pure-torch tensorized solver, so KeOps is never needed.
geomloss switches autograd on globally when it returns; ``sinkhorn_divergence`` restores the
caller's grad mode.

Observation: the shuffled copy is a permutation of the same uniformly weighted point cloud, so
both measures are the same and the debiased divergence is zero, value and gradient, up to
rounding. Measured in float32 on random instance-normalised maps of the paper's shapes
(16 x 256 x 64 x 64, 16 x 512 x 32 x 32, 16 x 1024 x 16 x 16): |S| <= 5e-10 per scale and
|dS/dfeature| <= 2e-15, against S ~ 1e-7 for two unrelated batches of those shapes (the softmax
over ~1e6 entries puts every point within ~1e-3 of the others) and O(0.1-1) for the other
terms. SSOT is kept, exactly as the official computes it, but it does not train anything.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import geomloss
import torch
import torch.nn.functional as F

RECON_WEIGHT = 0.01
CONTRAST_WEIGHT = 0.1
PROJ_NORM = 1.11  # 1 + 0.01 + 0.1
CONTRAST_MARGIN = 0.5
WEIGHT_PROJ = 0.2  # official main.py --weight_proj
SSOT_MODES = ("geomloss", "zero")

# The official SamplesLoss call, argument for argument.
SINKHORN_ARGS = dict(loss="sinkhorn", p=2, blur=0.05, reach=None, diameter=10000000,
                     scaling=0.95, truncate=10, cost=None, kernel=None, cluster_scale=None,
                     debias=True, potentials=False, verbose=False, backend="auto")

Features = Sequence[torch.Tensor]


@functools.cache
def _sinkhorn() -> geomloss.SamplesLoss:
    return geomloss.SamplesLoss(**SINKHORN_ARGS)


def sinkhorn_divergence(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Official debiased Sinkhorn divergence between the uniform clouds x (N, D) and y (M, D),
    cost |x - y|^2 / 2, leaving the caller's grad mode as it was."""
    grad_mode = torch.is_grad_enabled()
    try:
        return _sinkhorn()(x, y)
    finally:
        torch.set_grad_enabled(grad_mode)


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def distillation_loss(teacher: Features, student: Features) -> torch.Tensor:
    """Sum over scales of the batch mean of 1 - cos(flattened teacher map, student map)."""
    return sum(torch.mean(1 - F.cosine_similarity(_flat(t), _flat(s), dim=1))
               for t, s in zip(teacher, student, strict=True))


def shuffle_index(batch: int, shuffle: torch.Tensor | Sequence[int] | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """The batch order SSOT compares against: `shuffle` if given (checked to be a permutation),
    else ``torch.randperm`` from `generator` (the global generator when None, as official)."""
    if shuffle is None:
        return torch.randperm(batch, generator=generator)
    idx = torch.as_tensor(shuffle, dtype=torch.long).cpu()
    if idx.shape != (batch,) or not torch.equal(idx.sort().values, torch.arange(batch)):
        raise ValueError(f"shuffle must be a permutation of range({batch}), got {idx.tolist()}")
    return idx


def ssot_loss(projected_normal: Features, shuffle: torch.Tensor | Sequence[int] | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Sum over scales of the Sinkhorn divergence between the per-sample softmax of the
    flattened projected clean maps and the same in the shuffled batch order (one permutation
    for all scales)."""
    idx = shuffle_index(projected_normal[0].shape[0], shuffle, generator)
    total = 0
    for p in projected_normal:
        pts = torch.softmax(_flat(p), dim=-1)
        total = total + sinkhorn_divergence(pts, pts[idx.to(p.device)])
    return total


def reconstruction_loss(projected_noised: Features, projected_normal: Features) -> torch.Tensor:
    """Sum over scales of the mean over batch and pixels of 1 - channel-wise cosine."""
    return sum(torch.mean(1 - F.cosine_similarity(a, n, dim=1))
               for a, n in zip(projected_noised, projected_normal, strict=True))


def contrast_loss(noised_features: Features, projected_normal: Features) -> torch.Tensor:
    """Sum over scales of CosineEmbeddingLoss(margin=0.5, target=-1) between the flattened
    teacher maps of the noised images and the projected clean maps; the target lives on the
    inputs' device (the official puts it on 'cuda' unconditionally)."""
    total = 0
    for n, p in zip(noised_features, projected_normal, strict=True):
        target = -torch.ones(p.shape[0], device=p.device, dtype=p.dtype)
        total = total + F.cosine_embedding_loss(_flat(n), _flat(p), target,
                                                margin=CONTRAST_MARGIN)
    return total


def projection_terms(noised_features: Features, projected_noised: Features,
                     projected_normal: Features, shuffle=None,
                     generator: torch.Generator | None = None,
                     ssot: str = "geomloss") -> dict[str, torch.Tensor]:
    """``proj`` = (ssot + 0.01 recon + 0.1 contrast) / 1.11 and its three terms.

    ``ssot="zero"`` takes the SSOT term as the exact zero it is (a divergence between a cloud
    and itself, see the module docstring) instead of running ~370 annealed Sinkhorn iterations
    per scale for it (most of a tiny CPU step); the shuffle is still drawn, so the random
    streams, and hence the batches and noise, stay those of ``"geomloss"``."""
    if ssot not in SSOT_MODES:
        raise ValueError(f"ssot must be one of {SSOT_MODES}, not {ssot!r}")
    if ssot == "zero":
        shuffle_index(projected_normal[0].shape[0], shuffle, generator)
        ssot_value = projected_normal[0].new_zeros(())
    else:
        ssot_value = ssot_loss(projected_normal, shuffle, generator)
    ssot = ssot_value
    recon = reconstruction_loss(projected_noised, projected_normal)
    contrast = contrast_loss(noised_features, projected_normal)
    proj = (ssot + RECON_WEIGHT * recon + CONTRAST_WEIGHT * contrast) / PROJ_NORM
    return {"proj": proj, "ssot": ssot, "recon": recon, "contrast": contrast}


def projection_loss(noised_features: Features, projected_noised: Features,
                    projected_normal: Features, shuffle=None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """The official ``Revisit_RDLoss()(noised_features, projected_noised, projected_normal)``."""
    return projection_terms(noised_features, projected_noised, projected_normal, shuffle,
                            generator)["proj"]


def rdpp_loss(teacher: Features, student: Features, noised_features: Features,
              projected_noised: Features, projected_normal: Features,
              weight_proj: float = WEIGHT_PROJ, shuffle=None,
              generator: torch.Generator | None = None,
              ssot: str = "geomloss") -> dict[str, torch.Tensor]:
    """One training step's loss: ``loss`` = distill + weight_proj * proj, with ``distill``,
    ``proj``, ``ssot``, ``recon`` and ``contrast`` beside it. `teacher` are the encoder's maps
    of the clean images, `student` the decoder's outputs."""
    terms = projection_terms(noised_features, projected_noised, projected_normal, shuffle,
                             generator, ssot)
    distill = distillation_loss(teacher, student)
    return {"loss": distill + weight_proj * terms["proj"], "distill": distill, **terms}
