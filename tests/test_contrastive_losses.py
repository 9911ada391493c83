"""AFLoc losses: the batched local loss equals the per-caption loop oracle (values, grads)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.methods._shared import contrastive as L


def _inputs(seed=0, b=5, d=16, t=12, hw=6):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(b, d, hw, hw, generator=g).requires_grad_()
    words = torch.randn(b, d, t, generator=g)
    words[3, :, 9:] = 0  # zero padding columns like the real layout
    words.requires_grad_()
    mask = torch.zeros(b, t, dtype=torch.bool)
    for i, n in enumerate([3, 12, 5, 9, 1]):
        mask[i, :n] = True
    return img, words, mask


@pytest.mark.parametrize("prefix", [True, False])
@pytest.mark.parametrize("max_elements", [None, 300])
def test_batched_equals_loop_oracle(prefix, max_elements):
    img, words, mask = _inputs()
    if not prefix:  # corrected mode masks are not prefixes
        mask[1, 4] = False
        mask[2, 7] = True
    s_b = L.local_similarity(img, words, mask, 4.0, 5.0, max_elements=max_elements)
    s_l = L.local_similarity_loop(img, words, mask, 4.0, 5.0)
    torch.testing.assert_close(s_b, s_l, atol=1e-5, rtol=1e-5)
    lb = sum(L.contrastive(s_b, 10.0))
    ll = sum(L.contrastive(s_l, 10.0))
    torch.testing.assert_close(lb, ll, atol=1e-5, rtol=1e-5)
    gb = torch.autograd.grad(lb, [img, words])
    gl = torch.autograd.grad(ll, [img, words])
    for a, b in zip(gb, gl):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_single_pair_by_hand():
    """One caption of one word against one 2-region image, worked by hand."""
    img = torch.tensor([[[[1.0, 0.0]], [[0.0, 2.0]]]])  # D=2, regions r0=(1,0), r1=(0,2)
    words = torch.tensor([[[1.0], [1.0]]])  # w=(1,1)
    mask = torch.tensor([[True]])
    # softmax over one word = 1 -> x4 -> softmax over regions of (4, 4) = (0.5, 0.5)
    ctx = torch.tensor([0.5, 1.0])
    cos = (ctx.sum() / (math.sqrt(2) * ctx.norm())).item()
    expected = 5.0 * cos  # log(exp(5 cos))
    got = L.local_similarity(img, words, mask)[0, 0].item()
    assert got == pytest.approx(expected, abs=1e-6)
    assert L.local_similarity_loop(img, words, mask)[0, 0].item() == pytest.approx(expected,
                                                                                    abs=1e-6)


def test_global_similarity_and_contrastive():
    g = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    r = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    s = L.global_similarity(g, r)
    torch.testing.assert_close(s, torch.tensor([[1.0, 0.0], [1 / math.sqrt(2), 1 / math.sqrt(2)]]))
    l0, l1 = L.contrastive(s, 10.0)
    logits = s * 10
    e0 = -(torch.log_softmax(logits, 1).diag().mean())
    e1 = -(torch.log_softmax(logits.t(), 1).diag().mean())
    assert l0.item() == pytest.approx(e0.item()) and l1.item() == pytest.approx(e1.item())
    r0, r1 = L.contrastive_rows(s, s, 0, 10.0)
    assert r0.item() == pytest.approx(l0.item()) and r1.item() == pytest.approx(l1.item())


def test_rows_of_a_global_batch_average_to_the_full_loss():
    torch.manual_seed(1)
    s = torch.randn(6, 6)
    full = L.contrastive(s, 10.0)
    parts = [L.contrastive_rows(s[k * 3:(k + 1) * 3], s[:, k * 3:(k + 1) * 3], k * 3, 10.0)
             for k in range(2)]
    for d in range(2):
        assert ((parts[0][d] + parts[1][d]) / 2).item() == pytest.approx(full[d].item(), rel=1e-6)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 5), st.integers(1, 6), st.integers(1, 4), st.integers(0, 10_000))
def test_batched_equals_loop_for_any_masks(b, t, hw, seed):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(b, 8, hw, hw, generator=g) * 2
    words = torch.randn(b, 8, t, generator=g) * 2
    mask = torch.rand(b, t, generator=g) < 0.6
    mask[:, 0] = True  # [CLS] is always in
    torch.testing.assert_close(L.local_similarity(img, words, mask, max_elements=50),
                               L.local_similarity_loop(img, words, mask), atol=1e-5, rtol=1e-5)


def test_length_chunks_by_hand():
    # sorted lengths; per_word 10, budget 200: at width 9 two captions fit (180), not three
    assert L.length_chunks([9, 8, 7, 4, 3, 0], 10, 200) == [(0, 2, 9), (2, 3, 7), (3, 5, 4),
                                                            (5, 6, 1)]
    # a big budget: runs end only where a caption fills less than 3/4 of the width (30 of 40
    # and 15 of 20 still fill exactly 3/4)
    assert L.length_chunks([40, 31, 30, 20, 16, 15], 1, 10**9) == [(0, 3, 40), (3, 6, 20)]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 60), min_size=1, max_size=40), st.integers(1, 50),
       st.integers(1, 5000))
def test_length_chunks_cover_in_order_and_bound_padding(lengths, per_word, budget):
    lengths = sorted(lengths, reverse=True)
    runs = L.length_chunks(lengths, per_word, budget)
    assert [a for a, _, _ in runs] == [0] + [b for _, b, _ in runs[:-1]]
    assert runs[-1][1] == len(lengths)
    for a, b, width in runs:
        assert width == max(lengths[a], 1)
        assert all(x >= L.FILL * width for x in lengths[a:b]) or b - a == 1
        assert (b - a) * width * per_word <= budget or b - a == 1


def test_texts_of_very_different_lengths_in_one_batch():
    """Sorting into chunks must hand every text its own column back."""
    g = torch.Generator().manual_seed(3)
    img = torch.randn(7, 8, 3, 3, generator=g).requires_grad_()
    words = torch.randn(7, 8, 30, generator=g).requires_grad_()
    mask = torch.zeros(7, 30, dtype=torch.bool)
    for i, n in enumerate([2, 30, 5, 29, 1, 17, 4]):
        mask[i, :n] = True
    s_b = L.local_similarity(img, words, mask)
    s_l = L.local_similarity_loop(img, words, mask)
    torch.testing.assert_close(s_b, s_l, atol=1e-5, rtol=1e-5)
    gb = torch.autograd.grad(s_b.sum(), [img, words])
    gl = torch.autograd.grad(s_l.sum(), [img, words])
    for a, b in zip(gb, gl):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
