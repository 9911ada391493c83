"""The ``biovil`` method: BioViL's maps and zero-shot scores as hi-ml-multimodal makes them.

- **Weights**: the released image ``.pt`` (hi-ml's plain state dict, 328 keys) as
  ``checkpoint``, with CXR-BERT (``text_encoder``: a local folder or the offline Hugging Face
  cache of ``microsoft/BiomedVLP-CXR-BERT-specialized``, 210 keys), both loaded strictly and
  safely (`checkpoint`); or a ``bench train biovil`` safetensors file (both models, config and
  tokenizer); or, without a checkpoint, a randomly initialised preset (said in ``config()``).
- **Input**: hi-ml's ``load_image`` + ``Resize(512)`` + ``CenterCrop(480)`` + ``ToTensor``, three
  channels, no normalisation (`imaging`; a harness-trained model uses its preset's sizes).
- **Map** (the official ``ImageTextInferenceEngine.get_similarity_map_from_raw_data``): cosine
  of the L2-normalised projected patch embeddings with the L2-normalised query embedding, a
  Gaussian of sigma 1.5 patches, resized (``nearest``; option ``interpolation=bilinear``) to the
  crop's footprint ``int(crop * min(H, W) / resize)`` and NaN-padded to the original H x W. The
  map is returned in the original frame; the protocols treat NaN pixels as outside the
  method's field of view: the AFLoc protocol carries the map to its 224 letterbox bilinearly
  (a pixel next to the NaN border becomes NaN too) and min-max normalises, thresholds and
  scores only the non-NaN pixels (IoU, Dice and CNR over the valid field; the GT outside it is
  not counted); CheXlocalize normalises over the valid pixels, counts none outside them as
  predicted, and its pointing game never picks a NaN pixel.
- **Zero-shot** (``get_similarity_score_from_raw_data``): each prompt's projected [CLS]
  embedding *unnormalised*, the mean over the prompt set, L2-normalised, cosine with the
  L2-normalised global embedding (mean of the projected patch embeddings). The harness's rule
  for a probability (its choice; BioViL's package gives a cosine per prompt set and the
  official example decides "positive score > negative score"): P(positive) =
  softmax(cos_pos, cos_neg)[0] on the raw cosines, the platform's CheXzero rule
  (`softmax_pair`); it is > 0.5 exactly when the official example says positive.
- **Prompts** (the harness's choice except for pneumonia): pneumonia uses the official test's
  four positive and four negative prompts (``test_zero_shot_classification.py``); every other
  class AFLoc's prompts as the harness gives them to AFLoc (`bench.methods.afloc.prompts`:
  severity x subtype x location, "no {Category}." negative), whitespace trimmed, so the
  official clean-up then strips the final period.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from bench.errors import CheckpointError
from bench.imaging.geometry import ORIGINAL, Frame
from bench.methods._shared import checkpoints as shared_ck
from bench.methods._shared.encoders import build_wordpiece, tokenizer_from_json
from bench.methods._shared.vision_language import (
    VisionLanguageMethod,
    softmax_pair,
    text_encoder_identity,
)
from bench.methods.afloc.prompts import cxr_prompts, prompt_data
from bench.methods.base import Option
from bench.registry import register_method
from bench.types import Capabilities, Sample

from . import checkpoint as ck
from . import presets
from .imaging import EVAL, INTERPOLATIONS, eval_recipe, similarity_maps
from .model import JOINT_FEATURE_SIZE, BioViLConfig, BioViLModel
from .text import Tokenize, load_vocab_tokenizer

DESCRIPTION = ("BioViL: ResNet-50 + CXR-BERT image-text model (hi-ml-multimodal); maps are "
               "the official inference engine's (patch x text cosine, Gaussian 1.5, "
               "NaN outside the crop)")
MAP_NOTE = ("official ImageTextInferenceEngine map: cosine of normalised projected patch and "
            "text embeddings (15 x 15 at 480), Gaussian sigma 1.5 in patch units, resized to "
            "the crop's footprint and NaN-padded to the original image")
ZERO_SHOT_RULE = ("mean of unnormalised prompt embeddings, L2-normalised, cosine with the "
                  "normalised global embedding (hi-ml); P = softmax(cos_pos, cos_neg)[0] on raw "
                  "cosines (the harness's rule; > 0.5 iff positive score > negative score)")
PROMPTS_NOTE = ("pneumonia: the official test's 4 + 4 prompts; other classes: AFLoc's prompt "
                "dictionary (harness choice), whitespace trimmed")

# hi-ml-multimodal test_multimodal/vlp/test_zero_shot_classification.py
PNEUMONIA_PROMPTS = (
    ["Findings consistent with pneumonia", "Findings suggesting pneumonia",
     "This opacity can represent pneumonia", "Findings are most compatible with pneumonia"],
    ["There is no pneumonia", "No evidence of pneumonia", "No evidence of acute pneumonia",
     "No signs of pneumonia"],
)


def biovil_prompts(category: str) -> tuple[list[str], list[str]]:
    """(positive, negative) prompts of a class (see the module docstring)."""
    if category.strip().lower() == "pneumonia":
        return list(PNEUMONIA_PROMPTS[0]), list(PNEUMONIA_PROMPTS[1])
    pos, neg = cxr_prompts(category)
    return [p.strip() for p in pos], [p.strip() for p in neg]


def load_biovil(checkpoint: str | Path | None, preset: str = "tiny",
                text_encoder: str | None = None) -> tuple[BioViLModel, Any, dict[str, Any]]:
    """(model, tokenizer, info) from our safetensors file, the released image ``.pt`` (+
    CXR-BERT), or (no checkpoint) a randomly initialised preset."""
    if checkpoint is None:
        return _random_init(preset, text_encoder)
    path = Path(checkpoint)
    if shared_ck.file_format(path) == "safetensors":
        state, cfg_json, tok_json = ck.read_weights(path)
        cfg = BioViLConfig.from_json(cfg_json)
        if tok_json:
            tok = tokenizer_from_json(tok_json)
        else:
            tok = load_vocab_tokenizer(ck.resolve_text_folder(text_encoder or cfg.text_encoder
                                                              or ck.TEXT_REPO))
        cfg.imagenet_weights = False
        model = BioViLModel(cfg)
        diff = shared_ck.load_into(model, state, str(path), strict=True)
        info: dict[str, Any] = {"format": "afloc-bench safetensors"}
    else:
        image_state = ck.read_image_pt(path)
        source = text_encoder or presets.DEFAULT_TEXT_ENCODER
        folder = ck.resolve_text_folder(source)
        text_cfg = ck.read_text_config(folder)
        tok = load_vocab_tokenizer(folder)
        text_state = ck.read_text_state(folder)
        cfg = BioViLConfig(arch="resnet50", imagenet_weights=False, joint_dim=JOINT_FEATURE_SIZE,
                           text_config=text_cfg, text_encoder=source, preset="official")
        try:
            model = BioViLModel(cfg)
        except ValueError as exc:
            raise CheckpointError(f"{folder}/config.json: {exc}") from exc
        diff = shared_ck.load_into(model.image, image_state, str(path), strict=True)
        text_diff = shared_ck.load_into(model.text, text_state, str(folder), strict=True)
        diff = {k: diff[k] + text_diff[k] for k in diff}
        info = {"format": "hi-ml image .pt + CXR-BERT folder", "text_folder": str(folder)}
    info.update(random_init=False, key_diff={k: len(v) for k, v in diff.items()})
    return model, tok, info


def _random_init(preset: str, text_encoder: str | None
                 ) -> tuple[BioViLModel, Any, dict[str, Any]]:
    cfg = presets.preset_config(preset)
    info: dict[str, Any] = {}
    torch.manual_seed(0)
    if preset == "tiny":
        corpus = [p for c in prompt_data()["dictionary"] for p in biovil_prompts(c)[0]]
        tok = build_wordpiece(corpus, vocab_size=1000)
        cfg.text_config["vocab_size"] = int(tok.vocab_size)
        info["tokenizer"] = "WordPiece built from the CXR prompt dictionary"
    else:
        source = text_encoder or cfg.text_encoder or ck.TEXT_REPO
        folder = ck.resolve_text_folder(source)
        cfg.text_config, cfg.text_encoder = ck.read_text_config(folder), source
        tok = load_vocab_tokenizer(folder)
    cfg.imagenet_weights = False
    model = BioViLModel(cfg)
    info.update(format="none", random_init=True,
                notice=f"no checkpoint: {preset} preset with RANDOM weights")
    return model, tok, info


@register_method("biovil")
class BioViLMethod(VisionLanguageMethod):
    """BioViL (hi-ml-multimodal): the inference engine's maps and zero-shot scores."""

    capabilities = Capabilities(localize=True, classify=True, free_text=True, trainable=True)
    frame = Frame(ORIGINAL)  # maps come back at the original resolution, NaN outside the crop
    recipes: ClassVar[dict[str, Any]] = {"localize": EVAL, "classify": EVAL}
    description = DESCRIPTION
    model_attributes = ("model", "tokenizer", "tokenize")
    option_specs: ClassVar[dict[str, Option]] = {
        **VisionLanguageMethod.option_specs,
        "preset": Option("tiny", "model of the random initialisation (no checkpoint)",
                         choices=presets.PRESETS),
        "text_encoder": Option(None, "CXR-BERT folder or Hugging Face id (offline) read with "
                               "the released image .pt (default "
                               f"{presets.DEFAULT_TEXT_ENCODER}, revision {ck.TEXT_REVISION})"),
        "interpolation": Option("nearest", "how the smoothed patch grid is resized to the "
                                "image: nearest (the inference engine's default) or bilinear "
                                "(the hi-ml notebook's)", choices=INTERPOLATIONS),
    }

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", seed: int = 0,
                 **options: Any):
        super().__init__(checkpoint, device, seed, **options)
        torch.manual_seed(seed)
        self.model, self.tokenizer, self.info = load_biovil(
            checkpoint, preset=self.option("preset"), text_encoder=self.option("text_encoder"))
        self.model.to(device).eval()
        cfg = self.model.cfg
        recipe = eval_recipe(cfg.resize, cfg.crop)
        self.recipes = {"localize": recipe, "classify": recipe}
        self.tokenize = Tokenize(self.tokenizer,
                                 int(self.model.text.config.max_position_embeddings))

    # -- the image-text hooks -------------------------------------------------------------
    def image_features(self, samples: list[Sample], purpose: str) -> dict[str, torch.Tensor]:
        features = super().image_features(samples, purpose)
        # the original sizes (the map's padding is computed from them, as hi-ml's image.size)
        features["hw"] = torch.tensor([tuple(s.hw) for s in samples], dtype=torch.long)
        return features

    def encode_images(self, x: torch.Tensor, purposes: frozenset[str]) -> dict[str, torch.Tensor]:
        out = self.model.image_features(x)
        return {k: v.float().cpu() for k, v in out.items()}

    def encode_texts(self, texts: list[str], kind: str) -> torch.Tensor:
        """[Q, D] projected [CLS] embeddings: L2-normalised for queries (maps), unnormalised for
        class prompts (averaged first, normalised after, as the package scores)."""
        batch = self.tokenize(texts).to(self.device)
        emb = self.model.encode_texts(batch.input_ids, batch.attention_mask).cpu()
        return F.normalize(emb, dim=1) if kind == "query" else emb

    def maps(self, features: dict[str, torch.Tensor], i: int,
             texts: list[str]) -> list[np.ndarray]:
        emb = self.text_embeddings(texts, "query")
        hw = tuple(int(v) for v in features["hw"][i])
        cfg = self.model.cfg
        return similarity_maps(features["patch"][i], emb, hw, cfg.resize, cfg.crop,
                               self.option("interpolation"))

    def class_prompts(self, pathology: str) -> tuple[list[str], list[str]]:
        return biovil_prompts(pathology)

    def class_vectors(self, pathology: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean of the unnormalised prompt embeddings, L2-normalised (hi-ml)."""
        pos, neg = self.class_prompts(pathology)
        return (F.normalize(self.text_embeddings(pos, "class").mean(0), dim=0),
                F.normalize(self.text_embeddings(neg, "class").mean(0), dim=0))

    def zero_shot(self, features: dict[str, torch.Tensor], pos: torch.Tensor,
                  neg: torch.Tensor) -> np.ndarray:
        return zero_shot_probs(features["global"], pos, neg)

    def config(self) -> dict[str, Any]:
        cfg = self.model.cfg
        return {
            "preset": cfg.preset, "arch": cfg.arch, "joint_dim": cfg.joint_dim,
            "text_encoder": cfg.text_encoder, "resize": cfg.resize, "crop": cfg.crop,
            "interpolation": self.option("interpolation"),
            "checkpoint_format": self.info.get("format"),
            "random_init": bool(self.info.get("random_init")),
            "notice": self.info.get("notice"), "heatmap": MAP_NOTE,
            "zero_shot": ZERO_SHOT_RULE, "prompts": PROMPTS_NOTE,
        }

    # -- identity, training ---------------------------------------------------------------
    @classmethod
    def weights_identity(cls, options: dict[str, Any]) -> dict[str, Any] | None:
        """The CXR-BERT folder or Hugging Face id read beside a released image .pt (or given,
        or read by the paper preset's random initialisation)."""
        return text_encoder_identity(options, presets.DEFAULT_TEXT_ENCODER)

    train_presets = presets.PRESETS
    train_option_specs: ClassVar[dict[str, Option]] = {
        "text_encoder": Option(None, "CXR-BERT id or local folder (paper preset; default "
                               f"{presets.DEFAULT_TEXT_ENCODER}, offline)"),
        "vocab_size": Option(2000, "tiny preset: size of the WordPiece vocabulary built from "
                             "the training reports", int),
        "local_weight": Option(1.0, "weight of the local (token-patch) loss; 0: global only",
                               float),
        "early_stopping": Option(None, "stop after this many epochs without a lower "
                                 "validation loss", int),
    }

    @classmethod
    def train_task(cls, request: Any, data: Any) -> Any:
        from .train import make_task

        return make_task(request, data)


def zero_shot_probs(img_global: torch.Tensor, pos: torch.Tensor,
                    neg: torch.Tensor) -> np.ndarray:
    """P(positive) per image and class: softmax over the raw cosines (cos(img, pos_c),
    cos(img, neg_c)); `pos`, `neg` [P, D] are the normalised class vectors."""
    img = F.normalize(img_global.float(), dim=1)
    return softmax_pair(img @ F.normalize(pos, dim=1).t(), img @ F.normalize(neg, dim=1).t())
