"""The local similarity of one chunk of texts against every image, with a hand-written backward
(``contrastive.use_local("gemm")``; the default ``"einsum"`` is autograd over einsums).

Why: at paper size the local losses pass over B_t x B_i x Q x N tensors of about 1.1G elements,
so what costs is how many times they are written and read, not the arithmetic around them.
Autograd over the einsum form saves float32 softmax and exp outputs (autocast runs softmax in
float32) and lays the tensor out once per einsum. Here it is laid out once, as [(t q), (i n)],
the natural output of one GEMM, and every product reads it in place:

    forward   S = W R^T (GEMM), E = exp(tau1 softmax_words S), contexts C_i = E_i R_i (batched)
    backward  dE_i = dC_i R_i^T, dR_i = E_i^T dC_i (batched GEMMs); dS = the softmax backward
              of tau1 E dE (one element-wise pass); dW = dS R, dR += dS^T W (GEMMs)

Saved for backward: S and E in the GEMMs' dtype (bfloat16 under autocast) and the contexts;
the softmax is recomputed from S in float32. Each element-wise step is a plain function so
``use_compiled`` can turn it into one fused kernel. The values and gradients equal autograd
over the official formula to float64 rounding (tests/test_local_block.py).
benchmarks/train_step.py times it; its GPU speed has not been measured yet. On a 2-core CPU,
eager (as ``bench train`` runs there), the einsum form is faster; compiled, this one is (tiny
preset, uniform lengths).
"""

from __future__ import annotations

from typing import Any

import torch

EPS = 1e-8  # the official clamp on the product of norms, (|w| |c|).clamp(min=1e-8)


def _acc(x: torch.Tensor) -> torch.Tensor:
    """x in float32, or float64 when it already is (tests)."""
    return x if x.dtype == torch.float64 else x.float()


def attend(s: torch.Tensor, m: torch.Tensor, tau1: float) -> tuple[torch.Tensor, torch.Tensor]:
    """E = exp(tau1 softmax over words of S), in S's dtype, and z = sum_n E in float32.

    s: [Bt, Q, Bi, N]; m: [Bt, Q] bool (masked words get -inf-like scores, so weight 0)."""
    x = _acc(s)
    x = x.masked_fill(~m[:, :, None, None], torch.finfo(x.dtype).min)
    e = torch.exp(torch.softmax(x, dim=1) * tau1)
    return e.to(s.dtype), e.sum(-1)


def attend_backward(s: torch.Tensor, g_e: torch.Tensor, g_z: torch.Tensor, m: torch.Tensor,
                    tau1: float) -> torch.Tensor:
    """dL/dS from dL/dE (g_e [Bt, Q, Bi, N], any strides) and dL/dz (g_z [Bt, Q, Bi])."""
    valid = m[:, :, None, None]
    x = _acc(s)
    x = x.masked_fill(~valid, torch.finfo(x.dtype).min)
    a = torch.softmax(x, dim=1)
    g_a = torch.exp(a * tau1) * tau1 * (_acc(g_e) + g_z[..., None])
    g_s = a * (g_a - (a * g_a).sum(1, keepdim=True))
    return g_s.masked_fill(~valid, 0.0).to(s.dtype)


