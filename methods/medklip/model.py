"""MedKLIP's modules in the official layout (``models/model_MedKLIP.py``, ``transformer.py``),
rebuilt.

State-dict keys (the released file adds ``module.``, from ``nn.DataParallel``; 342 keys with a
ResNet-50):

- ``res_features.{0,1,4,5,6}``: the ResNet's children up to layer3 (conv1, bn1, relu, maxpool,
  layer1-3; stride 16, so 14 x 14 patches at 224);
- ``res_l1`` Linear(C, C), ReLU, ``res_l2`` Linear(C, d_model), applied to each patch;
- ``disease_embedding_layer`` Linear(text_dim, d_model): query book -> decoder queries;
- ``cl_fc`` Linear(d_model, text_dim): the position contrastive head (training only);
- ``decoder.layers.{0..N-1}``: DETR decoder layers with ``normalize_before=True`` and no
  positional embeddings (``self_attn``, ``multihead_attn``, ``linear1``, ``linear2``,
  ``norm1``-``norm3``), then ``decoder.norm``;
- ``classifier`` Linear(d_model, 2): (absent, present) per query.

Each decoder layer returns its cross-attention [B, Q, 196] (averaged over heads, as
``nn.MultiheadAttention`` returns it); the official grounding map is the mean of the 4 layers'.

New queries (free text, unseen classes) are appended after the 75 with a self-attention mask:
each new query attends to the 75 and to itself, and the 75 never attend to a new query, so the
75's outputs are those of the official model and each new query's are what a model with that
one query as a 76th would give, whatever other queries share the batch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.methods._shared.encoders import SMALL_WIDTHS, WidthsConfig, build_cnn, stage_channels

from .names import OBSERVATIONS


@dataclass
class MedKLIPConfig(WidthsConfig):
    """Everything that defines a MedKLIP model (stored as JSON in the harness's checkpoints)."""

    arch: str = "resnet50"  # "resnet50" | "resnet18" | "small"
    small_widths: tuple[int, ...] = SMALL_WIDTHS
    d_model: int = 256
    heads: int = 4
    layers: int = 4
    ffn: int = 1024
    dropout: float = 0.1
    num_queries: int = len(OBSERVATIONS)
    attribute_set_size: int = 2
    text_dim: int = 768
    text_kind: str = "bert"
    text_config: dict[str, Any] = field(default_factory=dict)  # tiny preset: its BERT's config
    text_encoder: str | None = "emilyalsentzer/Bio_ClinicalBERT"
    max_length: int = 64
    descriptions: str = "official"  # "official" (the user's JSON) | "synthetic" (the harness's)
    preset: str = "official"



class DecoderLayer(nn.Module):
    """A pre-norm DETR decoder layer; returns (output, cross-attention weights [B, Q, N])."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d, heads, dropout=dropout)
        self.linear1 = nn.Linear(d, ffn)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn, d)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout1, self.dropout2, self.dropout3 = (nn.Dropout(dropout), nn.Dropout(dropout),
                                                       nn.Dropout(dropout))

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor,
                tgt_mask: torch.Tensor | None = None, need_weights: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        q = self.norm1(tgt)
        tgt = tgt + self.dropout1(self.self_attn(q, q, q, attn_mask=tgt_mask,
                                                 need_weights=False)[0])
        q = self.norm2(tgt)
        out, weights = self.multihead_attn(q, memory, memory, need_weights=need_weights)
        tgt = tgt + self.dropout2(out)
        q = self.norm3(tgt)
        tgt = tgt + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(q)))))
        return tgt, weights


class Decoder(nn.Module):
    def __init__(self, layer: DecoderLayer, n: int, d: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(n))
        self.norm = nn.LayerNorm(d)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor,
                tgt_mask: torch.Tensor | None = None, need_weights: bool = True
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        weights = []
        for layer in self.layers:
            tgt, w = layer(tgt, memory, tgt_mask, need_weights)
            if w is not None:
                weights.append(w)
        return self.norm(tgt), weights


def extra_query_mask(n_base: int, n_total: int, device: Any = None) -> torch.Tensor | None:
    """Boolean self-attention mask (True = blocked) for `n_total - n_base` appended queries:
    the base queries see only each other, an appended query the base ones and itself."""
    if n_total <= n_base:
        return None
    mask = torch.zeros(n_total, n_total, dtype=torch.bool, device=device)
    mask[:, n_base:] = True
    idx = torch.arange(n_base, n_total, device=device)
    mask[idx, idx] = False
    return mask


class MedKLIPModel(nn.Module):
    """Image encoder, query decoder and classifier, named as the official module names them."""

    def __init__(self, cfg: MedKLIPConfig):
        super().__init__()
        self.cfg = cfg
        net, self.weights_note = build_cnn(cfg.arch, False, cfg.small_widths)
        names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3")
        self.res_features = nn.Sequential(*(getattr(net, n) for n in names))
        channels = stage_channels(cfg.arch, cfg.small_widths)[2]
        self.res_l1 = nn.Linear(channels, channels)
        self.res_l2 = nn.Linear(channels, cfg.d_model)
        self.disease_embedding_layer = nn.Linear(cfg.text_dim, cfg.d_model)
        self.cl_fc = nn.Linear(cfg.d_model, cfg.text_dim)
        self.decoder = Decoder(DecoderLayer(cfg.d_model, cfg.heads, cfg.ffn, cfg.dropout),
                               cfg.layers, cfg.d_model)
        self.dropout_feas = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.d_model, cfg.attribute_set_size)
        self.apply(_init_weights)

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, d_model] patch features (N = 196 at 224)."""
        grid = self.res_features(x)
        h = grid.flatten(2).transpose(1, 2)  # b (n1 n2) d, row-major over the grid
        return self.res_l2(F.relu(self.res_l1(h)))

    def decode(self, memory: torch.Tensor, book: torch.Tensor, n_base: int | None = None,
               need_weights: bool = True) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(decoder output [B, Q, d_model] after dropout, cross-attention per layer
        [B, Q, N]) of the queries made from `book` [Q, text_dim]; rows past `n_base` are new
        queries (masked as `extra_query_mask` says). Training asks for no weights (`need_weights`
        False: the fused attention kernel; the outputs are the same)."""
        b = memory.shape[0]
        q = self.disease_embedding_layer(book).unsqueeze(1).repeat(1, b, 1)
        n_base = q.shape[0] if n_base is None else n_base
        mask = extra_query_mask(n_base, q.shape[0], q.device)
        out, weights = self.decoder(q, memory.transpose(0, 1), mask, need_weights)
        return self.dropout_feas(out).transpose(0, 1), weights

    def logits(self, out: torch.Tensor) -> torch.Tensor:
        """[B, Q, 2] (absent, present) logits."""
        return self.classifier(out)


def _init_weights(module: nn.Module) -> None:
    """The official init: N(0, 0.02) for Linear weights and attention projections."""
    if isinstance(module, nn.Linear):
        module.weight.data.normal_(mean=0.0, std=0.02)
    elif isinstance(module, nn.MultiheadAttention):
        module.in_proj_weight.data.normal_(mean=0.0, std=0.02)
        module.out_proj.weight.data.normal_(mean=0.0, std=0.02)


def grounding_map(weights: list[torch.Tensor], grid: int = 14, scale: int = 16) -> torch.Tensor:
    """The official RSNA test's map: the mean of the last 4 layers' cross-attention
    [B, Q, N] reshaped to [B, Q, grid, grid], then each cell repeated `scale` times on both
    axes (block upsampling; no smoothing, no normalisation)."""
    w = torch.stack(weights[-4:], 0).mean(0)
    w = w.reshape(w.shape[0], w.shape[1], grid, grid)
    return w.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)


def medklip_loss(model: MedKLIPModel, out: torch.Tensor, labels: torch.Tensor,
                 index: torch.Tensor, position_book: torch.Tensor) -> dict[str, torch.Tensor]:
    """The official pretraining loss (``no_cl=False``, ``exclude_class=False``):

    - existence: cross-entropy of ``classifier(out)`` over every (image, entity) whose label is
      neither -1 (not mentioned) nor 2;
    - position: for each (image, entity) with label 1, ``cl_fc(out)`` scored by dot product
      against the position book's embeddings of its 8 sampled positions (the true one first),
      cross-entropy with target 0;
    - loss = existence + position.

    `out` [B, Q, d], `labels` [B, Q], `index` [B, Q, 8], `position_book` [51, text_dim]. A
    batch without a positive entity has a position term of 0 (the official code gives NaN).
    """
    logits = model.logits(out)
    logits = logits.reshape(-1, logits.shape[-1])
    flat = labels.reshape(-1)
    keep = (flat != -1) & (flat != 2)
    loss_ce = (F.cross_entropy(logits[keep], flat[keep].long()) if bool(keep.any())
               else logits.sum() * 0.0)
    pos = flat == 1
    if bool(pos.any()):
        ll = model.cl_fc(out).reshape(-1, model.cfg.text_dim)[pos]  # [P, T]
        cand = position_book[index.reshape(-1, index.shape[-1])[pos]]  # [P, 8, T]
        scores = torch.bmm(cand, ll.unsqueeze(-1)).squeeze(-1)
        loss_cl = F.cross_entropy(scores, torch.zeros(len(scores), dtype=torch.long,
                                                      device=scores.device))
    else:
        loss_cl = out.sum() * 0.0
    return {"loss": loss_ce + loss_cl, "loss_ce": loss_ce.detach(), "loss_cl": loss_cl.detach()}
