"""AFLoc's model presets.

``paper``: ResNet-50 (ImageNet weights from the local torchvision cache when present) and a
Hugging Face BERT (default ``emilyalsentzer/Bio_ClinicalBERT``) loaded offline from the user's
cache or a local folder; D = 768; tau 4/5/10; input 224 upsampled to 299.
``tiny``: the same code with a small ResNet (one BasicBlock per stage), a 4-layer BERT of
width 64 (so D = 64) and a WordPiece vocabulary built from the training reports with ``tokenizers``;
the model input stays 224 (no upsample to 299) to keep CPU training cheap, and the 1x1 local
embedders start at 0.1x their default init (``local_init_scale``). Why: the local attention's
first softmax (over a caption's words or sentences) takes raw dot products, which at the default
init of a from-scratch model already have a spread of 11-17, so each region starts almost
one-hot assigned to a random word or sentence and the gradient through that softmax is nearly
zero. Whether the maps then learned to localize in 10 CPU minutes came down to the seed (2 of 4);
at 0.1x the spread starts near 1.7 and the assignment is learned. The ``paper`` preset keeps the
official init: its encoders are pretrained, so the initial assignment is not random.
The tiny BERT also trains without dropout (BERT's default is 0.1 on hidden states and attention
probabilities; the ``paper`` preset keeps its checkpoint's). Ten epochs of 3,000 synthetic
reports underfit (validation loss tracks training loss), so the model needs no regularisation,
and dropout's noise fell on the from-scratch text side, whose report embedding the official
heatmap dots with the image. With it, 2 of 5 seeds' maps beat the ``center`` prior on the
full-size synthetic MS-CXR after 10 CPU minutes; without it, 4 of 5 (README, learning check).

Text side (Extended Data Table 7 swaps the text encoder): ``--text-encoder`` names a local folder
(or offline Hugging Face id) of a BERT-family encoder, `encoders.WORDPIECE_ENCODERS` with a
WordPiece tokenizer, anything else is refused in one line; with the ``tiny`` preset it replaces
the from-scratch BERT and its built vocabulary (the small ResNet stays). ``--text-layers`` /
``--text-width`` size the tiny preset's from-scratch BERT instead (`encoders.tiny_bert`: heads of
32, feed-forward 2 x width); at least 4 layers, since the official text feature sums the last 4
hidden states and fewer would sum in the embedding layer's.
"""

from __future__ import annotations

from typing import Any

from bench.errors import UsageError
from bench.methods._shared.encoders import BERT_BASE, TINY_BERT, tiny_bert

from .model import LEVELS, AFLocConfig

DEFAULT_TEXT_ENCODER = "emilyalsentzer/Bio_ClinicalBERT"
PRESETS = ("paper", "tiny")
# the tiny preset's from-scratch BERT: (layers, width)
TINY_TEXT = (int(TINY_BERT["num_hidden_layers"]), int(TINY_BERT["hidden_size"]))


def text_source(preset: str, text_encoder: str | None, text_layers: int | None,
                text_width: int | None) -> str | None:
    """The pretrained text encoder to load (a folder or Hugging Face id), or None for the tiny
    preset's from-scratch BERT; refuses sizes where they size nothing."""
    sized = text_layers is not None or text_width is not None
    if sized and preset != "tiny":
        raise UsageError(f"--text-layers / --text-width size the tiny preset's from-scratch "
                         f"BERT; the {preset} preset loads --text-encoder")
    if sized and text_encoder:
        raise UsageError("--text-layers / --text-width size a from-scratch BERT; "
                         "--text-encoder loads a pretrained one: give one or the other")
    if preset == "tiny":
        return text_encoder or None
    return text_encoder or DEFAULT_TEXT_ENCODER


def tiny_text_bert(text_layers: int | None, text_width: int | None,
                   last_n_layers: int = 4) -> dict[str, Any]:
    """The from-scratch BERT's config (vocabulary size 0 until the tokenizer is built)."""
    layers = TINY_TEXT[0] if text_layers is None else int(text_layers)
    width = TINY_TEXT[1] if text_width is None else int(text_width)
    if layers < last_n_layers:
        raise UsageError(f"--text-layers {layers}: AFLoc sums the last {last_n_layers} hidden "
                         f"states, so the text encoder needs at least {last_n_layers} layers")
    try:
        return tiny_bert(layers, width)
    except ValueError as exc:
        raise UsageError(f"--text-layers / --text-width: {exc}") from exc


def text_size(config: Any) -> str:
    """"LxW": the layers and width of a Hugging Face text config (attribute names, which every
    type maps: DistilBERT stores them as ``n_layers`` / ``dim``), for the run's settings."""
    return f"{config.num_hidden_layers}x{config.hidden_size}"


def preset_config(preset: str, levels: tuple[str, ...] = LEVELS, text_mode: str = "faithful",
                  **overrides: Any) -> AFLocConfig:
    if preset == "paper":
        cfg = AFLocConfig(arch="resnet50", imagenet_weights=True, input_size=299,
                          bert=dict(BERT_BASE), text_encoder=DEFAULT_TEXT_ENCODER,
                          levels=levels, text_mode=text_mode, preset="paper")
    elif preset == "tiny":
        cfg = AFLocConfig(arch="small", small_widths=(16, 32, 64, 128), imagenet_weights=False,
                          input_size=224, bert=dict(TINY_BERT), text_encoder=None,
                          levels=levels, text_mode=text_mode, preset="tiny",
                          local_init_scale=0.1)
    else:
        raise ValueError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg
