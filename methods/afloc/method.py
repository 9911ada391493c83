"""The ``afloc`` method: heatmaps for free-text queries and zero-shot classification.

Heatmap (official ``_get_similarity_map_from_embeddings``): layer3 local embeddings [19, 19,
D] dot the query's report embedding, ``scipy.ndimage.gaussian_filter(sigma=1.5)`` on the
grid, ``F.interpolate`` bilinear (align_corners=False) to the 224 letterbox frame. Query
embeddings are computed once per distinct query text and cached. ``query=cls|words`` (not
official; a diagnostic) dots layer3 with the query's [CLS] slot, or the mean of its word slots,
instead: which part of the text side a model's maps follow.
Classification (``classification/model_afloc.py``): the global image embedding against the
mean report embedding of the positive prompts and of the negative prompts, softmax over the
pair on raw dot products; images prepared with Resize(224) + CenterCrop(224).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from bench.methods._shared import checkpoints as shared_ck
from bench.methods._shared.bert_text import TEXT_MODES, TextProcessor, clean_query
from bench.methods._shared.encoders import (
    build_wordpiece,
    load_tokenizer,
    tokenizer_from_json,
)
from bench.methods._shared.vision_language import (
    SIGMA,
    VisionLanguageMethod,
    heatmap_from_grid,
    softmax_pair,
    text_encoder_identity,
)
from bench.methods.base import Option, parse_bool
from bench.registry import register_method
from bench.types import Capabilities

from . import checkpoint as ck
from . import presets
from .imaging import CLASSIFY, LOCALIZE
from .model import AFLocConfig, AFLocModel, parse_levels
from .prompts import cxr_prompts, prompt_data

# the text vector a heatmap dots layer3 with: "report" is the official one
QUERY_VECTORS = ("report", "cls", "words")


def load_afloc(checkpoint: str | Path | None, preset: str = "tiny", text_mode: str | None = None,
               levels: Any = None, text_encoder: str | None = None, strict: bool = True,
               ) -> tuple[AFLocModel, Any, dict[str, Any]]:
    """(model, tokenizer, info) from our safetensors file, the official Lightning checkpoint,
    or (no checkpoint) a randomly initialised preset."""
    info: dict[str, Any] = {}
    if checkpoint is None:
        cfg = presets.preset_config(preset, parse_levels(levels or "word,sentence,report"),
                                    text_mode or "faithful")
        if preset == "tiny":
            corpus = [p for c in prompt_data()["dictionary"] for p in cxr_prompts(c)[0]]
            tok = build_wordpiece(corpus, vocab_size=1000)
            info["tokenizer"] = "WordPiece built from the CXR prompt dictionary"
        else:
            tok = load_tokenizer(text_encoder or cfg.text_encoder)
        cfg.bert["vocab_size"] = int(tok.vocab_size if preset == "tiny" else
                                     cfg.bert["vocab_size"])
        torch.manual_seed(0)
        model = AFLocModel(cfg)
        info.update(format="none", random_init=True,
                    notice=f"no checkpoint: {preset} preset with RANDOM weights")
        return model, tok, info
    path = Path(checkpoint)
    if shared_ck.file_format(path) == "safetensors":
        state, cfg_json, tok_json = ck.read_weights(path)
        cfg = AFLocConfig.from_json(cfg_json)
        tok = (tokenizer_from_json(tok_json) if tok_json else
               load_tokenizer(text_encoder or cfg.text_encoder))
        info["format"] = "afloc-bench safetensors"
    else:
        state, hp = ck.read_official(path)
        cfg = AFLocConfig.from_json(ck.config_from_official(hp, state))
        tok = load_tokenizer(text_encoder or cfg.text_encoder or presets.DEFAULT_TEXT_ENCODER)
        info["format"] = "official Lightning (afloc. prefix)"
    if text_mode:
        cfg.text_mode = text_mode
    model = AFLocModel(cfg)
    diff = shared_ck.load_into(model, state, str(path), strict=strict)
    info.update(random_init=False, key_diff={k: len(v) for k, v in diff.items()})
    return model, tok, info


def _levels(raw: Any) -> tuple[str, ...]:
    return parse_levels(raw if isinstance(raw, (str, list, tuple)) else str(raw))


@register_method("afloc")
class AFLocMethod(VisionLanguageMethod):
    """AFLoc (multi-level vision-language alignment); heatmaps from layer3 x report embedding."""

    capabilities = Capabilities(localize=True, classify=True, free_text=True, trainable=True)
    frame = LOCALIZE.frame
    recipes = {"localize": LOCALIZE, "classify": CLASSIFY}
    description = "AFLoc: annotation-free localization (word/sentence/report alignment)"
    model_attributes = ("model", "tokenizer", "text")
    class_text_kind = "report"
    option_specs: ClassVar[dict[str, Option]] = {
        **VisionLanguageMethod.option_specs,
        "preset": Option("tiny", "model of the random initialisation (no checkpoint)",
                         choices=presets.PRESETS),
        "levels": Option(None, "alignment levels of the random initialisation", _levels),
        "text_mode": Option(None, "faithful (official text quirks) or corrected; default: the "
                            "checkpoint's", choices=TEXT_MODES),
        "text_encoder": Option(None, "tokenizer / BERT folder or Hugging Face id (official "
                               "checkpoints and the paper preset)"),
        "strict": Option(True, "refuse a checkpoint whose keys differ from the model's",
                         parse_bool),
        "query": Option("report", "text vector the map dots layer3 with (report: official)",
                        choices=QUERY_VECTORS),
    }

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", seed: int = 0,
                 **options: Any):
        super().__init__(checkpoint, device, seed, **options)
        torch.manual_seed(seed)
        self.model, self.tokenizer, self.info = load_afloc(
            checkpoint, preset=self.option("preset"), text_mode=self.option("text_mode"),
            levels=self.option("levels"), text_encoder=self.option("text_encoder"),
            strict=self.option("strict"))
        self.model.to(device).eval()
        self.text = TextProcessor(self.tokenizer, self.model.cfg.text_mode,
                                  self.model.cfg.word_num)
        self.query = self.option("query")

    # -- the image-text hooks -------------------------------------------------------------
    def encode_images(self, x: torch.Tensor, purposes: frozenset[str]) -> dict[str, torch.Tensor]:
        out = self.model.img_encoder(x, need_global="classify" in purposes, need_words=False)
        return {k: v.float().cpu() for k, v in out.items()}

    def encode_texts(self, texts: list[str], kind: str) -> torch.Tensor:
        """Report embeddings [Q, D] of query texts (`kind`: see `query_vectors`)."""
        batch = self.text.encode_queries(texts).to(self.device)
        return query_vectors(self.model.text_encoder(batch), batch.word_index,
                             kind).float().cpu()

    def maps(self, features: dict[str, torch.Tensor], i: int,
             texts: list[str]) -> list[np.ndarray]:
        embeddings = self.text_embeddings(texts, self.query)
        return [heatmap_from_grid(g.numpy(), self.frame.size)
                for g in torch.einsum("dhw,qd->qhw", features["local"][i], embeddings)]

    def class_prompts(self, pathology: str) -> tuple[list[str], list[str]]:
        return cxr_prompts(pathology)

    def zero_shot(self, features: dict[str, torch.Tensor], pos: torch.Tensor,
                  neg: torch.Tensor) -> np.ndarray:
        return zero_shot_probs(features["global"], pos, neg)

    def check_queries(self, texts: list[str]) -> None:
        """Faithful cleaning drops one-token sentences (official), so "Pneumothorax" reaches the
        model as [CLS] [SEP]: its map is the same whatever was asked. Say so once per text."""
        for t in dict.fromkeys(texts):  # called before embedding: a cached text was seen
            if (self.query, t) not in self._text_cache and not clean_query(
                    t, self.text.mode).strip():
                warnings.warn(f"AFLoc query {t!r} is empty after the official text cleaning "
                              f"({self.text.mode} mode drops one-token sentences), so its map "
                              f"does not depend on the words; pass text_mode=corrected to keep "
                              f"them", stacklevel=4)

    def query_embeddings(self, texts: list[str], kind: str = "report") -> torch.Tensor:
        """[Q, D] query vectors of `texts` (cached per distinct text)."""
        return self.text_embeddings(texts, kind)

    def config(self) -> dict[str, Any]:
        cfg = self.model.cfg
        return {
            "preset": cfg.preset, "text_mode": cfg.text_mode, "levels": list(cfg.levels),
            "arch": cfg.arch, "input_size": cfg.input_size, "text_encoder": cfg.text_encoder,
            "text_size": presets.text_size(self.model.text_encoder.model.config),
            "checkpoint_format": self.info.get("format"),
            "random_init": bool(self.info.get("random_init")),
            "notice": self.info.get("notice"), "heatmap": f"layer3 . {self.query}, gaussian "
            f"sigma {SIGMA}, bilinear to {self.frame.size}",
            "weights_note": self.model.img_encoder.weights_note
            if self.info.get("random_init") else None,
        }

    # -- identity, training ---------------------------------------------------------------
    @classmethod
    def weights_identity(cls, options: dict[str, Any]) -> dict[str, Any] | None:
        """The tokenizer (and BERT) named by a folder or Hugging Face id, where one is read: an
        official checkpoint, the paper preset's random initialisation, or any given one."""
        return text_encoder_identity(options, presets.DEFAULT_TEXT_ENCODER)

    train_presets = presets.PRESETS
    train_option_specs: ClassVar[dict[str, Option]] = {
        "levels": Option("word,sentence,report", "alignment levels (the paper's ablation: any "
                         "non-empty subset of word,sentence,report)", _levels),
        "text_mode": Option("faithful", "reproduce the official text quirks, or fix them",
                            choices=TEXT_MODES),
        "text_encoder": Option(None, "BERT-family encoder (bert, distilbert, electra; WordPiece "
                               "tokenizer): local folder or offline Hugging Face id; paper preset "
                               "default Bio_ClinicalBERT; tiny preset: replaces the from-scratch "
                               "BERT"),
        "text_layers": Option(None, "tiny preset: layers of the from-scratch BERT (default 4, at "
                              "least 4)", int),
        "text_width": Option(None, "tiny preset: width of the from-scratch BERT (default 64, a "
                             "multiple of 32: heads of 32, feed-forward 2 x width)", int),
        "gamma": Option(0.9, "StepLR decay of the learning rate per epoch (the official value)",
                        float),
        "local_impl": Option("einsum", "how the local losses are computed (same values): "
                             "autograd over einsums, or one GEMM layout with a hand-written "
                             "backward (meant for GPUs)", choices=("einsum", "gemm")),
        "vocab_size": Option(2000, "tiny preset: size of the WordPiece vocabulary built from "
                             "the training reports", int),
        "paraphrases": Option(None, "sentence paraphrase table (JSON) of the fundus recipe: "
                              "training sentences found in it are randomly replaced by an "
                              "equivalent; default: the dataset folder's paraphrases.json "
                              "where there is one; 'none' turns it off", str),
    }

    @classmethod
    def train_task(cls, request: Any, data: Any) -> Any:
        from .train import make_task

        return make_task(request, data)


def query_vectors(text: dict[str, torch.Tensor], word_index: torch.Tensor,
                  kind: str = "report") -> torch.Tensor:
    """[Q, D]: the report embedding (official); the [CLS] word slot (`cls`); or the mean of the
    word slots between [CLS] and [SEP] (`words`), the report embedding where there are none
    (a query the cleaning emptied). [SEP] is the highest word slot a query's tokens reach."""
    if kind == "report":
        return text["report"]
    words = text["words"]  # [Q, D, T]
    if kind == "cls":
        return words[:, :, 0]
    if kind != "words":
        raise ValueError(f"unknown query vector {kind!r}")
    sep = word_index.max(1).values
    slots = torch.arange(words.shape[2], device=words.device)
    keep = (slots[None] >= 1) & (slots[None] < sep[:, None])
    n = keep.sum(1)
    mean = (words * keep[:, None].to(words.dtype)).sum(2) / n.clamp(min=1)[:, None]
    return torch.where((n > 0)[:, None], mean, text["report"])


def zero_shot_probs(img_global: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> np.ndarray:
    """P(positive) = softmax([img . pos_c, img . neg_c])[0] per class, raw dot products."""
    return softmax_pair(img_global @ pos.t(), img_global @ neg.t())
