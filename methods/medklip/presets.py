"""MedKLIP's model presets.

``paper``: the official configuration (``Pretrain_MedKLIP.yaml``): ResNet-50 (random init, as
the official ``pretrained=False``), d_model 256, 4 heads, 4 decoder layers, FFN 1024, dropout
0.1, Bio_ClinicalBERT (offline) for the query and position books, the official descriptions.
``tiny``: the encoders of AFLoc's and ConVIRT's tiny presets, so they compare on equal terms:
the small ResNet (one BasicBlock per stage, widths 16-128, up to layer3: 64 channels, 14 x 14 at
224), d_model 64, 4 heads, 4 decoder layers (the map stays the mean of 4), FFN 128, no
dropout (as the tiny BERT; attention dropout was a quarter of a tiny step's CPU time), and a
4-layer BERT of width 64 from scratch with a WordPiece vocabulary built from the training
reports and the harness's own descriptions (`queries.synthetic_descriptions`).
"""

from __future__ import annotations

from typing import Any

from bench.methods._shared.encoders import SMALL_WIDTHS, TINY_BERT

from .model import MedKLIPConfig

PRESETS = ("paper", "tiny")
DEFAULT_TEXT_ENCODER = "emilyalsentzer/Bio_ClinicalBERT"


def preset_config(preset: str, **overrides: Any) -> MedKLIPConfig:
    if preset == "paper":
        cfg = MedKLIPConfig(preset="paper", text_encoder=DEFAULT_TEXT_ENCODER,
                            descriptions="official")
    elif preset == "tiny":
        cfg = MedKLIPConfig(arch="small", small_widths=SMALL_WIDTHS, d_model=64, heads=4,
                            layers=4, ffn=128, dropout=0.0,
                            text_dim=int(TINY_BERT["hidden_size"]), text_kind="bert",
                            text_config=dict(TINY_BERT), text_encoder=None,
                            descriptions="synthetic", preset="tiny")
    else:
        raise ValueError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg
