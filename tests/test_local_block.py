"""The GEMM-layout local block (hand-written backward) against the official formula.

References: the per-caption loop oracle (the official structure, autograd) and autograd over
the einsum block, both in float64 where rounding cannot hide a wrong term.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.methods._shared import contrastive as L
from bench.methods._shared import local_block as LB


@pytest.fixture
def gemm():
    with L.local_impl("gemm"):
        yield


def _case(seed: int, b_t: int, b_i: int, d: int, t: int, hw: int, dtype=torch.float64,
          word_scale: dict | None = None):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(b_i, d, hw, hw, generator=g, dtype=dtype)
    words = torch.randn(b_t, d, t, generator=g, dtype=dtype)
    for (k, col), scale in (word_scale or {}).items():
        words[k, :, col] *= scale
    mask = torch.rand(b_t, t, generator=g) < 0.6
    mask[:, 0] = True  # [CLS] is always in
    return img.requires_grad_(), words.requires_grad_(), mask


def _loss_and_grads(img, words, mask, loop: bool):
    """Similarities, a fixed random weighting of them (any B_i x B_t), and its gradients."""
    s = (L.local_similarity_loop(img, words, mask) if loop
         else L.local_similarity(img, words, mask, max_elements=60))
    weights = torch.randn(s.shape, generator=torch.Generator().manual_seed(9), dtype=s.dtype)
    loss = (s * weights).sum()
    return s, loss, torch.autograd.grad(loss, [img, words])


@pytest.mark.parametrize("word_scale", [None, {(1, 0): 1e-12, (2, 1): 1e-9}],
                         ids=["plain", "eps-clamp"])
def test_float64_equals_the_loop_oracle(gemm, word_scale):
    """Values and both gradients to float64 rounding, in several chunks (max_elements), with
    words so small that the official (|w| |c|).clamp(min=1e-8) takes over."""
    img, words, mask = _case(0, 6, 5, 8, 7, 3, word_scale=word_scale)
    mask[1, 0] = mask[2, 1] = True
    s, loss, grads = _loss_and_grads(img, words, mask, loop=False)
    s_ref, loss_ref, grads_ref = _loss_and_grads(img, words, mask, loop=True)
    torch.testing.assert_close(s, s_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-12, atol=1e-12)
    for got, ref in zip(grads, grads_ref):
        scale = ref.abs().max()
        assert ((got - ref).abs().max() / scale).item() < 1e-11


def test_gradcheck_float64():
    img, words, mask = _case(1, 3, 3, 4, 4, 2)
    w = words.detach().requires_grad_()
    r = img.detach().flatten(2).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda w, r: LB.similarity_block(w, mask, r, 4.0, 5.0), (w, r), atol=1e-8, rtol=1e-6)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 5), st.integers(1, 5), st.integers(1, 6), st.integers(1, 3),
       st.integers(0, 10_000))
def test_float32_equals_the_einsum_block_for_any_shapes(b_t, b_i, t, hw, seed):
    """The issue's bar (1e-5 in float32, values and gradients), for any masks and shapes."""
    img, words, mask = _case(seed, b_t, b_i, 8, t, hw, dtype=torch.float32)
    with L.local_impl("gemm"):
        s, _, grads = _loss_and_grads(img, words, mask, loop=False)
    s_ref, _, grads_ref = _loss_and_grads(img, words, mask, loop=False)
    torch.testing.assert_close(s, s_ref, atol=1e-5, rtol=1e-5)
    for got, ref in zip(grads, grads_ref):
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


def test_bfloat16_autocast_stays_within_bf16_error_of_the_fp32_oracle(gemm):
    """Under autocast the GEMMs run in bfloat16 and the result comes back in float32; the
    gradients reach the float32 leaves in float32."""
    img, words, mask = _case(2, 6, 6, 32, 9, 4, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s = L.local_similarity(img, words, mask)
    assert s.dtype == torch.float32
    grads = torch.autograd.grad(sum(L.contrastive(s, 10.0)), [img, words])
    assert all(g.dtype == torch.float32 for g in grads)
    # the bar: the einsum block's own bfloat16 error against the same float32 oracle
    L.use_local()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s_einsum = L.local_similarity(img, words, mask)
    grads_einsum = torch.autograd.grad(sum(L.contrastive(s_einsum, 10.0)), [img, words])
    s_ref = L.local_similarity_loop(img, words, mask)
    grads_ref = torch.autograd.grad(sum(L.contrastive(s_ref, 10.0)), [img, words])
    err = (s - s_ref).abs().max().item()
    assert err < 2 * max((s_einsum - s_ref).abs().max().item(), 1e-3)
    for got, einsum, ref in zip(grads, grads_einsum, grads_ref):
        rel = ((got - ref).norm() / ref.norm()).item()
        assert rel < 2 * ((einsum - ref).norm() / ref.norm()).item()


def test_compiled_helpers_give_the_same_values(monkeypatch):
    """use_local("gemm", compiled=True) compiles the four element-wise steps (not the einsum
    block) and computes the same numbers (eager backend: the wiring, not inductor)."""
    compiled = []
    real_compile = torch.compile

    def record(fn, **kwargs):
        compiled.append(fn.__name__)
        return real_compile(fn, backend="eager")

    monkeypatch.setattr(torch, "compile", record)
    img, words, mask = _case(3, 4, 4, 8, 6, 3, dtype=torch.float32)
    s_ref, _, grads_ref = _loss_and_grads(img, words, mask, loop=False)
    with L.local_impl("gemm", compiled=True):
        assert L._BLOCK is LB.similarity_block
        s, _, grads = _loss_and_grads(img, words, mask, loop=False)
    assert sorted(compiled) == ["attend", "attend_backward", "context_backward", "cosine_parts"]
    assert LB.Helpers.attend is LB.attend and L._BLOCK is L._similarity_block
    torch.testing.assert_close(s, s_ref, atol=1e-5, rtol=1e-5)
    for got, ref in zip(grads, grads_ref):
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


def test_local_impl_restores_the_eager_einsum_default_when_the_block_raises():
    with pytest.raises(RuntimeError, match="boom"):
        with L.local_impl("gemm"):
            assert L._BLOCK is LB.similarity_block
            raise RuntimeError("boom")
    assert L._BLOCK is L._similarity_block


def test_unknown_implementation_is_refused():
    with pytest.raises(ValueError, match="unknown local loss implementation 'flash'"):
        L.use_local("flash")
