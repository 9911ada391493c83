"""The ``convirt`` method: zero-shot classification and (the harness's adaptation) heatmaps.

ConVIRT (Zhang et al. 2022) aligns one global image vector with one report vector; it has no
official zero-shot protocol and no localization. Here:

- **Zero-shot classification**: the image's projected embedding ``vis_proj(avgpool(layer4))``
  against each class's positive and negative prompts. The prompts are AFLoc's, as the harness
  gives them to AFLoc (`bench.methods.afloc.prompts`: the official CXR dictionary's
  severity x subtype x location combinations, "no {Category}. " as the negative), with the
  dictionary's "Category:" separator made a space (ViLMedic's cleaning would delete the colon
  and glue the category to the next word). Each prompt's ``lin_proj(pooler_output)`` is
  L2-normalised, a class vector is the mean over its prompt set, and P(positive) =
  softmax(cos(img, pos) / tau, cos(img, neg) / tau)[0], with the model's own tau (0.1): the
  two-way version of the choice its loss trains.
- **Localization map (not official; the harness's adaptation)**: ``vis_proj`` applied to each
  layer4 location (7 x 7 at 224) and the cosine of each location with the query's
  ``lin_proj(pooler_output)``. The map is returned on the 7 x 7 grid over the model's frame
  (Resize((224, 224)), aspect ignored); the protocols carry it back bilinearly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from bench.errors import CheckpointError
from bench.methods._shared import checkpoints as shared_ck
from bench.methods._shared.encoders import (
    build_wordpiece,
    load_tokenizer,
)
from bench.methods._shared.vision_language import (
    VisionLanguageMethod,
    is_released_checkpoint,
    softmax_pair,
    text_encoder_identity,
)
from bench.methods.afloc.prompts import cxr_prompts, prompt_data
from bench.methods.base import Option, fingerprint_path, parse_bool
from bench.registry import register_method
from bench.types import Capabilities

from . import checkpoint as ck
from . import presets
from .imaging import EVAL
from .loss import unit
from .model import ConVIRTConfig, ConVIRTModel, build_text_model, cosine_maps
from .text import TEXT_CLEAN, Tokenize

DESCRIPTION = ("ConVIRT: global image-report contrastive (ViLMedic convirt-mimic); maps are the "
               "harness's adaptation (vis_proj at each layer4 cell x text), not official")
MAP_NOTE = ("harness adaptation, not an official ConVIRT output: cosine of vis_proj(layer4 "
            "location) with lin_proj(pooler_output), 7x7 grid on Resize((224, 224))")


def convirt_prompts(category: str) -> tuple[list[str], list[str]]:
    """AFLoc's prompts for `category`, the "Category:" separator made a space."""
    pos, neg = cxr_prompts(category)
    return [p.replace(":", " ") for p in pos], [p.replace(":", " ") for p in neg]


def load_convirt(checkpoint: str | Path | None, preset: str = "tiny",
                 text_encoder: str | None = None, text_clean: str | None = None,
                 ) -> tuple[ConVIRTModel, Any, dict[str, Any]]:
    """(model, tokenizer, info) from our safetensors file, ViLMedic's ``.pth``, or (no
    checkpoint) a randomly initialised preset."""
    if checkpoint is None:
        return _random_init(preset, text_encoder, text_clean)
    path = Path(checkpoint)
    if shared_ck.file_format(path) == "safetensors":
        state, cfg_json, tok_json = ck.read_weights(path)
        cfg = ConVIRTConfig.from_json(cfg_json)
        tok = (ck.tokenizer_from_saved(tok_json, cfg.text_kind) if tok_json else
               load_tokenizer(text_encoder or cfg.text_encoder))
        info: dict[str, Any] = {"format": "afloc-bench safetensors",
                                "text_settings": "the checkpoint's config"}
    else:
        state = ck.read_official(path)
        source = text_encoder or presets.DEFAULT_TEXT_ENCODER
        text_cfg = ck.load_text_config(source)
        tok = load_tokenizer(source)
        text, where = ck.zoo_text_settings(path)
        cfg = ConVIRTConfig(text_kind=ck.text_kind_of(text_cfg), text_config=text_cfg.to_dict(),
                            text_encoder=source, preset="official", **text)
        info = {"format": "ViLMedic .pth (state dict under 'model')", "text_settings": where}
    if text_clean:
        cfg.text_clean = text_clean
        info["text_settings"] = "text_clean option"
    cfg.imagenet_weights = False  # every weight comes from the checkpoint
    model = ConVIRTModel(cfg)
    diff = shared_ck.load_into(model, state, str(path), strict=True)
    info.update(random_init=False, key_diff={k: len(v) for k, v in diff.items()})
    return model, tok, info


