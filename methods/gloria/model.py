"""GLoRIA's image and text encoders and loss, in the official module layout.

State-dict keys match the official ``GLoRIA`` module (minus the Lightning ``gloria.`` prefix):
``img_encoder.model.{conv1,bn1,layer1..4}.*`` (torchvision ResNet, ``fc`` replaced by an
identity), ``img_encoder.global_embedder.{weight,bias}`` (pooled layer4 -> D),
``img_encoder.local_embedder.weight`` (layer3 -> D, 1x1, no bias), ``text_encoder.model.*`` (a
Hugging Face ``BertModel`` with its pooler). Input 224, upsampled inside the model to 299
(bilinear, align_corners=True). Text: the last 4 hidden states summed, subwords summed into
words, the "sentence" (report) embedding the mean over all 97 word slots (zeros included): the
same text encoder as AFLoc's (`bench.methods._shared.bert_text`).

Loss (``loss/gloria_loss.py``): local = the GLoRIA-lineage local loss between layer3 regions and
the caption's words ``[:cap_len]`` ([CLS] and the words, not [SEP]), global = cosine of the pooled
image and the report embedding, each x tau3 and cross-entropy both ways; the total is
(local0 + local1) x local weight + (global0 + global1) x global weight (both 1).

Zero-shot (``get_similarities``) and word attention (``get_attn_maps``) are here too, batched;
`local_max_similarity_loop` is the per-prompt loop of ``get_local_similarities``, the test oracle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.methods._shared import contrastive as L
from bench.methods._shared.bert_text import TextBatch, TextEncoder
from bench.methods._shared.encoders import (
    SMALL_WIDTHS,
    NHWCBackbone,
    WidthsConfig,
    build_cnn,
    feature_taps,
    stage_channels,
)

# GLoRIA's cnn_backbones declare the intermediate (layer3) width as 1024 for every ResNet, also
# resnet_18 whose layer3 has 256 channels; the released resnet_18 model's local branch follows
INTERM_CHANNELS = {"resnet50": 1024, "resnet18": 1024}
ZERO_SHOT_TAU1, ZERO_SHOT_TAU2 = 4.0, 5.0  # hard-coded in get_local_similarities


@dataclass
class GLoRIAConfig(WidthsConfig):
    """Everything that defines a GLoRIA model (stored as JSON in our checkpoints)."""

    arch: str = "resnet50"  # "resnet50" | "resnet18" | "small"
    small_widths: tuple[int, ...] = SMALL_WIDTHS
    imagenet_weights: bool = True
    input_size: int = 299
    interm_channels: int = 1024  # local_embedder's input channels
    bert: dict[str, Any] = field(default_factory=dict)
    text_encoder: str | None = "emilyalsentzer/Bio_ClinicalBERT"
    last_n_layers: int = 4
    word_num: int = 97
    tau1: float = 4.0
    tau2: float = 5.0
    tau3: float = 10.0
    local_weight: float = 1.0
    global_weight: float = 1.0
    text_mode: str = "faithful"
    preset: str = "paper"
    local_init_scale: float = 1.0  # < 1: the tiny preset's start (see AFLoc's presets)



class ImageEncoder(NHWCBackbone):
    def __init__(self, cfg: GLoRIAConfig, dim: int):
        super().__init__()
        self.input_size = cfg.input_size
        self.model, self.weights_note = build_cnn(cfg.arch, cfg.imagenet_weights
                                                  and cfg.arch != "small", cfg.small_widths)
        self.model.fc = nn.Identity()
        self.layer3_channels = stage_channels(cfg.arch, cfg.small_widths)[2]
        self.global_embedder = nn.Linear(stage_channels(cfg.arch, cfg.small_widths)[3], dim)
        self.local_embedder = nn.Conv2d(cfg.interm_channels, dim, kernel_size=1, bias=False)
        if cfg.local_init_scale != 1.0:
            with torch.no_grad():
                self.local_embedder.weight.mul_(cfg.local_init_scale)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))

    @property
    def local_branch_runs(self) -> bool:
        """False for the released resnet_18 model, whose local embedder takes 1024 channels
        from a layer3 of 256: its local branch fails in GLoRIA's own code too."""
        return self.layer3_channels == self.local_embedder.in_channels

    def local_branch_problem(self) -> str:
        return (f"this GLoRIA model's local branch takes {self.local_embedder.in_channels} "
                f"channels but its backbone's layer3 gives {self.layer3_channels} (as the "
                f"official resnet_18 declares; it fails in GLoRIA's code too): only its global "
                f"similarity can be used (--method-arg gloria.similarity=global)")

    def forward(self, x: torch.Tensor, need_local: bool = True) -> dict[str, torch.Tensor]:
        if self.input_size and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=True)
        x = self.in_layout(x)
        taps = feature_taps(self.model, x, ("layer3", "layer4"))
        out = {"global": self.global_embedder(self.pool(taps["layer4"]).flatten(1))}
        if need_local:
            if not self.local_branch_runs:
                raise ValueError(self.local_branch_problem())
            out["local"] = self.local_embedder(taps["layer3"])
        return out


