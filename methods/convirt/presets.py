"""ConVIRT's model presets.

``paper``: ViLMedic's convirt-mimic model: torchvision ResNet-50 (ImageNet weights from the local
torchvision cache when present, as ViLMedic's ``pretrained=True``), ``allenai/biomed_roberta_base``
loaded offline, projections to 768.
``tiny``: the encoders of AFLoc's tiny preset, so the two are compared on equal terms: the small
ResNet (one BasicBlock per stage, widths 16-128, random init), a 4-layer BERT of width 64 from
scratch (no dropout) with a WordPiece vocabulary built from the training reports, projections to
64 (the tiny BERT's width, AFLoc tiny's embedding size). The input stays 224.
"""

from __future__ import annotations

from typing import Any

from bench.methods._shared.encoders import SMALL_WIDTHS, TINY_BERT

from .checkpoint import OFFICIAL_TEXT_ENCODER
from .model import ConVIRTConfig

PRESETS = ("paper", "tiny")
DEFAULT_TEXT_ENCODER = OFFICIAL_TEXT_ENCODER
# biomed_roberta_base's architecture (roberta-base's), for a random paper-size model whose
# text-encoder folder holds a tokenizer but no config.json (benchmarks)
ROBERTA_BASE = {"model_type": "roberta", "vocab_size": 50265, "hidden_size": 768,
                "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
                "max_position_embeddings": 514, "type_vocab_size": 1, "pad_token_id": 1,
                "bos_token_id": 0, "eos_token_id": 2, "layer_norm_eps": 1e-5}


def preset_config(preset: str, text_clean: str = "r2gen", **overrides: Any) -> ConVIRTConfig:
    """The config of a preset; `text_config` of ``paper`` is filled from the loaded encoder."""
    if preset == "paper":
        cfg = ConVIRTConfig(arch="resnet50", imagenet_weights=True, text_kind="roberta",
                            text_config={}, text_encoder=DEFAULT_TEXT_ENCODER, proj_dim=768,
                            text_clean=text_clean, preset="paper")
    elif preset == "tiny":
        cfg = ConVIRTConfig(arch="small", small_widths=SMALL_WIDTHS, imagenet_weights=False,
                            text_kind="bert", text_config=dict(TINY_BERT), text_encoder=None,
                            proj_dim=int(TINY_BERT["hidden_size"]), text_clean=text_clean,
                            preset="tiny")
    else:
        raise ValueError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg
