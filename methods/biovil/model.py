"""BioViL's modules, rebuilt in hi-ml-multimodal's key layout (no dependency on the package).

**Image model** (hi-ml ``ImageModel``; the released ``biovil_image_resnet50_proj_size_128.pt``
is its plain state dict, 328 keys, loaded strictly):

- ``encoder.encoder.*``: a torchvision ResNet-50 (its ``fc`` is built and saved but never
  used); the forward stops at layer4 (2048 channels, stride 32: 15 x 15 at 480);
- ``projector.model.{0,1,3}.*``: Conv1x1(2048, 128, no bias), BatchNorm2d(128), ReLU,
  Conv1x1(128, 128) applied to every layer4 location;
- projected patch embeddings = projector(layer4) [B, 128, h, w]; projected global embedding =
  their mean over h, w (the projector runs per patch, then the average).

**Text model** (hi-ml ``CXRBertModel``, a ``BertForMaskedLM`` with a projection head; 210 keys):
``bert.*`` (BERT without pooler), ``cls.predictions.*`` (the MLM head, unused for embeddings),
``cls_projection_head.{dense_to_hidden,LayerNorm,dense_to_output}.*`` (768 -> 128, GELU,
LayerNorm(eps 1e-12), 128 -> 128) applied to the last layer's [CLS] state.

The tiny preset keeps both layouts with the small ResNet (one BasicBlock per stage, widths
16-128, no ``fc``) and a 4-layer BERT of width 64 with the same heads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.methods._shared.encoders import (
    SMALL_WIDTHS,
    NHWCBackbone,
    WidthsConfig,
    build_cnn,
    feature_taps,
    stage_channels,
)

JOINT_FEATURE_SIZE = 128
RESIZE, CROP = 512, 480
# keys of CXR-BERT's config.json that are not BertConfig fields of the model itself
_CONFIG_NOISE = ("architectures", "auto_map", "transformers_version", "model_type",
                 "_name_or_path", "torch_dtype", "dtype")


@dataclass
class BioViLConfig(WidthsConfig):
    """Everything that defines a BioViL model (stored as JSON in the harness's checkpoints)."""

    arch: str = "resnet50"  # "resnet50" | "small"
    small_widths: tuple[int, ...] = SMALL_WIDTHS
    imagenet_weights: bool = False
    joint_dim: int = JOINT_FEATURE_SIZE
    text_config: dict[str, Any] = field(default_factory=dict)  # BertConfig + projection_size
    text_encoder: str | None = None  # the CXR-BERT folder or id it came from
    resize: int = RESIZE  # Resize(short side)
    crop: int = CROP  # CenterCrop
    max_length: int | None = None  # None: the official padding='longest', no truncation
    tau: float = 0.1  # training: the global loss's temperature (1 / GLoRIA's tau3)
    local_weight: float = 1.0  # training: weight of the local loss
    preset: str = "official"



def bert_config(text_config: dict[str, Any]) -> Any:
    """A ``BertConfig`` from CXR-BERT's config.json (``model_type`` "cxr-bert") or ours."""
    from transformers import BertConfig

    d = {k: v for k, v in text_config.items() if k not in _CONFIG_NOISE}
    return BertConfig(**d)


# -- image --------------------------------------------------------------------------------------

class _Encoder(NHWCBackbone):
    """hi-ml ``ImageEncoder``: the ResNet as ``encoder``."""

    def __init__(self, cfg: BioViLConfig):
        super().__init__()
        if cfg.arch not in ("resnet50", "small"):
            raise ValueError(f"unknown image backbone {cfg.arch!r} (resnet50 or small)")
        self.encoder, self.weights_note = build_cnn(
            cfg.arch, cfg.imagenet_weights and cfg.arch != "small", cfg.small_widths)
        self.channels = stage_channels(cfg.arch, cfg.small_widths)[-1]

    @property
    def model(self) -> nn.Module:  # NHWCBackbone's name for the backbone
        return self.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return feature_taps(self.encoder, self.in_layout(x), ("layer4",))["layer4"]


class _Projector(nn.Module):
    """hi-ml ``MLP(use_1x1_convs=True)``: ``model`` = Conv1x1, BN, ReLU, Conv1x1."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(n_in, n_out, 1, bias=False), nn.BatchNorm2d(n_out),
                                   nn.ReLU(inplace=True), nn.Conv2d(n_out, n_out, 1, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class ImageModel(nn.Module):
    """Keys ``encoder.encoder.*`` and ``projector.model.*`` (hi-ml's)."""

    def __init__(self, cfg: BioViLConfig):
        super().__init__()
        self.encoder = _Encoder(cfg)
        self.projector = _Projector(self.encoder.channels, cfg.joint_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projected patch embeddings [B, D, h, w] (not normalised)."""
        return self.projector(self.encoder(x)).float()


# -- text ---------------------------------------------------------------------------------------

class ProjectionHead(nn.Module):
    """hi-ml ``BertProjectionHead``: dense_to_hidden, GELU, LayerNorm (1e-12), dense_to_output."""

    def __init__(self, hidden: int, size: int):
        super().__init__()
        self.dense_to_hidden = nn.Linear(hidden, size)
        self.LayerNorm = nn.LayerNorm(size, eps=1e-12)
        self.dense_to_output = nn.Linear(size, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense_to_output(self.LayerNorm(F.gelu(self.dense_to_hidden(x))))


class TextModel(nn.Module):
    """CXR-BERT: ``bert`` and ``cls`` of a ``BertForMaskedLM`` (the MLM decoder tied to the
    word embeddings, as there) and ``cls_projection_head``."""

    def __init__(self, text_config: dict[str, Any], joint_dim: int):
        super().__init__()
        from transformers import BertForMaskedLM

        config = bert_config(text_config)
        size = int(getattr(config, "projection_size", joint_dim) or joint_dim)
        if size != joint_dim:
            raise ValueError(f"text projection_size {size} != image joint size {joint_dim}")
        mlm = BertForMaskedLM(config)
        self.config = config
        self.bert, self.cls = mlm.bert, mlm.cls
        self.cls_projection_head = ProjectionHead(int(config.hidden_size), size)

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The last layer's states [B, T, H] (no token types, as hi-ml passes none)."""
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Projected [CLS] embeddings [B, D], not normalised."""
        return self.cls_projection_head(self.hidden(input_ids, attention_mask)[:, 0])


# -- both ---------------------------------------------------------------------------------------

class BioViLModel(nn.Module):
    """``image.*`` (hi-ml's image .pt under a prefix) and ``text.*`` (CXR-BERT's keys)."""

    def __init__(self, cfg: BioViLConfig):
        super().__init__()
        self.cfg = cfg
        self.image = ImageModel(cfg)
        self.text = TextModel(cfg.text_config, cfg.joint_dim)

    def image_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"patch": [B, D, h, w], "global": [B, D]}, neither normalised."""
        patch = self.image(x)
        return {"patch": patch, "global": patch.mean(dim=(2, 3))}

    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text(input_ids, attention_mask).float()

    def token_embeddings(self, input_ids: torch.Tensor,
                         attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """([CLS] projected [B, D], every token's state through the same head [B, T, D]) from
        one text pass (training: the local loss reads the tokens)."""
        h = self.text.hidden(input_ids, attention_mask)
        proj = self.text.cls_projection_head(h)
        return proj[:, 0].float(), proj.float()