class GLoRIAModel(nn.Module):
    def __init__(self, cfg: GLoRIAConfig, bert: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        self.text_encoder = TextEncoder(cfg.bert, cfg.last_n_layers, bert)
        self.img_encoder = ImageEncoder(cfg, int(self.text_encoder.model.config.hidden_size))

    def forward(self, images: torch.Tensor, text: TextBatch) -> dict[str, Any]:
        return {"img": self.img_encoder(images), "txt": self.text_encoder(text), "text": text}

    def loss(self, enc: dict[str, Any], max_elements: int | None = None
             ) -> dict[str, torch.Tensor]:
        img, txt, text = enc["img"], enc["txt"], enc["text"]
        c = self.cfg
        s_local = L.local_similarity(img["local"], txt["words"], text.word_mask, c.tau1, c.tau2,
                                     max_elements)
        l0, l1 = L.contrastive(s_local, c.tau3)
        g0, g1 = L.contrastive(L.global_similarity(img["global"], txt["report"]), c.tau3)
        local, glob = (l0 + l1) * c.local_weight, (g0 + g1) * c.global_weight
        return {"local_loss": local, "global_loss": glob, "loss": local + glob}


def word_attention(regions: torch.Tensor, words: torch.Tensor, mask: torch.Tensor,
                   tau1: float) -> torch.Tensor:
    """``attention_fn``: a [Q, T, R] attention of each query's word slots over the regions of
    its image (regions [Q, D, R], words [Q, D, T]): softmax over the (masked-in) words, x tau1,
    softmax over regions."""
    s = torch.einsum("qdt,qdr->qtr", words, regions)
    s = s.masked_fill(~mask[:, :, None], torch.finfo(s.dtype).min)
    return torch.softmax(torch.softmax(s, dim=1) * tau1, dim=2)


def local_max_similarity(regions: torch.Tensor, words: torch.Tensor, mask: torch.Tensor,
                         tau1: float = ZERO_SHOT_TAU1,
                         tau2: float = ZERO_SHOT_TAU2) -> torch.Tensor:
    """``get_local_similarities`` for N images x Q prompts, [N, Q]: per prompt, the attention of
    its word slots (`mask`) over each image's regions, the cosine of each word and its context,
    then ``log(max_w exp(tau2 cos))``. regions [N, D, R]; words [Q, D, T]; mask [Q, T]."""
    s = torch.einsum("qdt,ndr->nqtr", words, regions)
    s = s.masked_fill(~mask[None, :, :, None], torch.finfo(s.dtype).min)
    attn = torch.softmax(torch.softmax(s, dim=2) * tau1, dim=3)  # words, then regions
    ctx = torch.einsum("nqtr,ndr->nqtd", attn, regions)
    w = words.permute(0, 2, 1)[None]  # [1, Q, T, D]
    num = (ctx * w).sum(-1)
    cos = num / (ctx.norm(dim=-1) * w.norm(dim=-1)).clamp(min=L.EPS)
    e = torch.exp(cos * tau2).masked_fill(~mask[None], float("-inf"))
    return torch.log(e.max(dim=2).values)


def local_max_similarity_loop(regions: torch.Tensor, words: torch.Tensor,
                              mask: torch.Tensor) -> torch.Tensor:
    """The oracle: one prompt at a time against every image, as the official loop does (the
    prompt's masked-in slots must be contiguous, as ``[1 : cap_len + 1]`` makes them)."""
    cols = []
    for q in range(words.shape[0]):
        idx = mask[q].nonzero().flatten()
        word = words[q][:, idx].unsqueeze(0).repeat(regions.shape[0], 1, 1)  # [N, D, T]
        attn = torch.bmm(regions.transpose(1, 2), word)  # [N, R, T]
        attn = torch.softmax(attn, dim=-1)
        attn = torch.softmax(attn.transpose(1, 2) * ZERO_SHOT_TAU1, dim=-1)  # [N, T, R]
        ctx = torch.bmm(regions, attn.transpose(1, 2))  # [N, D, T]
        cos = (word * ctx).sum(1) / (word.norm(dim=1) * ctx.norm(dim=1)).clamp(min=L.EPS)
        cols.append(torch.log(torch.exp(cos * ZERO_SHOT_TAU2).max(dim=1).values))
    return torch.stack(cols, 1)
