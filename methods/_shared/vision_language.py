"""The base class of the image-text methods (AFLoc, GLoRIA, BioViL, MedKLIP, ConVIRT, CheXzero).

They all encode images, encode texts, make a map from an image's features and a text embedding,
and score a pathology from the image against positive and negative prompts. The machinery
lives here once: batching, a cache of text embeddings per distinct (kind, text), one image
forward per batch where two purposes share a recipe (a protocol that asks for maps and then
for probabilities of the same images pays for one pass), and releasing the model on `close`.

An adapter provides five things:

    encode_images(x, purposes)        features of a batch of input tensors (on the CPU)
    encode_texts(texts, kind)         [Q, D] embeddings (on the CPU)
    maps(features, i, texts)          the maps of image i of the batch for Q query texts
                                      (`text_embeddings(texts, kind)` gives them, cached)
    class_prompts(pathology)          (positive prompts, negative prompts)
    zero_shot(features, pos, neg)     N x P probabilities from [P, D] class vectors

and may override `class_vectors` (default: the mean embedding of each prompt set, AFLoc's and
GLoRIA's rule) and `check_queries` (warn about a text the model cannot use).
"""

from __future__ import annotations

import gc
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from bench.errors import UsageError
from bench.methods.base import ZERO_SHOT, Method, Option
from bench.types import Capabilities, Query, Sample

SIGMA = 1.5  # the Gaussian of AFLoc's (and BioViL's) map, in grid cells


