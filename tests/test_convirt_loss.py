"""The ConVIRT loss against a hand-worked 2 x 2 case and ViLMedic's formula written out."""

from __future__ import annotations

import math

import pytest
import torch

from bench.methods.convirt.loss import convirt_loss


def _pairs():
    # images v1 = (1, 0), v2 = (0, 1); texts u1 = (0.8, 0.6), u2 = (0, 1), scaled so that only
    # the cosines matter: S = [[0.8, 0], [0.6, 1]] (row: image, column: text)
    v = torch.tensor([[3.0, 0.0], [0.0, 0.5]], dtype=torch.float64)
    u = torch.tensor([[0.8, 0.6], [0.0, 2.0]], dtype=torch.float64)
    return v, u


def test_two_by_two_by_hand():
    v, u = _pairs()
    # logits S / 0.1 = [[8, 0], [6, 10]]
    i2t = [math.log(1 + math.exp(-8)), math.log(1 + math.exp(-4))]  # rows: 8 vs 0, 10 vs 6
    t2i = [math.log(1 + math.exp(-2)), math.log(1 + math.exp(-10))]  # columns: 8 vs 6, 10 vs 0
    want = 0.5 * sum(0.75 * a + 0.25 * b for a, b in zip(i2t, t2i))
    out = convirt_loss(v, u, tau=0.1, lam=0.75)
    assert out["loss"].item() == pytest.approx(want, rel=1e-12)
    assert out["image_to_text"].item() == pytest.approx(sum(i2t) / 2, rel=1e-12)
    assert out["text_to_image"].item() == pytest.approx(sum(t2i) / 2, rel=1e-12)


def test_lambda_weights_the_image_to_text_direction():
    v, u = _pairs()
    only_v = convirt_loss(v, u, tau=0.1, lam=1.0)["loss"].item()
    only_l = convirt_loss(v, u, tau=0.1, lam=0.0)["loss"].item()
    assert only_v == pytest.approx((math.log(1 + math.exp(-8)) + math.log(1 + math.exp(-4))) / 2)
    assert only_l == pytest.approx((math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-10))) / 2)


def _vilmedic_formula(linguistic, visual, tau, lam):
    """ViLMedic's ConVIRTLoss as its equations read: exp / sum / log, clamped norms."""
    def pairwise(a, b):
        a = a / a.norm(dim=1, keepdim=True).clamp(min=1e-8)
        b = b / b.norm(dim=1, keepdim=True).clamp(min=1e-8)
        return a @ b.t()

    nominator = torch.exp(torch.nn.functional.cosine_similarity(linguistic, visual) / tau)
    loss_l = -torch.log(nominator / torch.exp(pairwise(linguistic, visual) / tau).sum(1))
    loss_v = -torch.log(nominator / torch.exp(pairwise(visual, linguistic) / tau).sum(1))
    return torch.mean(lam * loss_v + (1 - lam) * loss_l)


def test_equals_vilmedic_formula_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(6, 5, dtype=torch.float64, generator=g, requires_grad=True)
    u = torch.randn(6, 5, dtype=torch.float64, generator=g, requires_grad=True)
    ours = convirt_loss(v, u)["loss"]
    theirs = _vilmedic_formula(u, v, 0.1, 0.75)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-12)
    gv, gu = torch.autograd.grad(ours, (v, u))
    tv, tu = torch.autograd.grad(theirs, (v, u))
    torch.testing.assert_close(gv, tv, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gu, tu, rtol=1e-10, atol=1e-12)


def test_gathered_negatives_with_one_rank_equal_the_plain_loss():
    v, u = _pairs()
    gathered = convirt_loss(v, u, gather=lambda t: (t, 0))
    assert gathered["loss"].item() == pytest.approx(convirt_loss(v, u)["loss"].item(), rel=1e-14)


def test_gathered_negatives_split_over_two_ranks_sum_to_the_global_loss():
    """Rank r holds rows [2r, 2r + 2) of a batch of 4; the mean of the ranks' losses is the
    loss of the whole batch (each pair is scored against every rank's pairs)."""
    g = torch.Generator().manual_seed(1)
    v = torch.randn(4, 3, dtype=torch.float64, generator=g)
    u = torch.randn(4, 3, dtype=torch.float64, generator=g)
    per_rank = []
    for r in range(2):
        vr, ur = v[2 * r:2 * r + 2], u[2 * r:2 * r + 2]

        def gather(t, _vr=vr, _r=r):
            return (v if t is _vr else u), 2 * _r

        per_rank.append(convirt_loss(vr, ur, gather=gather)["loss"].item())
    assert sum(per_rank) / 2 == pytest.approx(convirt_loss(v, u)["loss"].item(), rel=1e-12)