def _random_init(preset: str, text_encoder: str | None, text_clean: str | None,
                 ) -> tuple[ConVIRTModel, Any, dict[str, Any]]:
    cfg = presets.preset_config(preset, text_clean or "r2gen")
    info: dict[str, Any] = {}
    torch.manual_seed(0)
    if preset == "tiny":
        corpus = [p for c in prompt_data()["dictionary"] for p in convirt_prompts(c)[0]]
        tok = build_wordpiece(corpus, vocab_size=1000)
        cfg.text_config["vocab_size"] = int(tok.vocab_size)
        info["tokenizer"] = "WordPiece built from the CXR prompt dictionary"
        text_model = None
    else:
        source = text_encoder or cfg.text_encoder
        tok = load_tokenizer(source)
        try:
            text_cfg = ck.load_text_config(source)
            cfg.text_kind, cfg.text_config = ck.text_kind_of(text_cfg), text_cfg.to_dict()
        except CheckpointError:  # a tokenizer without config.json: roberta-base's shape
            cfg.text_kind = "roberta"
            cfg.text_config = {**presets.ROBERTA_BASE,
                               "vocab_size": max(presets.ROBERTA_BASE["vocab_size"], len(tok))}
            info["text_config"] = f"roberta-base architecture (no config.json in {source})"
        cfg.text_encoder = source
        text_model = build_text_model(cfg)
    cfg.imagenet_weights = False
    model = ConVIRTModel(cfg, text_model)
    info.update(format="none", random_init=True,
                notice=f"no checkpoint: {preset} preset with RANDOM weights")
    return model, tok, info


