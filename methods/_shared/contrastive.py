"""The GLoRIA lineage's contrastive losses (GLoRIA, AFLoc), batched over all text-image pairs.

Local loss (official ``losses.local_loss``): for text t and image i, attention
``softmax_regions(tau1 * softmax_words(R_i^T W_t))``, context c_q = sum_n a_qn R_n, cosine
between each word and its context, ``log sum_q exp(tau2 * cos)`` over the caption's words,
times tau3, cross-entropy in both directions. Global loss: cosine(image, report) * tau3,
cross-entropy both ways. Nothing is L2-normalised outside the cosines.

``local_similarity`` computes the whole B_t x B_i matrix with einsums over chunks of texts
sorted by length, each chunk padded only to its own longest caption (real captions vary from 5
to 60+ words, so padding to the batch's longest roughly doubled the work) and bounded in size
so the B_t x B_i x Q x N tensors fit (in cache, on CPU). The region softmax is never normalised:
its input tau1 * softmax_words lies in [0, tau1], so exp() cannot overflow, and the
normaliser Z cancels in the cosine (it is kept only in the eps clamp, to match the official
``(|w| |c|).clamp(min=1e-8)`` exactly). ``use_local("gemm")`` computes the same blocks with
one GEMM layout and a hand-written backward (``local_block``). ``local_similarity_loop`` is the
per-caption loop of the official structure, kept as the test oracle.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from . import local_block
from .local_block import EPS

FILL = 0.75  # a chunk's shortest caption fills at least this much of its width


def _compact(words: torch.Tensor, mask: torch.Tensor,
             width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each caption's masked word columns to the front and keep the first `width`."""
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :width]
    wc = words.gather(2, order.unsqueeze(1).expand(-1, words.shape[1], -1))
    return wc, mask.gather(1, order)


def length_chunks(lengths: list[int], per_word: int, max_elements: int,
                  fill: float = FILL) -> list[tuple[int, int, int]]:
    """(start, stop, width) runs over captions sorted longest first: a run ends when one more
    caption would exceed `max_elements` (= captions x width x `per_word`) or would fill less
    than `fill` of the run's width, which bounds the padding at 1 / `fill`."""
    runs, a = [], 0
    while a < len(lengths):
        width = max(lengths[a], 1)
        b = a + 1
        while (b < len(lengths) and (b - a + 1) * width * per_word <= max_elements
               and lengths[b] >= fill * width):
            b += 1
        runs.append((a, b, width))
        a = b
    return runs


def _similarity_block(w: torch.Tensor, m: torch.Tensor, r: torch.Tensor, tau1: float,
                      tau2: float) -> torch.Tensor:
    """[Bt, Bi] log-sum-exp similarities for compact words w [Bt, D, Q], regions r [Bi, D, N]."""
    s = torch.einsum("tdq,idn->tiqn", w, r)  # raw word-region dot products
    neg = torch.finfo(s.dtype).min
    valid = m[:, None, :, None]
    a = torch.softmax(s.masked_fill(~valid, neg), dim=2)  # over words
    e = torch.exp(a * tau1)  # unnormalised softmax over regions (bounded by e^tau1)
    z = e.sum(-1)  # [Bt, Bi, Q]
    ctx = torch.einsum("tiqn,idn->tiqd", e, r)
    # w . ctx (the official `(word * weighted).sum`) reads the D-wide context, not another
    # N-wide pass over e * s; s then need not be kept for backward
    num = torch.einsum("tiqd,tdq->tiq", ctx, w)
    w_norm = w.norm(dim=1)[:, None, :]  # [Bt, 1, Q]
    cos = num / (w_norm * ctx.norm(dim=-1)).clamp(min=EPS * z)
    cos = cos.float().masked_fill(~m[:, None, :], float("-inf"))
    return torch.logsumexp(tau2 * cos, dim=-1)  # [Bt, Bi]


_BLOCK = _similarity_block
LOCAL_IMPLS = ("einsum", "gemm")


def use_local(impl: str = "einsum", compiled: bool = False, **compile_kwargs) -> None:
    """Choose how ``local_similarity`` computes each chunk: ``"einsum"`` (autograd over the
    einsums above; compiled: the whole block under ``torch.compile``) or ``"gemm"`` (the same
    values from ``local_block.LocalBlock``'s GEMM layout and hand-written backward; compiled:
    each of its element-wise steps). ``use_local()`` restores the eager einsum default."""
    global _BLOCK
    if impl not in LOCAL_IMPLS:
        raise ValueError(f"unknown local loss implementation {impl!r} (known: "
                         f"{', '.join(LOCAL_IMPLS)})")
    local_block.use_compiled(compiled and impl == "gemm", **compile_kwargs)
    if impl == "gemm":
        _BLOCK = local_block.similarity_block
    else:
        _BLOCK = (torch.compile(_similarity_block, **compile_kwargs) if compiled
                  else _similarity_block)


