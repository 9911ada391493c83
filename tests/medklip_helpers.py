"""Shared builders for the MedKLIP tests: the released checkpoint's layout, a small local BERT
folder standing in for Bio_ClinicalBERT, and a descriptions JSON in the official key order
(with the harness's own test strings, not the official ones)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bench.methods.medklip.model import MedKLIPConfig, MedKLIPModel
from bench.methods.medklip.names import OBSERVATIONS


def official_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return MedKLIPModel(MedKLIPConfig()).state_dict()


def save_release(path: Path, state: dict[str, torch.Tensor] | None = None, prefix: str = "module.",
                 seed: int = 0) -> dict[str, torch.Tensor]:
    """A ``checkpoint_final.pth`` as the official trainer writes it (DataParallel keys)."""
    state = official_state(seed) if state is None else state
    torch.save({"model": {prefix + k: v for k, v in state.items()},
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]},
                "lr_scheduler": {"last_epoch": 99}, "config": {"d_model": 256, "N": 4},
                "epoch": 99}, path)
    return state


def write_descriptions(path: Path, misspell: bool = False, texts: list[str] | None = None
                       ) -> list[str]:
    texts = texts or [f"test description number {i} about {n}" for i, n in
                      enumerate(OBSERVATIONS)]
    keys = list(OBSERVATIONS)
    if misspell:
        keys[20] = "eumonia"
    path.write_text(json.dumps(dict(zip(keys, texts))))
    return texts


def bert_folder(path: Path, hidden: int = 768, seed: int = 0) -> Path:
    """A one-layer BERT with a small WordPiece vocabulary saved as a local model folder."""
    from transformers import BertConfig, BertModel

    from bench.methods._shared.encoders import build_wordpiece

    tok = build_wordpiece([f"test description number {i} about {n}" for i, n in
                           enumerate(OBSERVATIONS)] + ["new phrase left lower lobe opacity"],
                          vocab_size=400)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=1,
                     num_attention_heads=12 if hidden % 12 == 0 else 2, intermediate_size=64,
                     max_position_embeddings=128)
    BertModel(cfg, add_pooling_layer=False).save_pretrained(path)
    tok.save_pretrained(path)
    return path