class VisionLanguageMethod(Method):
    capabilities = Capabilities(localize=True, classify=True, free_text=True)
    learning = ZERO_SHOT
    option_specs: ClassVar[dict[str, Option]] = {
        "checkpoint": Option(None, "weights file (the official release or bench train's)"),
        "batch_size": Option(32, "images per forward pass", int),
    }
    # attributes that hold the model; `close` drops them
    model_attributes: ClassVar[tuple[str, ...]] = ("model",)
    # the kind of text vector class prompts use (`encode_texts`)
    class_text_kind: str = "class"

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", seed: int = 0,
                 **options: Any):
        super().__init__(checkpoint, device, seed, **options)
        self.batch_size = int(self.option("batch_size"))
        self._text_cache: dict[tuple[str, str], torch.Tensor] = {}
        self._class_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._last_batch: tuple[Any, tuple[str, ...], dict[str, torch.Tensor]] | None = None

    # -- what an adapter provides -------------------------------------------------------
    def encode_images(self, x: torch.Tensor, purposes: frozenset[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def encode_texts(self, texts: list[str], kind: str) -> torch.Tensor:
        raise NotImplementedError

    def maps(self, features: dict[str, torch.Tensor], i: int,
             texts: list[str]) -> list[np.ndarray]:
        raise NotImplementedError

    def class_prompts(self, pathology: str) -> tuple[list[str], list[str]]:
        raise NotImplementedError

    def zero_shot(self, features: dict[str, torch.Tensor], pos: torch.Tensor,
                  neg: torch.Tensor) -> np.ndarray:
        raise NotImplementedError

    def check_queries(self, texts: list[str]) -> None:
        """Called with a batch's query texts before they are embedded (default: nothing)."""

    # -- shared machinery ---------------------------------------------------------------
    @torch.no_grad()
    def text_embeddings(self, texts: list[str], kind: str) -> torch.Tensor:
        """[Q, D] embeddings of `texts`, each distinct (kind, text) encoded once."""
        todo = sorted({t for t in texts if (kind, t) not in self._text_cache})
        for a in range(0, len(todo), self.batch_size):
            chunk = todo[a:a + self.batch_size]
            for t, e in zip(chunk, self.encode_texts(chunk, kind)):
                self._text_cache[kind, t] = e
        return (torch.stack([self._text_cache[kind, t] for t in texts]) if texts
                else torch.zeros(0))

    @torch.no_grad()
    def image_features(self, samples: list[Sample], purpose: str) -> dict[str, torch.Tensor]:
        """The features of `samples` for `purpose`; computed once for every purpose that shares
        the recipe, so maps and probabilities of the same batch come from one forward pass."""
        recipe = self.recipes[purpose]
        # the same Sample objects (the runner passes one batch to localize, then to classify)
        ids = tuple((s.id, id(s.image)) for s in samples)
        if self._last_batch is not None and self._last_batch[:2] == (recipe, ids):
            return self._last_batch[2]
        purposes = frozenset(p for p, r in self.recipes.items() if r == recipe)
        features = self.encode_images(recipe.tensor(samples).to(self.device), purposes)
        self._last_batch = (recipe, ids, features)
        return features

    def bind(self, dataset: Any, protocol: str) -> None:
        """A new run: no image features carried over from the last one."""
        self._last_batch = None

    def _check_open(self) -> None:
        if self.closed:
            raise UsageError(f"method '{self.name}' was closed; build a new one")

    def localize(self, samples: list[Sample], queries: list[list[Query]]) -> list[list[np.ndarray]]:
        self._check_open()
        if len(samples) != len(queries):
            raise UsageError("localize: one query list per sample")
        out: list[list[np.ndarray]] = []
        for a in range(0, len(samples), self.batch_size):
            batch, qs = samples[a:a + self.batch_size], queries[a:a + self.batch_size]
            features = self.image_features(batch, "localize")
            for i, ql in enumerate(qs):
                if not ql:
                    out.append([])
                    continue
                texts = [q.text for q in ql]
                self.check_queries(texts)
                out.append(self.maps(features, i, texts))
        return out

    def class_vectors(self, pathology: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(positive, negative) class vectors: the mean embedding of each prompt set."""
        pos, neg = self.class_prompts(pathology)
        return (self.text_embeddings(pos, self.class_text_kind).mean(0),
                self.text_embeddings(neg, self.class_text_kind).mean(0))

    def classify(self, samples: list[Sample], pathologies: list[str]) -> np.ndarray:
        self._check_open()
        for p in pathologies:
            if p not in self._class_cache:
                self._class_cache[p] = self.class_vectors(p)
        pos = torch.stack([self._class_cache[p][0] for p in pathologies])
        neg = torch.stack([self._class_cache[p][1] for p in pathologies])
        probs = [self.zero_shot(self.image_features(samples[a:a + self.batch_size], "classify"),
                                pos, neg)
                 for a in range(0, len(samples), self.batch_size)]
        return np.concatenate(probs, 0) if probs else np.zeros((0, len(pathologies)))

    def close(self) -> None:
        """Drop the model and every cache; the memory is free for the next method."""
        for attr in self.model_attributes:
            if hasattr(self, attr):
                setattr(self, attr, None)
        self._text_cache.clear()
        self._class_cache.clear()
        self._last_batch = None
        super().close()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def softmax_pair(pos: torch.Tensor, neg: torch.Tensor) -> np.ndarray:
    """P(positive) = softmax([pos, neg])[0] elementwise: the zero-shot rule of AFLoc (raw dot
    products) and CheXzero (cosines), from N x P positive and negative logits."""
    return torch.softmax(torch.stack([pos, neg], dim=2), dim=2)[..., 0].numpy()


def heatmap_from_grid(grid: np.ndarray, size: int = 224) -> np.ndarray:
    """AFLoc's map of a patch grid (``_get_similarity_map_from_embeddings``): Gaussian sigma 1.5
    on the raw grid (scipy, in grid units), then bilinear (align_corners=False) to size x size."""
    smooth = ndimage.gaussian_filter(grid.astype(np.float32), sigma=(SIGMA, SIGMA), order=0)
    t = torch.from_numpy(smooth)[None, None]
    return F.interpolate(t, size=(size, size), mode="bilinear",
                         align_corners=False)[0, 0].numpy()


def is_released_checkpoint(checkpoint: str | None) -> bool:
    """A checkpoint file that is not the harness's safetensors (a released pickle)."""
    from pathlib import Path

    from .checkpoints import is_safetensors

    return (checkpoint is not None and Path(checkpoint).is_file()
            and not is_safetensors(checkpoint))


def text_encoder_identity(options: dict[str, Any], default: str) -> dict[str, Any] | None:
    """For `Method.weights_identity`: the text encoder named by a folder or Hugging Face id
    wherever one is read, i.e. given, or `default` for a released checkpoint (which does not
    carry its tokenizer) and for the paper preset's random initialisation; None otherwise."""
    from .encoders import source_identity

    source = options.get("text_encoder")
    if source is None:
        ckpt = options.get("checkpoint")
        if not is_released_checkpoint(ckpt) and not (ckpt is None
                                                     and options.get("preset") == "paper"):
            return None
        source = default
    return {"text_encoder": source_identity(str(source))}