@contextmanager
def local_impl(impl: str = "einsum", compiled: bool = False,
               **compile_kwargs) -> Iterator[None]:
    """``use_local`` for the duration of a block; the eager einsum default is back after it,
    also when the block raises (a benchmark row that fails must not leak into the next)."""
    use_local(impl, compiled, **compile_kwargs)
    try:
        yield
    finally:
        use_local()


def local_similarity(img_local: torch.Tensor, words: torch.Tensor, mask: torch.Tensor,
                     tau1: float = 4.0, tau2: float = 5.0,
                     max_elements: int | None = None) -> torch.Tensor:
    """Similarity matrix [B_img, B_text] (official ``similarities`` before x tau3).

    img_local: [Bi, D, H, W]; words: [Bt, D, T]; mask: [Bt, T] bool (words in the loss).
    ``max_elements`` bounds the B_t x B_i x Q x N block (None: 2**22 on CPU, where cache-sized
    blocks are faster, 2**31 on GPU).
    """
    r = img_local.flatten(2)
    bi, n = r.shape[0], r.shape[2]
    if max_elements is None:
        max_elements = 2**31 if r.is_cuda else 2**22
    lengths = mask.sum(1)
    order = torch.argsort(lengths, descending=True, stable=True)
    sorted_lengths = lengths[order].tolist()  # the one host sync
    wc, mc = _compact(words[order], mask[order], max(sorted_lengths[0], 1))
    blocks = [_BLOCK(wc[a:b, :, :q], mc[a:b, :q], r, tau1, tau2)
              for a, b, q in length_chunks(sorted_lengths, bi * n, max_elements)]
    rows = torch.cat(blocks, 0)  # texts in length order
    return rows[torch.argsort(order)].transpose(0, 1)


def local_similarity_loop(img_local: torch.Tensor, words: torch.Tensor, mask: torch.Tensor,
                          tau1: float = 4.0, tau2: float = 5.0) -> torch.Tensor:
    """The oracle: one caption at a time against every image, as the official loop does."""
    bi = img_local.shape[0]
    context = img_local.flatten(2)  # [Bi, D, N]
    columns = []
    for t in range(words.shape[0]):
        word = words[t][:, mask[t]]  # [D, Q_t]
        word = word.unsqueeze(0).repeat(bi, 1, 1)  # [Bi, D, Q_t]
        attn = torch.bmm(context.transpose(1, 2), word)  # [Bi, N, Q_t]
        attn = torch.softmax(attn, dim=-1) * tau1
        attn = torch.softmax(attn, dim=-2)
        weighted = torch.bmm(context, attn)  # [Bi, D, Q_t]
        w12 = (word * weighted).sum(1)
        norms = word.norm(dim=1) * weighted.norm(dim=1)
        row = w12 / norms.clamp(min=EPS)
        row = torch.log(torch.exp(row * tau2).sum(1, keepdim=True))  # [Bi, 1]
        columns.append(row)
    return torch.cat(columns, 1)


def global_similarity(img_global: torch.Tensor, report: torch.Tensor) -> torch.Tensor:
    """Cosine matrix [B_img, B_text] with the official eps clamp on the norm product."""
    num = img_global @ report.t()
    den = img_global.norm(dim=1, keepdim=True) @ report.norm(dim=1, keepdim=True).t()
    return num / den.clamp(min=EPS)


def contrastive(scores: torch.Tensor, tau3: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(image->text CE, text->image CE) of a square [B_img, B_text] score matrix."""
    logits = scores * tau3
    labels = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, labels), F.cross_entropy(logits.t(), labels)


def contrastive_rows(rows_img: torch.Tensor, cols_txt: torch.Tensor, offset: int,
                     tau3: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Both CE directions for the local rows of a global batch (in-batch negatives gathered
    across ranks): rows_img [B, G] = local images vs all texts, cols_txt [G, B] = all images vs
    local texts. With one rank (offset 0, G = B) this equals ``contrastive``."""
    b = rows_img.shape[0]
    labels = torch.arange(offset, offset + b, device=rows_img.device)
    return (F.cross_entropy(rows_img * tau3, labels),
            F.cross_entropy(cols_txt.t() * tau3, labels))
