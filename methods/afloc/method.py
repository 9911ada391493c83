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
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from bench.errors import CheckpointError, UsageError
from bench.registry import register_method
from bench.types import Capabilities, Query, Sample

from ..base import Method
from . import checkpoint as ck
from . import presets
from .imaging import (
    CLASSIFY_FRAME,
    LOCALIZE_FRAME,
    classify_uint8,
    frame_uint8,
    localize_uint8,
    to_tensor,
)
from .model import AFLocConfig, AFLocModel, parse_levels
from .prompts import cxr_prompts, prompt_data
from .text import TextProcessor, clean_query

SIGMA = 1.5
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
            tok = presets.build_wordpiece(corpus, vocab_size=1000)
            info["tokenizer"] = "WordPiece built from the CXR prompt dictionary"
        else:
            tok = presets.load_tokenizer(text_encoder or cfg.text_encoder)
        cfg.bert["vocab_size"] = int(tok.vocab_size if preset == "tiny" else
                                     cfg.bert["vocab_size"])
        torch.manual_seed(0)
        model = AFLocModel(cfg)
        info.update(format="none", random_init=True,
                    notice=f"no checkpoint: {preset} preset with RANDOM weights")
        return model, tok, info
    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if ck.is_safetensors(path):
        state, cfg_json, tok_json = ck.read_weights(path)
        cfg = AFLocConfig.from_json(cfg_json)
        tok = (presets.tokenizer_from_json(tok_json) if tok_json else
               presets.load_tokenizer(text_encoder or cfg.text_encoder))
        info["format"] = "afloc-bench safetensors"
    else:
        state, hp = ck.read_official(path)
        cfg = AFLocConfig.from_json(ck.config_from_official(hp, state))
        tok = presets.load_tokenizer(text_encoder or cfg.text_encoder or
                                     presets.DEFAULT_TEXT_ENCODER)
        info["format"] = "official Lightning (afloc. prefix)"
    if text_mode:
        cfg.text_mode = text_mode
    model = AFLocModel(cfg)
    diff = ck.load_into(model, state, str(path), strict=strict)
    info.update(random_init=False, key_diff={k: len(v) for k, v in diff.items()})
    return model, tok, info


