"""The ``medklip`` method: MedKLIP's zero-shot classification and grounding maps.

MedKLIP (Wu et al. 2023) decodes 75 entity queries (Bio_ClinicalBERT ``[CLS]`` embeddings of
the official descriptions, `queries`) against 14 x 14 ResNet-50 patch features; per query, a
classifier says absent / present.

- **Zero-shot score**: ``softmax(classifier(out))[..., 1]`` of the pathology's query (the
  official CXR14 test).
- **Grounding map**: the official RSNA test's: the mean of the 4 decoder layers'
  cross-attention of the query, 14 x 14, each cell repeated 16 x 16 (block upsampling, no
  smoothing or normalisation), returned on the model's 224 x 224 frame (Resize((224, 224)),
  aspect ignored); the protocols carry it back to the image bilinearly.
- **Which query**: a harness pathology maps to its MedKLIP query (`names.PATHOLOGY_TO_QUERY`:
  Pneumonia -> pneumonia, Pleural Effusion -> effusion, Lung Opacity -> opacity, CXR14's
  Fibrosis -> tail_abnorm_obs, Pleural Thickening -> thicken, ...) when the query is the
  dataset's category prompt. A free-text phrase (MS-CXR) and a pathology without a MedKLIP
  query (COVID-19, fundus lesions) go in as a **new query**: the text through the text encoder
  (``[CLS]``, 64 tokens), ``disease_embedding_layer``, decoded beside the 75 (each new query
  sees the 75 and itself; `model.extra_query_mask`), as the MedKLIP paper describes for unseen
  diseases (the official code has no such path). Option ``queries=text`` sends every query
  through the text encoder.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from bench.errors import CheckpointError, UsageError
from bench.methods._shared import checkpoints as shared_ck
from bench.methods._shared.encoders import (
    build_wordpiece,
    load_pretrained_text,
    source_identity,
    tokenizer_from_json,
)
from bench.methods._shared.vision_language import VisionLanguageMethod, is_released_checkpoint
from bench.methods.base import Option, fingerprint_path, parse_bool
from bench.registry import register_method
from bench.types import Capabilities, Query, Sample

from . import checkpoint as ck
from . import presets, queries
from .imaging import EVAL
from .model import MedKLIPConfig, MedKLIPModel
from .names import OBSERVATIONS, query_of

DESCRIPTION = ("MedKLIP: knowledge-enhanced entity queries decoded against image patches; "
               "grounding = mean decoder cross-attention (official)")
MAP_NOTE = ("official RSNA grounding map: mean of the 4 decoder layers' cross-attention of the "
            "query, 14x14 blocks repeated 16x on Resize((224, 224)); free text and unseen "
            "classes go in as new queries through the text encoder (the paper's route)")
QUERY_MODES = ("auto", "text")


class TextSide:
    """The text encoder that embeds new queries, loaded on first use."""

    def __init__(self, source: str | None, model: Any = None, tokenizer: Any = None,
                 max_length: int = queries.MAX_LENGTH):
        self.source, self.model, self.tokenizer, self.max_length = (source, model, tokenizer,
                                                                    max_length)

    def load(self) -> None:
        if self.model is None:
            if self.source is None:
                raise CheckpointError("MedKLIP: no text encoder to embed new queries")
            self.model, self.tokenizer = load_pretrained_text(self.source)
            self.model.eval()

    def embed(self, texts: list[str]) -> torch.Tensor:
        self.load()
        return queries.embed_texts(self.model, self.tokenizer, texts, self.max_length)


def _descriptions(path: str | None, what: str) -> tuple[list[str], str]:
    if path is None:
        raise CheckpointError(
            f"{what} needs MedKLIP's official descriptions: pass --method-arg "
            f"descriptions=PATH/TO/'observation explanation.json' (from your clone of "
            f"MediaBrain-SJTU/MedKLIP; the harness does not ship them)")
    return queries.load_descriptions(path), str(path)


def load_medklip(checkpoint: str | None, preset: str = "tiny", text_encoder: str | None = None,
                 descriptions: str | None = None
                 ) -> tuple[MedKLIPModel, torch.Tensor, TextSide, dict[str, Any]]:
    """(model, query book [75, T], text side, info) from the official ``.pth``, our
    safetensors file, or (no checkpoint) a randomly initialised preset."""
    if checkpoint is None:
        return _random_init(preset, text_encoder, descriptions)
    path = Path(checkpoint)
    if shared_ck.file_format(path) == "safetensors":
        state, book, text_state, cfg_json, tok_json = ck.read_weights(path)
        cfg = MedKLIPConfig.from_json(cfg_json)
        if text_state:
            from transformers import BertConfig, BertModel

            text_model = BertModel(BertConfig.from_dict(dict(cfg.text_config)),
                                   add_pooling_layer=False)
            shared_ck.load_into(text_model, text_state, f"{path} (text encoder)", strict=True)
            text = TextSide(None, text_model.eval(), tokenizer_from_json(tok_json or ""),
                            cfg.max_length)
        else:
            text = TextSide(text_encoder or cfg.text_encoder, max_length=cfg.max_length)
        info: dict[str, Any] = {"format": "afloc-bench safetensors",
                                "query_book": "the checkpoint's",
                                "descriptions": cfg.descriptions}
    else:
        state = ck.read_official(path)
        cfg = MedKLIPConfig(preset="official")
        source = text_encoder or presets.DEFAULT_TEXT_ENCODER
        cfg.text_encoder = source
        texts, where = _descriptions(descriptions, f"released checkpoint {path}")
        text = TextSide(source, max_length=cfg.max_length)
        book, info = queries.cached_book(path, source_identity(source), texts, text.embed)
        info.update(format="official MedKLIP .pth ('model', module. prefix)",
                    descriptions=where,
                    descriptions_sha256=queries.descriptions_hash(texts))
    model = MedKLIPModel(cfg)
    diff = shared_ck.load_into(model, state, str(path), strict=True)
    _check_book(book, cfg, str(path))
    info.update(random_init=False, key_diff={k: len(v) for k, v in diff.items()})
    return model, book, text, info


def _check_book(book: torch.Tensor, cfg: MedKLIPConfig, source: str) -> None:
    if tuple(book.shape) != (cfg.num_queries, cfg.text_dim):
        raise CheckpointError(f"{source}: query book of shape {tuple(book.shape)}, expected "
                              f"({cfg.num_queries}, {cfg.text_dim})")


def _random_init(preset: str, text_encoder: str | None, descriptions: str | None,
                 ) -> tuple[MedKLIPModel, torch.Tensor, TextSide, dict[str, Any]]:
    cfg = presets.preset_config(preset)
    torch.manual_seed(0)
    info: dict[str, Any] = {}
    if preset == "tiny":
        texts = queries.synthetic_descriptions()
        tok = build_wordpiece(texts + queries.position_texts(), vocab_size=1000)
        cfg.text_config["vocab_size"] = int(tok.vocab_size)
        from transformers import BertConfig, BertModel

        text = TextSide(None, BertModel(BertConfig.from_dict(dict(cfg.text_config)),
                                        add_pooling_layer=False).eval(), tok, cfg.max_length)
        info["descriptions"] = "the harness's synthetic descriptions"
    else:
        if descriptions:
            texts, info["descriptions"] = _descriptions(descriptions, "the paper preset")
        else:
            texts = queries.synthetic_descriptions()
            info["descriptions"] = "the harness's synthetic descriptions"
        cfg.text_encoder = text_encoder or cfg.text_encoder
        text = TextSide(cfg.text_encoder, max_length=cfg.max_length)
        text.load()
        cfg.text_dim = int(text.model.config.hidden_size)
    model = MedKLIPModel(cfg)
    book = text.embed(texts)
    info.update(format="none", random_init=True,
                notice=f"no checkpoint: {preset} preset with RANDOM weights")
    return model, book, text, info


@register_method("medklip")
class MedKLIPMethod(VisionLanguageMethod):
    """MedKLIP (entity queries + decoder cross-attention); official scores and maps."""

    capabilities = Capabilities(localize=True, classify=True, free_text=True, trainable=True)
    frame = EVAL.frame
    recipes = {"localize": EVAL, "classify": EVAL}
    description = DESCRIPTION
    model_attributes = ("model", "book", "text")
    option_specs: ClassVar[dict[str, Option]] = {
        **VisionLanguageMethod.option_specs,
        "preset": Option("tiny", "model of the random initialisation (no checkpoint)",
                         choices=presets.PRESETS),
        "text_encoder": Option(None, "Bio_ClinicalBERT folder or Hugging Face id (offline) "
                               "for the query book and new queries (default "
                               f"{presets.DEFAULT_TEXT_ENCODER})"),
        "descriptions": Option(None, "the official 'observation explanation.json' (from your "
                               "MedKLIP clone); required with a released checkpoint"),
        "queries": Option("auto", "auto: a category prompt uses its pathology's MedKLIP query, "
                          "free text a new query; text: every query is a new query",
                          choices=QUERY_MODES),
    }

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", seed: int = 0,
                 **options: Any):
        super().__init__(checkpoint, device, seed, **options)
        torch.manual_seed(seed)
        self.model, self.book, self.text, self.info = load_medklip(
            checkpoint, preset=self.option("preset"), text_encoder=self.option("text_encoder"),
            descriptions=self.option("descriptions"))
        self.model.to(device).eval()
        self.book = self.book.float().to(device)
        self._dataset: Any = None

    def bind(self, dataset: Any, protocol: str) -> None:
        super().bind(dataset, protocol)
        self._dataset = dataset

    # -- queries ----------------------------------------------------------------------------
    def _is_category(self, q: Query) -> bool:
        ds = self._dataset
        if ds is not None and hasattr(ds, "prompt"):
            try:
                finding = types.SimpleNamespace(pathology=q.pathology, phrase=None, meta={})
                return ds.prompt(finding, "simple") == q.text
            except Exception:
                pass
        return q.text.strip().lower() in (q.pathology.strip().lower(),
                                          (query_of(q.pathology) or "").replace("_", " "))

    def resolve(self, pathology: str, text: str | None = None) -> tuple[int | None, str]:
        """(index among the 75, or None for a new query; the new query's text)."""
        if self.option("queries") == "text":
            return None, text if text is not None else pathology
        if text is None or self._is_category(Query("", pathology, text)):
            name = query_of(pathology)
            if name is not None:
                return OBSERVATIONS.index(name), ""
        return None, text if text is not None else pathology

    def encode_texts(self, texts: list[str], kind: str) -> torch.Tensor:
        return self.text.embed(texts)

    def encode_images(self, x: torch.Tensor, purposes: frozenset[str]) -> dict[str, torch.Tensor]:
        return {"patches": self.model.patches(x)}

    @torch.no_grad()
    def _decode(self, patches: torch.Tensor, resolved: list[tuple[int | None, str]]
                ) -> tuple[torch.Tensor, list[torch.Tensor], list[int]]:
        """Decoder output and attention for the 75 plus the batch's new queries; the row of
        each resolved query."""
        new = sorted({t for i, t in resolved if i is None})
        book = self.book
        if new:
            book = torch.cat([book, self.text_embeddings(new, "query").to(book)], 0)
        rows = [i if i is not None else len(self.book) + new.index(t) for i, t in resolved]
        out, weights = self.model.decode(patches, book, n_base=len(self.book))
        return out, weights, rows

    # -- the method's outputs ---------------------------------------------------------------
    @torch.no_grad()
    def localize(self, samples: list[Sample], queries_: list[list[Query]]
                 ) -> list[list[np.ndarray]]:
        self._check_open()
        if len(samples) != len(queries_):
            raise UsageError("localize: one query list per sample")
        out: list[list[np.ndarray]] = []
        for a in range(0, len(samples), self.batch_size):
            batch, qs = samples[a:a + self.batch_size], queries_[a:a + self.batch_size]
            patches = self.image_features(batch, "localize")["patches"]
            resolved = [[self.resolve(q.pathology, q.text) for q in ql] for ql in qs]
            flat = [r for rl in resolved for r in rl]
            if not flat:
                out.extend([] for _ in qs)
                continue
            _, weights, rows = self._decode(patches, flat)
            att = torch.stack(weights[-4:], 0).mean(0)  # [B, Q, N]
            g = int(round(att.shape[-1] ** 0.5))
            scale = EVAL.frame.size // g
            k = 0
            for i, rl in enumerate(resolved):
                maps = []
                for _ in rl:
                    m = att[i, rows[k]].reshape(g, g).float().cpu().numpy()
                    maps.append(np.repeat(np.repeat(m, scale, 0), scale, 1).astype(np.float32))
                    k += 1
                out.append(maps)
        return out

    @torch.no_grad()
    def classify(self, samples: list[Sample], pathologies: list[str]) -> np.ndarray:
        self._check_open()
        resolved = [self.resolve(p, None) for p in pathologies]
        probs = []
        for a in range(0, len(samples), self.batch_size):
            patches = self.image_features(samples[a:a + self.batch_size], "classify")["patches"]
            out, _, rows = self._decode(patches, resolved)
            p = torch.softmax(self.model.logits(out).float(), dim=-1)[..., 1]
            probs.append(p[:, rows].cpu().numpy().astype(np.float64))
        return np.concatenate(probs, 0) if probs else np.zeros((0, len(pathologies)))

    def config(self) -> dict[str, Any]:
        cfg = self.model.cfg
        return {
            "preset": cfg.preset, "arch": cfg.arch, "d_model": cfg.d_model,
            "layers": cfg.layers, "heads": cfg.heads, "text_encoder": cfg.text_encoder,
            "max_length": cfg.max_length, "queries": self.option("queries"),
            "descriptions": self.info.get("descriptions"),
            "descriptions_sha256": self.info.get("descriptions_sha256"),
            "query_book": self.info.get("query_book"),
            "checkpoint_format": self.info.get("format"),
            "random_init": bool(self.info.get("random_init")),
            "notice": self.info.get("notice"), "heatmap": MAP_NOTE,
            "zero_shot": "softmax(classifier(decoder output))[..., 1] of the pathology's query "
                         "(official); an unmapped pathology or free text is a new query "
                         "through the text encoder (the paper's route for unseen classes)",
        }

    @classmethod
    def weights_identity(cls, options: dict[str, Any]) -> dict[str, Any] | None:
        """The text encoder (released checkpoint, paper preset, or given) and the descriptions
        file, both read beside the checkpoint."""
        out: dict[str, Any] = {}
        ckpt = options.get("checkpoint")
        source = options.get("text_encoder")
        if source is None and (is_released_checkpoint(ckpt)
                               or (ckpt is None and options.get("preset") == "paper")):
            source = presets.DEFAULT_TEXT_ENCODER
        if source is not None:
            out["text_encoder"] = source_identity(str(source))
        desc = options.get("descriptions")
        if desc is not None:
            out["descriptions"] = fingerprint_path(desc)
        return out or None

    # -- training ---------------------------------------------------------------------------
    train_presets = presets.PRESETS
    train_option_specs: ClassVar[dict[str, Option]] = {
        "text_encoder": Option(None, "Bio_ClinicalBERT id or local folder (paper preset; "
                               f"default {presets.DEFAULT_TEXT_ENCODER}, offline)"),
        "descriptions": Option(None, "paper preset: the official 'observation "
                               "explanation.json' (default: the harness's synthetic ones)"),
        "triplets": Option(None, "official preprocessed triplets for MIMIC-CXR: "
                           "'TRAIN.json,VAL.json,LABELS.npy' (rad_graph_metric_*.json and "
                           "landmark_observation_adj_mtx.npy); default: the synthetic "
                           "world's triplets read from its reports"),
        "vocab_size": Option(2000, "tiny preset: size of the WordPiece vocabulary built from "
                             "the training reports", int),
        "hflip": Option(True, "RandomHorizontalFlip of the training images (official)",
                        parse_bool),
    }

    @classmethod
    def train_task(cls, request: Any, data: Any) -> Any:
        from .train import make_task

        return make_task(request, data)