@register_method("convirt")
class ConVIRTMethod(VisionLanguageMethod):
    """ConVIRT (global image-report contrastive); maps are the harness's adaptation."""

    capabilities = Capabilities(localize=True, classify=True, free_text=True, trainable=True)
    frame = EVAL.frame
    recipes = {"localize": EVAL, "classify": EVAL}
    description = DESCRIPTION
    model_attributes = ("model", "tokenizer", "tokenize")
    option_specs: ClassVar[dict[str, Option]] = {
        **VisionLanguageMethod.option_specs,
        "preset": Option("tiny", "model of the random initialisation (no checkpoint)",
                         choices=presets.PRESETS),
        "text_encoder": Option(None, "RoBERTa folder or Hugging Face id (offline): tokenizer "
                               "and config of ViLMedic's checkpoint (default "
                               f"{presets.DEFAULT_TEXT_ENCODER}) and of the paper preset"),
        "text_clean": Option(None, "report cleaning: r2gen (ViLMedic's config since 2022) or "
                             "none (its 2021 config); default: the checkpoint's (a ViLMedic "
                             ".pth: its zoo config.yml, else none), r2gen for a random init",
                             choices=TEXT_CLEAN),
    }

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", seed: int = 0,
                 **options: Any):
        super().__init__(checkpoint, device, seed, **options)
        torch.manual_seed(seed)
        self.model, self.tokenizer, self.info = load_convirt(
            checkpoint, preset=self.option("preset"), text_encoder=self.option("text_encoder"),
            text_clean=self.option("text_clean"))
        self.model.to(device).eval()
        cfg = self.model.cfg
        self.tokenize = Tokenize(self.tokenizer, cfg.text_clean, cfg.max_length,
                                 cfg.special_tokens)

    # -- the image-text hooks -------------------------------------------------------------
    def encode_images(self, x: torch.Tensor, purposes: frozenset[str]) -> dict[str, torch.Tensor]:
        out = self.model.image_features(x, local="localize" in purposes)
        return {k: v.float().cpu() for k, v in out.items()}

    def encode_texts(self, texts: list[str], kind: str) -> torch.Tensor:
        """[Q, D] L2-normalised ``lin_proj(pooler_output)`` of the cleaned texts."""
        batch = self.tokenize(texts).to(self.device)
        return unit(self.model.encode_texts(batch).float()).cpu()

    def maps(self, features: dict[str, torch.Tensor], i: int,
             texts: list[str]) -> list[np.ndarray]:
        embeddings = self.text_embeddings(texts, "query")
        return list(cosine_maps(features["local"][i], embeddings).numpy().astype(np.float32))

    def class_prompts(self, pathology: str) -> tuple[list[str], list[str]]:
        return convirt_prompts(pathology)

    def zero_shot(self, features: dict[str, torch.Tensor], pos: torch.Tensor,
                  neg: torch.Tensor) -> np.ndarray:
        return zero_shot_probs(features["global"], pos, neg, self.model.cfg.tau)

    def config(self) -> dict[str, Any]:
        cfg = self.model.cfg
        return {
            "preset": cfg.preset, "arch": cfg.arch, "text_kind": cfg.text_kind,
            "text_encoder": cfg.text_encoder, "proj_dim": cfg.proj_dim,
            "text_clean": cfg.text_clean, "max_length": cfg.max_length,
            "text_settings": self.info.get("text_settings"),
            "special_tokens": cfg.special_tokens, "tau": cfg.tau,
            "checkpoint_format": self.info.get("format"),
            "random_init": bool(self.info.get("random_init")),
            "notice": self.info.get("notice"), "heatmap": MAP_NOTE,
            "zero_shot": "softmax(cos(img, mean pos prompt) / tau, cos(img, mean neg prompt) / "
                         "tau); AFLoc's prompt dictionary",
        }

    # -- identity, training ---------------------------------------------------------------
    @classmethod
    def weights_identity(cls, options: dict[str, Any]) -> dict[str, Any] | None:
        """What is read beside the checkpoint: the tokenizer and text config named by a folder
        or Hugging Face id (ViLMedic's checkpoint, the paper preset's random initialisation, or
        any given), and the zoo's config.yml that sets ViLMedic's text cleaning."""
        out = text_encoder_identity(options, presets.DEFAULT_TEXT_ENCODER)
        ckpt = options.get("checkpoint")
        if out is not None and is_released_checkpoint(ckpt):
            zoo = Path(ckpt).with_name(ck.ZOO_CONFIG)
            out["zoo_config"] = fingerprint_path(zoo) if zoo.is_file() else None
        return out

    train_presets = presets.PRESETS
    train_option_specs: ClassVar[dict[str, Option]] = {
        "text_encoder": Option(None, "RoBERTa id or local folder (paper preset; default "
                               f"{presets.DEFAULT_TEXT_ENCODER}, offline)"),
        "text_clean": Option("r2gen", "report cleaning (r2gen: ViLMedic's config; none)",
                             choices=TEXT_CLEAN),
        "hflip": Option(True, "RandomHorizontalFlip of the training images (ViLMedic's)",
                        parse_bool),
        "vocab_size": Option(2000, "tiny preset: size of the WordPiece vocabulary built from "
                             "the training reports", int),
        "early_stopping": Option(None, "stop after this many epochs without a lower "
                                 "validation loss (paper: 20, as ViLMedic's config)", int),
    }

    @classmethod
    def train_task(cls, request: Any, data: Any) -> Any:
        from .train import make_task

        return make_task(request, data)


def zero_shot_probs(img: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor,
                    tau: float) -> np.ndarray:
    """P(positive) per image and class: softmax over (cos(img, pos_c), cos(img, neg_c)) / tau."""
    img = unit(img)
    return softmax_pair(img @ unit(pos).t() / tau, img @ unit(neg).t() / tau)
