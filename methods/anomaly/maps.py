"""Anomaly maps and image scores as the official test code of RD++ and ReContrast makes them.

Per (teacher, student) feature pair: 1 - cosine over channels at each location, bilinearly
upsampled with ``align_corners=True`` to the input side, in float32 (torch); the pairs are summed
in float64 (the official code adds the float32 maps into ``np.zeros``). Then
``scipy.ndimage.gaussian_filter(sigma=4)`` with scipy's defaults (reflect border, truncate 4: a
33-tap kernel). The image score is the map's maximum, or, with ``max_ratio > 0``, the mean of its
top ``int(H * W * max_ratio)`` values (ReContrast's option; as the official slice
``[-int(n * r):]`` does, a ratio so small that this count is 0 takes the mean of every pixel).

``smoothing="5x5"`` is ReContrast's other evaluation (``evaluation_batch``, its multi-class
scripts): the pairs are averaged, not summed, and smoothed by a 5 x 5 sigma-4 kernel with zero
padding (torch ``conv2d``), which smooths far less than scipy's 33 taps.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

SMOOTHINGS = ("scipy", "5x5")
SIGMA = 4.0


def pair_distances(teacher: list[torch.Tensor], student: list[torch.Tensor],
                   size: int) -> torch.Tensor:
    """[B, P, size, size] float32: per pair, 1 - cosine over channels, upsampled (bilinear,
    align_corners=True)."""
    maps = []
    for t, s in zip(teacher, student, strict=True):
        d = 1 - F.cosine_similarity(t.float(), s.float(), dim=1)
        maps.append(F.interpolate(d.unsqueeze(1), size=(size, size), mode="bilinear",
                                  align_corners=True))
    return torch.cat(maps, 1)


def gaussian_kernel_5x5(sigma: float = SIGMA) -> torch.Tensor:
    """ReContrast's ``get_gaussian_kernel(5, sigma)``: the 2-D Gaussian on a 5 x 5 grid around its
    centre, normalised to sum 1; [1, 1, 5, 5] float32."""
    ax = torch.arange(5, dtype=torch.float32) - 2.0
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    k = torch.exp(-(xx ** 2 + yy ** 2) / (2 * sigma ** 2)) / (2 * math.pi * sigma ** 2)
    return (k / k.sum()).view(1, 1, 5, 5)


def anomaly_maps(teacher: list[torch.Tensor], student: list[torch.Tensor], size: int,
                 smoothing: str = "scipy") -> np.ndarray:
    """[B, size, size] float64 smoothed anomaly maps (see the module docstring)."""
    if smoothing not in SMOOTHINGS:
        raise ValueError(f"smoothing must be one of {SMOOTHINGS}, not {smoothing!r}")
    d = pair_distances(teacher, student, size)
    if smoothing == "5x5":
        m = F.conv2d(d.mean(1, keepdim=True), gaussian_kernel_5x5().to(d.device), padding=2)
        return m[:, 0].double().cpu().numpy()
    raw = d.cpu().numpy().astype(np.float64).sum(1)
    return np.stack([gaussian_filter(m, sigma=SIGMA) for m in raw]) if len(raw) else raw


def image_scores(maps: np.ndarray, max_ratio: float = 0.0) -> np.ndarray:
    """[B] image anomaly scores: the maximum, or the mean of the top ``max_ratio`` of pixels."""
    flat = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    if max_ratio <= 0:
        return flat.max(1) if flat.size else np.zeros(len(maps))
    k = int(flat.shape[1] * max_ratio)
    top = np.sort(flat, axis=1)[:, -k:] if k > 0 else flat  # [-0:] is the whole row
    return top.mean(1)
