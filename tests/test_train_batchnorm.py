"""Precise-BN recalibration: the running statistics become the plain average of the batch
statistics, computed here by hand."""

from __future__ import annotations

import pytest
import torch

from bench.train.batchnorm import recalibrate_batchnorm


def test_running_stats_are_the_average_of_the_batch_statistics():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(3)
    model = torch.nn.Sequential(bn)
    bn.running_mean.fill_(7.0)  # stale values from "earlier weights"
    bn.running_var.fill_(9.0)
    batches = [torch.randn(4, 3, 5, 5) * (i + 1) + i for i in range(4)]
    used = recalibrate_batchnorm(model, batches, model, max_batches=3)
    assert used == 3 and not model.training
    want_mean = torch.stack([b.mean((0, 2, 3)) for b in batches[:3]]).mean(0)
    want_var = torch.stack([b.var((0, 2, 3), unbiased=True) for b in batches[:3]]).mean(0)
    assert bn.running_mean == pytest.approx(want_mean.tolist(), abs=1e-5)
    assert bn.running_var == pytest.approx(want_var.tolist(), abs=1e-4)
    assert bn.momentum == 0.1  # restored for training
    assert int(bn.num_batches_tracked) == 3


def test_no_batchnorm_or_no_batches_changes_nothing():
    lin = torch.nn.Linear(2, 2)
    assert recalibrate_batchnorm(lin, [torch.zeros(1, 2)], lin, max_batches=4) == 0
    bn = torch.nn.BatchNorm1d(2)
    bn.running_mean.fill_(3.0)
    assert recalibrate_batchnorm(bn, [torch.zeros(2, 2)], bn, max_batches=0) == 0
    assert bn.running_mean.tolist() == [3.0, 3.0]