def cosine_parts(c: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(w . c, |c|) in float32 for contexts c [Bi, Bt, Q, D] and words w [Bt, Q, D]."""
    cf = _acc(c)
    return (cf * _acc(w)).sum(-1), cf.square().sum(-1).sqrt()


def context_backward(c: torch.Tensor, w: torch.Tensor, g_num: torch.Tensor,
                     g_cn_per_cn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(dL/dC in C's dtype, the part of dL/dw [Bt, Q, D] through w . c) from dL/d(w . c) and
    dL/d|c| / |c| ([Bi, Bt, Q]; 0 where |c| = 0, as autograd's norm passes no gradient)."""
    cf = _acc(c)
    g_c = g_num[..., None] * _acc(w) + g_cn_per_cn[..., None] * cf
    g_w = (g_num[..., None] * cf).sum(0)
    return g_c.to(c.dtype), g_w


_STEPS = (attend, attend_backward, cosine_parts, context_backward)


class Helpers:
    """The element-wise steps LocalBlock calls (compiled versions after ``use_compiled``)."""


def use_compiled(enabled: bool = True, **compile_kwargs: Any) -> None:
    """Route each element-wise step through ``torch.compile`` (or back to eager)."""
    for fn in _STEPS:
        setattr(Helpers, fn.__name__,
                staticmethod(torch.compile(fn, **compile_kwargs) if enabled else fn))


use_compiled(False)


class LocalBlock(torch.autograd.Function):
    """[Bt, Bi] log-sum-exp similarities of compact words w [Bt, D, Q] (mask m [Bt, Q]) and
    regions r [Bi, D, N]; w and r arrive in the compute dtype (see ``similarity_block``)."""

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, m: torch.Tensor, r: torch.Tensor, tau1: float,
                tau2: float) -> torch.Tensor:
        bt, d, q = w.shape
        bi, _, n = r.shape
        w3 = w.transpose(1, 2).contiguous()  # [Bt, Q, D]
        r3 = r.transpose(1, 2).contiguous()  # [Bi, N, D]
        s = (w3.view(bt * q, d) @ r3.view(bi * n, d).t()).view(bt, q, bi, n)
        e, z = Helpers.attend(s, m, tau1)
        e = e.contiguous()  # compiled steps may hand back other strides; views need these
        e_i = e.view(bt * q, bi, n).transpose(0, 1)  # [Bi, (t q), N], a strided view
        c = torch.bmm(e_i, r3).view(bi, bt, q, d)  # contexts
        num, cn = Helpers.cosine_parts(c, w3)  # [Bi, Bt, Q]
        wn = _acc(w3).square().sum(-1).sqrt()  # [Bt, Q]
        prod, floor = wn * cn, EPS * z.permute(2, 0, 1)  # |w||c| and the clamp's floor
        cos = (num / torch.maximum(prod, floor)).masked_fill(~m, float("-inf"))
        sim = torch.logsumexp(tau2 * cos, dim=-1)  # [Bi, Bt]
        ctx.save_for_backward(w3, m, r3, s, e, c, wn, cn, prod, floor, cos, sim)
        ctx.taus = (tau1, tau2)
        return sim.t()

    @staticmethod
    def backward(ctx: Any, g_sim: torch.Tensor) -> tuple[Any, ...]:
        with torch.autocast(g_sim.device.type, enabled=False):  # stay in the saved dtypes
            return LocalBlock._backward(ctx, g_sim)

    @staticmethod
    def _backward(ctx: Any, g_sim: torch.Tensor) -> tuple[Any, ...]:
        w3, m, r3, s, e, c, wn, cn, prod, floor, cos, sim = ctx.saved_tensors
        den = torch.maximum(prod, floor)
        tau1, tau2 = ctx.taus
        bt, q, d = w3.shape
        bi, n, _ = r3.shape
        p = torch.exp(tau2 * cos - sim[..., None])  # softmax over words; 0 where masked
        g_cos = _acc(g_sim.t().contiguous())[..., None] * tau2 * p
        g_num = g_cos / den  # g_cos is 0 at masked words (p is)
        g_den = -g_cos * torch.where(m, cos, 0.0) / den
        # clamp(min=floor) as autograd has it: the larger side takes the gradient, a tie halves it
        g_prod = g_den * ((prod > floor).to(g_den.dtype) + 0.5 * (prod == floor).to(g_den.dtype))
        g_floor = g_den - g_prod
        g_c, g_w3 = Helpers.context_backward(c, w3, g_num,
                                             torch.where(cn > 0, g_prod * wn / cn, 0.0))
        g_wn = (g_prod * cn).sum(0)  # [Bt, Q]
        g_w3 = g_w3 + torch.where(wn > 0, g_wn / wn, 0.0)[..., None] * _acc(w3)
        g_c_i = g_c.contiguous().view(bi, bt * q, d)
        g_e = torch.bmm(g_c_i, r3.transpose(1, 2))  # [Bi, (t q), N]
        e_i = e.view(bt * q, bi, n).transpose(0, 1)
        g_r3 = _acc(torch.bmm(e_i.transpose(1, 2), g_c_i))  # [Bi, N, D]
        g_e4 = g_e.view(bi, bt, q, n).permute(1, 2, 0, 3)  # as S: [Bt, Q, Bi, N]
        g_s = Helpers.attend_backward(s, g_e4, (EPS * g_floor).permute(1, 2, 0), m, tau1)
        g_s2 = g_s.contiguous().view(bt * q, bi * n)
        g_w3 = g_w3 + _acc(g_s2 @ r3.view(bi * n, d)).view(bt, q, d)
        g_r3 = g_r3 + _acc(g_s2.t() @ w3.view(bt * q, d)).view(bi, n, d)
        return (g_w3.transpose(1, 2).to(w3.dtype), None, g_r3.transpose(1, 2).to(r3.dtype),
                None, None)


def similarity_block(w: torch.Tensor, m: torch.Tensor, r: torch.Tensor, tau1: float,
                     tau2: float) -> torch.Tensor:
    """``LocalBlock`` in autocast's dtype when autocast is on (the GEMMs run in it; the
    softmax, norms and log-sum-exp in float32), else in the inputs' dtype."""
    dev = r.device.type
    if torch.is_autocast_enabled(dev):
        dt = torch.get_autocast_dtype(dev)
        w, r = w.to(dt), r.to(dt)
    with torch.autocast(dev, enabled=False):
        return LocalBlock.apply(w, m, r, tau1, tau2)
