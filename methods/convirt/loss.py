"""ConVIRT's loss (Zhang et al. 2022, eq. 2-4; ViLMedic ``blocks/losses/selfsup/ConVIRTLoss.py``).

For image embeddings v and text embeddings u of a batch of N pairs, with cosine similarities
S_ik = cos(v_i, u_k) and temperature tau:

    l_i(v->u) = -log( exp(S_ii / tau) / sum_k exp(S_ik / tau) )     image to text
    l_i(u->v) = -log( exp(S_ii / tau) / sum_k exp(S_ki / tau) )     text to image
    L = mean_i( lambda * l_i(v->u) + (1 - lambda) * l_i(u->v) )

lambda weights the image-to-text direction (ViLMedic's ``loss_v``: the visual rows against every
text), tau = 0.1 and lambda = 0.75 in ViLMedic's convirt-mimic config and the paper. Each norm
is clamped at 1e-8 as ViLMedic's ``pairwise_cosine_distance`` does. ViLMedic computes
exp / sum / log; here ``cross_entropy`` (a log-softmax) gives the same values without the
overflow risk, and the numerator's cosine is the matrix's diagonal (ViLMedic recomputes it
with ``nn.CosineSimilarity``, equal up to rounding).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

EPS = 1e-8
TAU = 0.1
LAMBDA = 0.75


def unit(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """x / max(|x|, 1e-8) along `dim` (ViLMedic's clamp)."""
    return x / x.norm(dim=dim, keepdim=True).clamp(min=EPS)


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[A, B] cosines of the rows of `a` [A, D] with the rows of `b` [B, D]."""
    return unit(a) @ unit(b).t()


def convirt_loss(visual: torch.Tensor, linguistic: torch.Tensor, tau: float = TAU,
                 lam: float = LAMBDA, gather: Any = None) -> dict[str, torch.Tensor]:
    """{"loss", "image_to_text", "text_to_image"} (the two directions' means, for the log).

    ``gather`` (optional, ``torchrun``): all-gathers a tensor across ranks with autograd and
    returns (gathered, offset of this rank's rows); each rank then scores its images against
    every rank's texts and its texts against every rank's images.
    """
    if gather is None:
        sim = cosine_matrix(visual, linguistic)
        rows, cols, offset = sim, sim.t(), 0
    else:
        all_txt, offset = gather(linguistic)
        all_img, _ = gather(visual)
        rows = cosine_matrix(visual, all_txt)  # this rank's images vs every text
        cols = cosine_matrix(linguistic, all_img)  # this rank's texts vs every image
    labels = torch.arange(offset, offset + visual.shape[0], device=visual.device)
    loss_v = F.cross_entropy(rows / tau, labels, reduction="none")
    loss_l = F.cross_entropy(cols / tau, labels, reduction="none")
    loss = (lam * loss_v + (1.0 - lam) * loss_l).mean()
    return {"loss": loss, "image_to_text": loss_v.detach().mean(),
            "text_to_image": loss_l.detach().mean()}
