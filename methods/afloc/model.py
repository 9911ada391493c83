"""AFLoc's image and text encoders and the multi-level loss, in the official module layout.

State-dict keys match the official ``AFLoc`` module (minus the Lightning ``afloc.`` prefix):
``img_encoder.model.{conv1,bn1,layer1..4}.*``, ``img_encoder.global_embedder.{weight,bias}``,
``img_encoder.local_embedder.weight`` (layer3 -> D), ``img_encoder.local2_embedder.weight``
(layer2 -> D, present when the word level is on, as in the official gating),
``text_encoder.model.*`` (a Hugging Face ``BertModel`` with its pooler).

Image: 224 input upsampled inside the model (bilinear, align_corners=True) to
``input_size`` (299); layer2 -> words ("shallow"), layer3 -> sentences and heatmaps ("deep"),
pooled layer4 -> global. Text: the last 4 hidden states summed; see ``text.aggregate``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.methods._shared import contrastive as L
from bench.methods._shared.bert_text import TextBatch, TextEncoder
from bench.methods._shared.encoders import (
    SMALL_WIDTHS,
    NHWCBackbone,
    build_cnn,
    feature_taps,
    stage_channels,
)

LEVELS = ("word", "sentence", "report")


@dataclass
class AFLocConfig:
    """Everything that defines an AFLoc model (stored as JSON in every checkpoint)."""

    arch: str = "resnet50"  # "resnet50" | "resnet18" | "small"
    small_widths: tuple[int, ...] = SMALL_WIDTHS  # arch "small": channels of layer1..4
    imagenet_weights: bool = True  # load torchvision ImageNet weights from the local cache
    input_size: int = 299
    bert: dict[str, Any] = field(default_factory=dict)  # BertConfig.to_dict()
    text_encoder: str | None = "emilyalsentzer/Bio_ClinicalBERT"  # id/path it came from
    last_n_layers: int = 4
    word_num: int = 97
    levels: tuple[str, ...] = LEVELS
    tau1: float = 4.0
    tau2: float = 5.0
    tau3: float = 10.0
    text_mode: str = "faithful"
    preset: str = "paper"
    # multiplies the default init of the 1x1 local embedders; < 1 starts the word/sentence
    # softmax of the local attention unsaturated (the tiny preset, trained from scratch)
    local_init_scale: float = 1.0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["small_widths"] = list(self.small_widths)
        d["levels"] = list(self.levels)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> AFLocConfig:
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in known}
        for k in ("small_widths", "levels"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)


def parse_levels(spec: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    items = [s.strip().lower() for s in items if s.strip()]
    bad = [s for s in items if s not in LEVELS]
    if bad or not items:
        raise ValueError(f"levels must be a non-empty subset of {','.join(LEVELS)}; got {spec!r}")
    return tuple(s for s in LEVELS if s in items)


def build_backbone(cfg: AFLocConfig) -> tuple[nn.Module, int, int, int, str]:
    """(backbone, layer2 channels, layer3 channels, layer4 channels, weights note)."""
    if cfg.arch not in ("resnet50", "resnet18", "small"):
        raise ValueError(f"unknown image backbone {cfg.arch!r}")
    net, note = build_cnn(cfg.arch, cfg.imagenet_weights and cfg.arch != "small",
                          cfg.small_widths)
    net.fc = nn.Identity()
    _, c2, c3, c4 = stage_channels(cfg.arch, cfg.small_widths)
    return net, c2, c3, c4, note


class ImageEncoder(NHWCBackbone):
    def __init__(self, cfg: AFLocConfig, dim: int):
        super().__init__()
        self.input_size = cfg.input_size
        self.model, c2, c3, c4, self.weights_note = build_backbone(cfg)
        self.global_embedder = nn.Linear(c4, dim)
        self.local_embedder = nn.Conv2d(c3, dim, kernel_size=1, bias=False)
        if "word" in cfg.levels:
            self.local2_embedder = nn.Conv2d(c2, dim, kernel_size=1, bias=False)
        if cfg.local_init_scale != 1.0:
            with torch.no_grad():
                for m in (self.local_embedder, getattr(self, "local2_embedder", None)):
                    if m is not None:
                        m.weight.mul_(cfg.local_init_scale)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))

    def forward(self, x: torch.Tensor, need_global: bool = True,
                need_words: bool = True) -> dict[str, torch.Tensor]:
        m = self.model
        if self.input_size and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=True)
        x = self.in_layout(x)
        taps = feature_taps(m, x, ("layer2", "layer3"))
        # this order (embedders, then layer4) is kept on purpose: layer3's output feeds three
        # ops, and backward sums their gradients in the reverse order of the forward pass, so
        # another order rounds differently and trains (slightly) another model
        out = {"local": self.local_embedder(taps["layer3"])}
        if need_words and hasattr(self, "local2_embedder"):
            out["local2"] = self.local2_embedder(taps["layer2"])
        if need_global:
            g = self.pool(m.layer4(taps["layer3"])).flatten(1)
            out["global"] = self.global_embedder(g)
        return out


class AFLocModel(nn.Module):
    """Image + text encoders; ``loss`` returns the three levels' terms and their sum."""

    def __init__(self, cfg: AFLocConfig, bert: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        self.text_encoder = TextEncoder(cfg.bert, cfg.last_n_layers, bert)
        self.img_encoder = ImageEncoder(cfg, self.text_encoder.dim)

    def forward(self, images: torch.Tensor, text: TextBatch) -> dict[str, Any]:
        return self.encode(images, text)

    def encode(self, images: torch.Tensor, text: TextBatch) -> dict[str, Any]:
        img = self.img_encoder(images, need_global="report" in self.cfg.levels,
                               need_words="word" in self.cfg.levels)
        txt = self.text_encoder(text)
        return {"img": img, "txt": txt, "text": text}

    def loss(self, enc: dict[str, Any], gather: Any = None,
             max_elements: int | None = None) -> dict[str, torch.Tensor]:
        """L = L_GR + L_DS + L_SW over the enabled levels (each term: both CE directions).

        ``gather`` (optional) is a callable that all-gathers a tensor across ranks with
        autograd, returning (gathered, offset of this rank's rows); then each rank scores its
        own images against every rank's texts (its rows of the global B x B matrix) and
        gathers the rows, so each pair is scored once, on the rank that holds the image, and
        only texts and scores cross the network, not the images' local feature maps.
        """
        img, txt, text = enc["img"], enc["txt"], enc["text"]
        c = self.cfg
        terms: dict[str, torch.Tensor] = {}

        def pair(fn, a_img, a_txt, extra=None):
            if gather is None:
                s = fn(a_img, a_txt, extra)
                return L.contrastive(s, c.tau3)
            g_txt, off = gather(a_txt)
            g_extra = gather(extra)[0] if extra is not None else None
            rows = fn(a_img, g_txt, g_extra)  # local images vs all texts
            full, _ = gather(rows)  # every image vs all texts
            cols = full[:, off:off + rows.shape[0]]  # all images vs local texts
            return L.contrastive_rows(rows, cols, off, c.tau3)

        def local_fn(a_img, a_txt, mask):
            return L.local_similarity(a_img, a_txt, mask, c.tau1, c.tau2, max_elements)

        if "report" in c.levels:
            l0, l1 = pair(lambda a, b, _: L.global_similarity(a, b), img["global"], txt["report"])
            terms["global_report_loss"] = l0 + l1
        if "sentence" in c.levels:
            l0, l1 = pair(local_fn, img["local"], txt["sentences"], text.sent_mask)
            terms["local_sent_loss"] = l0 + l1
        if "word" in c.levels:
            l0, l1 = pair(local_fn, img["local2"], txt["words"], text.word_mask)
            terms["local_word_loss"] = l0 + l1
        terms["loss"] = sum(terms.values())
        return terms

    @torch.no_grad()
    def heatmap_grid(self, images: torch.Tensor, report_emb: torch.Tensor) -> torch.Tensor:
        """Raw layer3 dot products [B, Q, h, w] of each image with each query embedding."""
        local = self.img_encoder(images, need_global=False, need_words=False)["local"]
        return torch.einsum("bdhw,qd->bqhw", local.float(), report_emb.float())