@register_method("afloc")
class AFLocMethod(Method):
    """AFLoc (multi-level vision-language alignment); heatmaps from layer3 x report embedding."""

    capabilities = Capabilities(localize=True, classify=True, free_text=True, trainable=True)
    frame = LOCALIZE_FRAME
    description = "AFLoc: annotation-free localization (word/sentence/report alignment)"

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", seed: int = 0,
                 **options: Any):
        super().__init__(checkpoint, device, seed, **options)
        torch.manual_seed(seed)
        self.model, self.tokenizer, self.info = load_afloc(
            checkpoint, preset=options.get("preset", "tiny"),
            text_mode=options.get("text_mode"), levels=options.get("levels"),
            text_encoder=options.get("text_encoder"),
            strict=str(options.get("strict", "true")).lower() not in ("0", "false", "no"))
        self.model.to(device).eval()
        self.text = TextProcessor(self.tokenizer, self.model.cfg.text_mode,
                                  self.model.cfg.word_num)
        self.batch_size = int(options.get("batch_size", 32))
        self.query = str(options.get("query", "report"))
        if self.query not in QUERY_VECTORS:
            raise UsageError(f"afloc: query={self.query!r} is not one of "
                             f"{', '.join(QUERY_VECTORS)} (report is the official map)")
        self._query_cache: dict[tuple[str, str], torch.Tensor] = {}
        self._class_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # -- embeddings -------------------------------------------------------------------------
    @torch.no_grad()
    def query_embeddings(self, texts: list[str], kind: str = "report") -> torch.Tensor:
        """Report embeddings [Q, D] of query texts (`kind`: see `query_vectors`), each
        distinct text encoded once."""
        todo = sorted({t for t in texts if (kind, t) not in self._query_cache})
        for a in range(0, len(todo), self.batch_size):
            chunk = todo[a:a + self.batch_size]
            batch = self.text.encode_queries(chunk).to(self.device)
            rep = query_vectors(self.model.text_encoder(batch), batch.word_index,
                                kind).float().cpu()
            for t, e in zip(chunk, rep):
                self._query_cache[kind, t] = e
        return (torch.stack([self._query_cache[kind, t] for t in texts]) if texts
                else torch.zeros(0))

    def _warn_empty(self, texts: list[str]) -> None:
        """Faithful cleaning drops one-token sentences (official), so "Pneumothorax" reaches the
        model as [CLS] [SEP]: its map is the same whatever was asked. Say so once per text."""
        for t in dict.fromkeys(texts):  # called before embedding: a cached text was seen
            if (self.query, t) not in self._query_cache and not clean_query(
                    t, self.text.mode).strip():
                warnings.warn(f"AFLoc query {t!r} is empty after the official text cleaning "
                              f"({self.text.mode} mode drops one-token sentences), so its map "
                              f"does not depend on the words; pass text_mode=corrected to keep "
                              f"them", stacklevel=3)

    def _images(self, samples: list[Sample], frame) -> torch.Tensor:
        read = classify_uint8 if frame == CLASSIFY_FRAME else localize_uint8
        pixels = [read(s.image, s.meta.get("path")) for s in samples]
        return to_tensor([frame_uint8(p, frame) for p in pixels]).to(self.device)

    # -- Method API -------------------------------------------------------------------------
    @torch.no_grad()
    def localize(self, samples: list[Sample], queries: list[list[Query]]) -> list[list[np.ndarray]]:
        if len(samples) != len(queries):
            raise UsageError("localize: one query list per sample")
        out: list[list[np.ndarray]] = []
        size = self.frame.size
        for a in range(0, len(samples), self.batch_size):
            ss, qs = samples[a:a + self.batch_size], queries[a:a + self.batch_size]
            local = self.model.img_encoder(self._images(ss, self.frame), need_global=False,
                                           need_words=False)["local"].float().cpu()
            for loc, ql in zip(local, qs):
                if not ql:
                    out.append([])
                    continue
                texts = [q.text for q in ql]
                self._warn_empty(texts)
                emb = self.query_embeddings(texts, self.query)
                out.append([heatmap_from_grid(g.numpy(), size)
                            for g in torch.einsum("dhw,qd->qhw", loc, emb)])
        return out

    @torch.no_grad()
    def classify(self, samples: list[Sample], pathologies: list[str]) -> np.ndarray:
        pos = torch.stack([self._class_vectors(p)[0] for p in pathologies])
        neg = torch.stack([self._class_vectors(p)[1] for p in pathologies])
        probs = []
        for a in range(0, len(samples), self.batch_size):
            g = self.model.img_encoder(self._images(samples[a:a + self.batch_size],
                                                    CLASSIFY_FRAME),
                                       need_words=False)["global"].float().cpu()
            probs.append(zero_shot_probs(g, pos, neg))
        return np.concatenate(probs, 0) if probs else np.zeros((0, len(pathologies)))

    def _class_vectors(self, pathology: str) -> tuple[torch.Tensor, torch.Tensor]:
        if pathology not in self._class_cache:
            p, n = cxr_prompts(pathology)
            self._class_cache[pathology] = (self.query_embeddings(p).mean(0),
                                            self.query_embeddings(n).mean(0))
        return self._class_cache[pathology]

    def config(self) -> dict[str, Any]:
        cfg = self.model.cfg
        return {
            "preset": cfg.preset, "text_mode": cfg.text_mode, "levels": list(cfg.levels),
            "arch": cfg.arch, "input_size": cfg.input_size, "text_encoder": cfg.text_encoder,
            "checkpoint_format": self.info.get("format"),
            "random_init": bool(self.info.get("random_init")),
            "notice": self.info.get("notice"), "heatmap": f"layer3 . {self.query}, gaussian "
            f"sigma {SIGMA}, bilinear to {self.frame.size}",
            "weights_note": self.model.img_encoder.weights_note
            if self.info.get("random_init") else None,
        }


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


def heatmap_from_grid(grid: np.ndarray, size: int = 224) -> np.ndarray:
    """Gaussian sigma 1.5 on the raw grid, then bilinear (align_corners=False) to size x size."""
    smooth = ndimage.gaussian_filter(grid.astype(np.float32), sigma=(SIGMA, SIGMA), order=0)
    t = torch.from_numpy(smooth)[None, None]
    return F.interpolate(t, size=(size, size), mode="bilinear",
                         align_corners=False)[0, 0].numpy()


def zero_shot_probs(img_global: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> np.ndarray:
    """P(positive) = softmax([img . pos_c, img . neg_c])[0] per class, raw dot products."""
    logits = torch.stack([img_global @ pos.t(), img_global @ neg.t()], dim=2)
    return torch.softmax(logits, dim=2)[..., 0].numpy()
