"""The ``gloria`` method: GLoRIA's released model with its official inference.

Images as ``process_img``: ``cv2.imread(path, 0)`` (a DICOM through GLoRIA's
``read_from_dicom``), letterbox to 256, CenterCrop 224, Normalize 0.5, upsampled to 299 in the
model; maps come back on the 224 crop and are carried to the image through it (the 16-px border
the crop removed is NaN, excluded from metrics). Queries and prompts as ``process_text``
(AFLoc's faithful cleaning is the same code) padded to 97 tokens.

Maps: GLoRIA has no official zero-shot localization. ``map=similarity`` (default) is the map
AFLoc's evaluation code makes from any GLoRIA-lineage model: the layer3 region embeddings dot the
query's report ("sentence") embedding, Gaussian sigma 1.5, bilinear to the frame. AFLoc's code
is a fork of GLoRIA's and applies to GLoRIA's modules unchanged, and the paper describes one
evaluation for every method, so this is the map its comparison most plausibly used.
``map=attention`` is GLoRIA's own spatial output, ``get_attn_maps``: the attention of the query's
word slots ([CLS] and its words) over the 19 x 19 regions (softmax over words, x tau1, softmax
over regions), averaged over those slots.

Zero-shot (``get_similarities``, ``zero_shot_classification``): per prompt, the cosine of the
global embeddings and the local similarity ``log max_w exp(5 cos(word, attended context))``
over the word slots ``[1 : cap_len + 1]`` (attention tau1 4.0), averaged; a class scores its best
prompt. ``cap_lens=faithful`` (default) keeps the official ``process_text`` quirk: cap_len counts
the prompt's *characters* (those not "["), so the slice runs past [SEP] into the zero padding;
``cap_lens=corrected`` takes the prompt's words. The official then z-scores each class over the
images (a per-class affine map: AUROC is the same, so scores are returned before it); the scores
are similarities, not probabilities. Prompts: `prompts.class_prompts`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from bench.errors import UsageError
from bench.imaging.geometry import Frame
from bench.imaging.recipes import Recipe
from bench.methods._shared import checkpoints as shared_ck
from bench.methods._shared.bert_text import TEXT_MODES, TextProcessor
from bench.methods._shared.encoders import (
    BERT_BASE,
    TINY_BERT,
    build_wordpiece,
    load_tokenizer,
    tokenizer_from_json,
)
from bench.methods._shared.vision_language import (
    SIGMA,
    VisionLanguageMethod,
    heatmap_from_grid,
    text_encoder_identity,
)
from bench.methods.base import Option, parse_bool
from bench.registry import register_method
from bench.types import Capabilities, Sample

from . import checkpoint as ck
from .model import GLoRIAConfig, GLoRIAModel, local_max_similarity, word_attention
from .prompts import class_prompts

DEFAULT_TEXT_ENCODER = "emilyalsentzer/Bio_ClinicalBERT"
INFERENCE = Recipe("read_from_dicom", Frame("letterbox", 224, pre=256), "half")
MAPS = ("similarity", "attention")
SIMILARITIES = ("both", "global", "local")
PROMPT_CHUNK = 8  # prompts scored at once against a batch of images (bounds memory)


def preset_config(preset: str, text_mode: str = "faithful") -> GLoRIAConfig:
    if preset == "paper":
        return GLoRIAConfig(arch="resnet50", imagenet_weights=True, input_size=299,
                            interm_channels=1024, bert=dict(BERT_BASE),
                            text_encoder=DEFAULT_TEXT_ENCODER, text_mode=text_mode,
                            preset="paper")
    if preset == "tiny":  # AFLoc's tiny encoders (and its start for the local embedder)
        return GLoRIAConfig(arch="small", imagenet_weights=False, input_size=224,
                            interm_channels=64, bert=dict(TINY_BERT), text_encoder=None,
                            text_mode=text_mode, preset="tiny", local_init_scale=0.1)
    raise ValueError(f"unknown preset {preset!r} (known: paper, tiny)")


def load_gloria(checkpoint: str | Path | None, preset: str = "tiny",
                text_encoder: str | None = None, strict: bool = True
                ) -> tuple[GLoRIAModel, Any, dict[str, Any]]:
    """(model, tokenizer, info) from the official Lightning checkpoint, our safetensors file,
    or (no checkpoint) a randomly initialised preset."""
    if checkpoint is None:
        cfg = preset_config(preset)
        if preset == "tiny":
            from bench.methods.afloc.prompts import cxr_prompts, prompt_data

            corpus = [p for c in prompt_data()["dictionary"] for p in cxr_prompts(c)[0]]
            tok = build_wordpiece(corpus, vocab_size=1000)
            cfg.bert["vocab_size"] = int(tok.vocab_size)
        else:
            tok = load_tokenizer(text_encoder or DEFAULT_TEXT_ENCODER)
        torch.manual_seed(0)
        return GLoRIAModel(cfg), tok, {"format": "none", "random_init": True,
                                       "notice": f"no checkpoint: {preset} preset with RANDOM "
                                                 f"weights"}
    path = Path(checkpoint)
    if shared_ck.file_format(path) == "safetensors":
        state, cfg_json, tok_json = ck.read_weights(path)
        cfg = GLoRIAConfig.from_json(cfg_json)
        tok = (tokenizer_from_json(tok_json) if tok_json
               else load_tokenizer(text_encoder or cfg.text_encoder))
        fmt = "afloc-bench safetensors"
    else:
        state, hp = ck.read_official(path)
        cfg = GLoRIAConfig.from_json(ck.config_from_official(hp, state))
        tok = load_tokenizer(text_encoder or cfg.text_encoder or DEFAULT_TEXT_ENCODER)
        fmt = "official Lightning (gloria. prefix)"
    model = GLoRIAModel(cfg)
    diff = shared_ck.load_into(model, state, str(path), strict=strict)
    return model, tok, {"format": fmt, "random_init": False,
                        "key_diff": {k: len(v) for k, v in diff.items()}}


def zero_shot_mask(raw: list[str], units: torch.Tensor, slots: int, mode: str) -> torch.Tensor:
    """[Q, T] word slots ``[1 : cap_len + 1]`` of each prompt: cap_len = the number of the raw
    prompt's characters that are not "[" (faithful: ``process_text``'s cap_lens), or its words
    (corrected)."""
    if mode == "faithful":
        caps = torch.tensor([len([ch for ch in t if not ch.startswith("[")]) for t in raw])
    else:
        caps = units.cpu()
    s = torch.arange(slots)
    return (s[None] >= 1) & (s[None] < (caps[:, None] + 1).clamp(max=slots))


@register_method("gloria")
class GLoRIAMethod(VisionLanguageMethod):
    """GLoRIA (global and local alignment of image regions and report words)."""

    capabilities = Capabilities(localize=True, classify=True, free_text=True, trainable=True)
    description = ("GLoRIA: global-local image-report alignment (maps: report x layer3 regions "
                   "as AFLoc's code makes them, or word attention)")
    frame = INFERENCE.frame
    recipes = {"localize": INFERENCE, "classify": INFERENCE}
    model_attributes = ("model", "tokenizer", "text")
    option_specs: ClassVar[dict[str, Option]] = {
        **VisionLanguageMethod.option_specs,
        "preset": Option("tiny", "model of the random initialisation (no checkpoint)",
                         choices=("paper", "tiny")),
        "text_encoder": Option(None, "tokenizer / BERT folder or Hugging Face id (the released "
                               "checkpoints and the paper preset)"),
        "strict": Option(True, "refuse a checkpoint whose keys differ from the model's",
                         parse_bool),
        "map": Option("similarity", "similarity (report x regions, AFLoc's code) or attention "
                      "(GLoRIA's word attention)", choices=MAPS),
        "similarity": Option("both", "zero-shot score: the mean of global and local "
                             "similarity (official), or one of them", choices=SIMILARITIES),
        "cap_lens": Option("faithful", "zero-shot word slots: the official character count, "
                           "or the prompt's words", choices=TEXT_MODES),
        "text_mode": Option(None, "query cleaning: faithful (official) or corrected; default "
                            "the checkpoint's", choices=TEXT_MODES),
    }

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", seed: int = 0,
                 **options: Any):
        super().__init__(checkpoint, device, seed, **options)
        torch.manual_seed(seed)
        self.model, self.tokenizer, self.info = load_gloria(
            checkpoint, self.option("preset"), self.option("text_encoder"),
            self.option("strict"))
        self.model.to(device).eval()
        mode = self.option("text_mode") or self.model.cfg.text_mode
        self.text = TextProcessor(self.tokenizer, mode, self.model.cfg.word_num)
        self.map_kind = self.option("map")

    # -- the image-text hooks -------------------------------------------------------------
    def encode_images(self, x: torch.Tensor, purposes: frozenset[str]) -> dict[str, torch.Tensor]:
        out = self.model.img_encoder(x, need_local=self.model.img_encoder.local_branch_runs)
        return {k: v.float().cpu() for k, v in out.items()}

    def _local(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        if "local" not in features:
            raise UsageError(self.model.img_encoder.local_branch_problem())
        return features["local"]

    def encode_texts(self, texts: list[str], kind: str) -> torch.Tensor:
        """Every text vector GLoRIA uses, cached at once: report [D], word slots [D, T], the
        mask of its attention slots [T] ([CLS] + words) and its number of words."""
        batch = self.text.encode_queries(texts).to(self.device)
        out = self.model.text_encoder(batch)
        units = (batch.word_index.max(1).values - 1).cpu()  # [SEP]'s slot - [CLS]
        parts = {"report": out["report"].float().cpu(), "words": out["words"].float().cpu(),
                 "attention": batch.word_mask.cpu(), "units": units}
        for name, values in parts.items():
            for t, v in zip(texts, values):
                self._text_cache[name, t] = v
        return parts[kind]

    def maps(self, features: dict[str, torch.Tensor], i: int,
             texts: list[str]) -> list[np.ndarray]:
        local = self._local(features)[i]  # [D, h, w]
        if self.map_kind == "similarity":
            report = self.text_embeddings(texts, "report")
            return [heatmap_from_grid(g.numpy(), self.frame.size)
                    for g in torch.einsum("dhw,qd->qhw", local, report)]
        words = self.text_embeddings(texts, "words")
        mask = self.text_embeddings(texts, "attention")
        regions = local.flatten(1)[None].expand(len(texts), -1, -1)
        attn = word_attention(regions, words, mask, self.model.cfg.tau1)  # [Q, T, R]
        mean = (attn * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True)
        return [m.reshape(local.shape[1:]).numpy() for m in mean]

    def classify(self, samples: list[Sample], pathologies: list[str]) -> np.ndarray:
        self._check_open()
        prompts = {p: class_prompts(p)[0] for p in pathologies}
        scores = []
        for a in range(0, len(samples), self.batch_size):
            features = self.image_features(samples[a:a + self.batch_size], "classify")
            scores.append(np.stack([self._class_score(features, prompts[p])
                                    for p in pathologies], 1))
        return np.concatenate(scores, 0) if scores else np.zeros((0, len(pathologies)))

    def _class_score(self, features: dict[str, torch.Tensor], prompts: list[str]) -> np.ndarray:
        """The best prompt's similarity per image (``similarities.max(axis=1)``)."""
        best = None
        kind = self.option("similarity")
        for a in range(0, len(prompts), PROMPT_CHUNK):
            chunk = prompts[a:a + PROMPT_CHUNK]
            glob = loc = None
            if kind in ("both", "global"):
                glob = _cosine(features["global"], self.text_embeddings(chunk, "report"))
            if kind in ("both", "local"):
                words = self.text_embeddings(chunk, "words")
                mask = zero_shot_mask(chunk, self.text_embeddings(chunk, "units"),
                                      words.shape[2], self.option("cap_lens"))
                loc = local_max_similarity(self._local(features).flatten(2), words, mask)
            sim = (loc + glob) / 2 if kind == "both" else (glob if kind == "global" else loc)
            top = sim.max(dim=1).values
            best = top if best is None else torch.maximum(best, top)
        return best.numpy()

    def config(self) -> dict[str, Any]:
        cfg = self.model.cfg
        heat = (f"layer3 . report, gaussian sigma {SIGMA}, bilinear to {self.frame.size} "
                f"(AFLoc's code; not GLoRIA's own)" if self.map_kind == "similarity"
                else "word attention over layer3 regions (get_attn_maps), mean over the words")
        return {"preset": cfg.preset, "arch": cfg.arch, "text_mode": self.text.mode,
                "text_encoder": cfg.text_encoder, "checkpoint_format": self.info.get("format"),
                "random_init": bool(self.info.get("random_init")),
                "notice": self.info.get("notice"), "heatmap": heat,
                "zero_shot": f"{self.option('similarity')} similarity, cap_lens "
                             f"{self.option('cap_lens')}, best prompt (not a probability)",
                "map": self.map_kind}

    # -- identity, training ---------------------------------------------------------------
    @classmethod
    def weights_identity(cls, options: dict[str, Any]) -> dict[str, Any] | None:
        """The tokenizer named by a folder or Hugging Face id, where one is read."""
        return text_encoder_identity(options, DEFAULT_TEXT_ENCODER)

    train_presets = ("paper", "tiny")
    train_option_specs: ClassVar[dict[str, Option]] = {
        "text_encoder": Option(None, "BERT id or local folder (paper preset; default "
                               "Bio_ClinicalBERT, offline)"),
        "text_mode": Option("faithful", "reproduce the official text quirks, or fix them",
                            choices=TEXT_MODES),
        "local_impl": Option("einsum", "how the local loss is computed (same values): einsum "
                             "or gemm (AFLoc's GEMM layout, meant for GPUs)",
                             choices=("einsum", "gemm")),
        "vocab_size": Option(2000, "tiny preset: size of the WordPiece vocabulary built from "
                             "the training reports", int),
        "early_stopping": Option(None, "stop after this many epochs without a lower "
                                 "validation loss (paper: 10, as the official run)", int),
        "full_report": Option(None, "captions of every sentence joined by a space (the "
                              "config's full_report: true; the tiny preset's default) instead "
                              "of one random sentence (the released recipe; paper's)",
                              parse_bool),
    }

    @classmethod
    def train_task(cls, request: Any, data: Any) -> Any:
        from .train import make_task

        return make_task(request, data)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sklearn's ``cosine_similarity``: rows scaled to unit norm (a zero row stays zero)."""
    an = a.norm(dim=1, keepdim=True)
    bn = b.norm(dim=1, keepdim=True)
    return (a / torch.where(an == 0, 1.0, an)) @ (b / torch.where(bn == 0, 1.0, bn)).t()


def normalize_columns(scores: np.ndarray) -> np.ndarray:
    """``utils.normalize(method="norm")``, what ``zero_shot_classification`` applies to the class
    scores of all the images it is given (more than one): each class's column z-scored (numpy
    std, ddof 0). Affine per class, so it changes no AUROC; it matters for an argmax decision
    across classes, and only over a whole test set (not per batch)."""
    return (scores - scores.mean(axis=0)) / scores.std(axis=0)
