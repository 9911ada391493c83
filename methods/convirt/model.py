"""ConVIRT's modules in ViLMedic's layout (``vilmedic/models/selfsup/conVIRT.py``), rebuilt.

State-dict keys, as ViLMedic's ``ConVIRT`` module names them (no prefix):

- ``linguistic.encoder.*``: the Hugging Face text model (``EncoderModel.encoder``; RoBERTa
  ``allenai/biomed_roberta_base`` with its pooler in convirt-mimic);
- ``visual.model.{0..7}.*``: torchvision's ResNet-50 children up to ``avgpool`` as an
  ``nn.Sequential`` (``VisualEncoder.model``; 0 conv1, 1 bn1, 2 relu, 3 maxpool, 4-7
  layer1-4, 8 avgpool, the last three without weights);
- ``vis_proj.{0,2}.*`` Linear(2048, 768) ReLU Linear(768, 768) and ``lin_proj.{0,2}.*``
  Linear(768, 768) ReLU Linear(768, 768).

Image embedding: ``vis_proj(avgpool(layer4))``; text embedding: ``lin_proj(pooler_output)``.
The tiny preset keeps the layout with a small ResNet (an ``AdaptiveAvgPool2d`` as child 8) and a
small BERT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from bench.methods._shared.encoders import (
    SMALL_WIDTHS,
    NHWCBackbone,
    WidthsConfig,
    build_cnn,
    stage_channels,
)

from .loss import LAMBDA, TAU, convirt_loss, unit
from .text import MAX_LENGTH, TextBatch

TEXT_KINDS = ("roberta", "bert")


@dataclass
class ConVIRTConfig(WidthsConfig):
    """Everything that defines a ConVIRT model (stored as JSON in the harness's checkpoints)."""

    arch: str = "resnet50"  # "resnet50" | "small"
    small_widths: tuple[int, ...] = SMALL_WIDTHS
    imagenet_weights: bool = False  # ImageNet weights from the local torchvision cache
    text_kind: str = "roberta"  # the Hugging Face model class: "roberta" | "bert"
    text_config: dict[str, Any] = field(default_factory=dict)  # its config (to_dict())
    text_encoder: str | None = "allenai/biomed_roberta_base"  # id or folder it came from
    proj_dim: int = 768
    tau: float = TAU
    lam: float = LAMBDA
    max_length: int = MAX_LENGTH
    text_clean: str = "r2gen"
    special_tokens: bool = False  # ViLMedic tokenizes reports without <s> </s>
    preset: str = "official"



def text_classes(kind: str) -> tuple[type, type]:
    """(config class, model class) of a text kind."""
    from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

    classes = {"roberta": (RobertaConfig, RobertaModel), "bert": (BertConfig, BertModel)}
    if kind not in classes:
        raise ValueError(f"unknown text model kind {kind!r} (known: {', '.join(TEXT_KINDS)})")
    return classes[kind]


def build_text_model(cfg: ConVIRTConfig) -> nn.Module:
    """A randomly initialised text model with its pooler, from the config."""
    config_cls, model_cls = text_classes(cfg.text_kind)
    return model_cls(config_cls.from_dict(dict(cfg.text_config)), add_pooling_layer=True)


def mlp(n_in: int, n_hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.ReLU(), nn.Linear(n_hidden, n_out))


class VisualEncoder(NHWCBackbone):
    """The backbone up to its average pool as ``model`` (children 0-8)."""

    def __init__(self, cfg: ConVIRTConfig):
        super().__init__()
        if cfg.arch not in ("resnet50", "small"):
            raise ValueError(f"unknown image backbone {cfg.arch!r} (resnet50 or small)")
        net, self.weights_note = build_cnn(cfg.arch, cfg.imagenet_weights and cfg.arch != "small",
                                           cfg.small_widths)
        names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
        pool = net.avgpool if cfg.arch != "small" else nn.AdaptiveAvgPool2d((1, 1))
        self.model = nn.Sequential(*(getattr(net, n) for n in names), pool)
        self.channels = stage_channels(cfg.arch, cfg.small_widths)[-1]

    def layer4(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, h, w] (7 x 7 at 224)."""
        x = self.in_layout(x)
        for module in list(self.model)[:8]:
            x = module(x)
        return x

    def pool(self, grid: torch.Tensor) -> torch.Tensor:
        return self.model[8](grid).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.layer4(x))


class LinguisticEncoder(nn.Module):
    """The text model as ``encoder``; its output is the ``pooler_output``."""

    def __init__(self, cfg: ConVIRTConfig, model: nn.Module | None = None):
        super().__init__()
        self.encoder = model if model is not None else build_text_model(cfg)

    @property
    def dim(self) -> int:
        return int(self.encoder.config.hidden_size)

    def forward(self, batch: TextBatch) -> torch.Tensor:
        # run on the batch's longest text, not the 128-token padding: masked keys add exactly
        # zero to attention and RoBERTa's positions count only real tokens, so the first
        # token's state (the pooler's input) is the same up to float rounding
        n = max(int(batch.attention_mask.sum(1).max()), 1) if len(batch) else 1
        out = self.encoder(input_ids=batch.input_ids[:, :n],
                           attention_mask=batch.attention_mask[:, :n])
        return out.pooler_output


class ConVIRTModel(nn.Module):
    """Image and text encoders and their projections (submodules in ViLMedic's order)."""

    def __init__(self, cfg: ConVIRTConfig, text_model: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        self.linguistic = LinguisticEncoder(cfg, text_model)
        self.visual = VisualEncoder(cfg)
        self.vis_proj = mlp(self.visual.channels, cfg.proj_dim, cfg.proj_dim)
        self.lin_proj = mlp(self.linguistic.dim, cfg.proj_dim, cfg.proj_dim)

    def encode_texts(self, batch: TextBatch) -> torch.Tensor:
        """[B, D] projected text embeddings (not normalised)."""
        return self.lin_proj(self.linguistic(batch))

    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        """[B, D] projected image embeddings (not normalised)."""
        return self.vis_proj(self.visual(x))

    def image_features(self, x: torch.Tensor, local: bool = True) -> dict[str, torch.Tensor]:
        """{"global": [B, D]} and, with `local`, {"local": [B, D, h, w]}: ``vis_proj`` applied
        to each layer4 location (the harness's map adaptation; ConVIRT itself has none)."""
        grid = self.visual.layer4(x)
        out = {"global": self.vis_proj(self.visual.pool(grid))}
        if local:
            out["local"] = self.vis_proj(grid.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return out

    def forward(self, images: torch.Tensor, text: TextBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_images(images), self.encode_texts(text)

    def loss(self, visual: torch.Tensor, linguistic: torch.Tensor,
             gather: Any = None) -> dict[str, torch.Tensor]:
        return convirt_loss(visual, linguistic, self.cfg.tau, self.cfg.lam, gather)


def cosine_maps(local: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """[Q, h, w] cosines of each location of `local` [D, h, w] with each row of `text` [Q, D]."""
    return torch.einsum("dhw,qd->qhw", unit(local, dim=0), unit(text))
