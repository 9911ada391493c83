"""Batch-norm statistics recomputed for the weights a checkpoint ends with ("precise BN").

BatchNorm's running statistics are an exponential average (momentum 0.1) over the last few
training batches, each taken with the weights of its step. With small batches and a large
learning rate (the tiny CPU preset: 16 pairs, lr 1e-3) they lag far behind the weights, so
eval-mode features, and with them the validation loss and the heatmaps, depend on when
training stopped. Recomputing them with the final weights, as an equal-weight average over a
fixed number of training batches, removes that lag. The official AFLoc code does not do this
(its batch of 128 at lr 2e-5 barely moves between steps), so the `paper` preset leaves it off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.nn.modules.batchnorm import _BatchNorm


def batchnorm_layers(model: torch.nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, batches: Iterable[Any],
                          forward: Callable[[Any], Any], max_batches: int) -> int:
    """Reset every BatchNorm's running mean/var and refill them with the equal-weight average of
    the batch statistics of up to `max_batches` batches (train-mode forwards, no gradients).
    Returns the number of batches used; the model is left in eval mode."""
    layers = batchnorm_layers(model)
    if not layers or max_batches <= 0:
        return 0
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    model.train()
    used = 0
    try:
        for batch in batches:
            if used >= max_batches:
                break
            forward(batch)
            used += 1
    finally:
        for m, mom in zip(layers, momenta):
            m.momentum = mom
        model.eval()
    return used
