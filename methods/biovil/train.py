"""`bench train biovil`: a BioViL-style image-text objective and the task the shared loop runs.

hi-ml publishes no pretraining code (hi-ml issue #894), so the objective is the harness's,
after the BioViL paper (Boecking et al. 2022): on the projected embeddings of the released
architecture,

- **global**: symmetric InfoNCE between the L2-normalised global image embedding (mean of the
  projected patches) and the projected [CLS] embedding, temperature ``tau`` (0.1);
- **local** (BioViL-L's addition, GLoRIA's local loss): every report token's last state through
  the same projection head against the projected patches (`bench.methods._shared.contrastive`
  ``local_similarity``, tau1 4, tau2 5, then cross-entropy both ways at tau3 10), weighted by
  ``local_weight`` (1.0; 0 trains the global loss alone). Tokens, not words: [CLS], [SEP] and
  padding are left out, subword pieces count one by one.

What BioViL's paper does that the harness does not: CXR-BERT's own text pretraining (its
vocabulary built from PubMed + MIMIC, MLM on PubMed/MIMIC notes/reports and the RSM
radiology-section-matching task) before the image-text stage; the MLM loss kept during the
image-text stage; its augmentations, batch size and schedule. ``paper`` starts the text side
from a given CXR-BERT instead (as BioViL starts from its own CXR-BERT), ``tiny`` from scratch.

Presets: ``paper`` AdamW lr 2e-5 (the harness's values: none are published in code), batch 32,
50 epochs, cosine decay per epoch; ``tiny`` AFLoc/ConVIRT tiny's budget: batch 16, lr 1e-3, 10
epochs, precise BatchNorm over 32 batches after each epoch, same optimiser and schedule.

Pairs: frontal images (shared preparation, MS-CXR held out on MIMIC-CXR); the text is the
report's FINDINGS then IMPRESSION (the adapter's report where it gives no sections); studies
left without text are counted as "no report text". Training images: a square pre-frame
(Resize(resize) + CenterCrop(resize), the official reader), a random ``crop`` square per item
from a generator seeded by (seed, epoch, index); validation images: the evaluation recipe.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from bench.errors import UsageError
from bench.imaging.recipes import to_tensor
from bench.methods._shared.contrastive import contrastive, local_similarity
from bench.methods._shared.encoders import (
    build_wordpiece,
    refuse_text_encoder_at_tiny,
    tokenizer_to_json,
)
from bench.train.data import ImagePairs, SplitLoaders, TrainingData
from bench.train.loop import Optimization, Scheduled, TrainTask, seed_everything
from bench.train.run import preset_settings

from . import checkpoint as ck
from . import presets
from .imaging import eval_recipe, random_crop, train_preframe
from .model import BioViLModel
from .text import TextBatch, Tokenize, load_vocab_tokenizer

PRESETS = {"paper": {"epochs": 50, "batch_size": 32, "lr": 2e-5, "bn_recalibration": 0,
                     "early_stopping": None},
           "tiny": {"epochs": 10, "batch_size": 16, "lr": 1e-3, "bn_recalibration": 32,
                    "early_stopping": None}}
WEIGHT_DECAY = 1e-4
TAU1, TAU2, TAU3 = 4.0, 5.0, 10.0


def report_text(findings: str | None, impression: str | None,
                report: str | None = None) -> str | None:
    """FINDINGS then IMPRESSION, whitespace runs made one space; the report without sections."""
    parts = [re.sub(r"\s+", " ", p).strip() for p in (findings, impression) if p]
    parts = [p for p in parts if p]
    if parts:
        return " ".join(parts)
    return " ".join(report.split()) if report and report.strip() else None


@dataclass
class ReportPairs:
    frames: np.ndarray
    index: np.ndarray
    texts: list[str]
    ids: list[str]
    skipped: dict[str, int]

    def frame(self, i: int) -> np.ndarray:
        return np.asarray(self.frames[self.index[i]])

    def __len__(self) -> int:
        return len(self.texts)


def report_pairs(pairs: ImagePairs) -> ReportPairs:
    skipped = Counter(pairs.skipped)
    keep, texts = [], []
    for i, report in enumerate(pairs.reports):
        sec = (pairs.sections[i] if pairs.sections else None) or {}
        text = report_text(sec.get("findings"), sec.get("impression"), report)
        if not text:
            skipped["no report text"] += 1
            continue
        keep.append(i)
        texts.append(text)
    return ReportPairs(pairs.frames, np.asarray(keep, dtype=np.int64), texts,
                       [pairs.ids[i] for i in keep], dict(skipped))


class PairDataset(Dataset):
    def __init__(self, pairs: ReportPairs, crop: int | None, seed: int = 1):
        self.pairs, self.crop, self.seed, self.epoch = pairs, crop, seed, 0

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[np.ndarray, str]:
        frame = self.pairs.frame(i)
        if self.crop is not None:
            frame = random_crop(frame, np.random.default_rng((self.seed, self.epoch, i)),
                                self.crop)
        return frame, self.pairs.texts[i]


class Collate:
    def __init__(self, tokenize: Tokenize):
        self.tokenize = tokenize

    def __call__(self, items: list[tuple[np.ndarray, str]]) -> tuple[torch.Tensor, TextBatch]:
        frames = np.stack([f for f, _ in items])
        return to_tensor(frames, "unit"), self.tokenize([t for _, t in items], official=False)


def token_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor,
               special_ids: list[int]) -> torch.Tensor:
    """[B, T] bool: real tokens that are not special ([CLS], [SEP], [PAD], ...)."""
    mask = attention_mask.bool()
    for sid in special_ids:
        mask &= input_ids != sid
    return mask


def biovil_loss(img_patch: torch.Tensor, txt_cls: torch.Tensor, txt_tokens: torch.Tensor,
                mask: torch.Tensor, tau: float = 0.1, local_weight: float = 1.0,
                gather: Any = None) -> dict[str, torch.Tensor]:
    """{"loss", "global", "local"}: img_patch [B, D, h, w] projected patches, txt_cls [B, D],
    txt_tokens [B, T, D] projected token states, mask [B, T] the tokens of the local loss.
    With ``gather`` (torchrun) the global loss scores against every rank's batch; the local
    loss stays within the rank's batch."""
    img = F.normalize(img_patch.mean(dim=(2, 3)), dim=1)
    txt = F.normalize(txt_cls, dim=1)
    if gather is None:
        all_txt, all_img, offset = txt, img, 0
    else:
        all_txt, offset = gather(txt)
        all_img, _ = gather(img)
    labels = torch.arange(offset, offset + img.shape[0], device=img.device)
    g = 0.5 * (F.cross_entropy(img @ all_txt.t() / tau, labels)
               + F.cross_entropy(txt @ all_img.t() / tau, labels))
    out = {"global": g.detach()}
    loss = g
    if local_weight:
        has = mask.any(1)
        words = txt_tokens.transpose(1, 2)  # [B, D, T]
        # a text without any token (empty after truncation) scores nothing: one dummy token
        safe = mask | (~has)[:, None] & (torch.arange(mask.shape[1], device=mask.device) == 0)
        sim = local_similarity(img_patch, words, safe, TAU1, TAU2)  # [B_img, B_text]
        i2t, t2i = contrastive(sim, TAU3)
        local = 0.5 * (i2t + t2i)
        loss = loss + local_weight * local
        out["local"] = local.detach()
    out["loss"] = loss
    return out


class BioViLTask(SplitLoaders, TrainTask):
    def __init__(self, model: BioViLModel, tokenizer: Any, train: ReportPairs,
                 val: ReportPairs | None, batch_size: int, lr: float, epochs: int,
                 seed: int = 1, num_workers: int = 0, info: dict[str, Any] | None = None):
        self.model, self.tokenizer = model, tokenizer
        cfg = model.cfg
        self.tokenize = Tokenize(tokenizer, int(model.text.config.max_position_embeddings),
                                 cfg.max_length)
        self.special_ids = sorted(set(tokenizer.all_special_ids))
        self.train_set = PairDataset(train, crop=cfg.crop, seed=seed)
        self.val_set = PairDataset(val, crop=None) if val is not None and len(val) else None
        self.bs, self.lr, self.epochs, self.seed = batch_size, lr, epochs, seed
        self.workers, self.info = num_workers, info or {}

    def configure_optimizers(self) -> Optimization:
        optim = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=WEIGHT_DECAY)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=max(self.epochs, 1))
        return Optimization([optim], [Scheduled(sched, "epoch")])

    def collate_fn(self) -> Any:
        return Collate(self.tokenize)

    def loss(self, model: torch.nn.Module, batch: Any, gather: Any) -> dict[str, torch.Tensor]:
        images, text = batch
        core = model.module if hasattr(model, "module") else model
        patch = core.image(images)
        cls, tokens = core.token_embeddings(text.input_ids, text.attention_mask)
        mask = token_mask(text.input_ids, text.attention_mask, self.special_ids)
        return biovil_loss(patch, cls, tokens, mask, core.cfg.tau, core.cfg.local_weight,
                           gather)

    def export(self, path: Path) -> None:
        ck.save_weights(path, self.model.state_dict(), self.model.cfg.to_json(),
                        tokenizer_to_json(self.tokenizer))

    def describe(self) -> dict[str, Any]:
        return self.info

    def data_line(self, seconds: float) -> str:
        n_val = len(self.val_set) if self.val_set is not None else 0
        val = self.info.get("val_split")
        return (f"pairs: train {len(self.train_set)}{f', {val} {n_val}' if n_val else ''}; "
                f"skipped {self.info.get('pairs', {}).get('skipped')}; prepared in "
                f"{seconds:.1f} s")


def make_task(req: Any, data: TrainingData) -> tuple[BioViLTask, dict[str, Any]]:
    refuse_text_encoder_at_tiny(req, "biovil")
    cfg = presets.preset_config(req.preset, local_weight=float(req.option("local_weight")))
    pre = train_preframe(cfg.resize)
    val_recipe = eval_recipe(cfg.resize, cfg.crop)
    train_pairs = report_pairs(data.pairs("train", pre))
    val_raw = data.pairs("val", val_recipe)
    val_pairs = report_pairs(val_raw) if val_raw is not None else None
    if len(train_pairs) == 0:
        raise UsageError(f"no usable training pairs in {req.root} ({train_pairs.skipped})")

    seed_everything(req.seed)
    if req.preset == "tiny":
        tokenizer = build_wordpiece(train_pairs.texts, vocab_size=req.option("vocab_size"))
        cfg.text_config["vocab_size"] = int(tokenizer.vocab_size)
        model = BioViLModel(cfg)
    else:
        source = req.option("text_encoder") or presets.DEFAULT_TEXT_ENCODER
        folder = ck.resolve_text_folder(source)
        cfg.text_config, cfg.text_encoder = ck.read_text_config(folder), source
        tokenizer = load_vocab_tokenizer(folder)
        model = BioViLModel(cfg)
        from bench.methods._shared import checkpoints as shared_ck

        shared_ck.load_into(model.text, ck.read_text_state(folder), str(folder), strict=True)
    if req.channels_last:
        model.image.encoder.use_channels_last()
    settings = {
        **preset_settings(req, PRESETS[req.preset]),
        "optimizer": {"AdamW": {"weight_decay": WEIGHT_DECAY}},
        "lr_decay": "CosineAnnealingLR over the epochs",
        "loss": {"global_tau": cfg.tau, "local_weight": cfg.local_weight,
                 "local": {"tau1": TAU1, "tau2": TAU2, "tau3": TAU3}},
    }
    info = {"model": cfg.to_json(), "image_weights": model.image.encoder.weights_note,
            "val_split": data.split("val"), "pre_frame": pre.describe(),
            "val_frame": val_recipe.describe(),
            "text": "FINDINGS then IMPRESSION (the adapter's report where it gives no sections)",
            "pairs": {"train": len(train_pairs), "val": len(val_pairs) if val_pairs else 0,
                      "skipped": train_pairs.skipped}}
    task = BioViLTask(model, tokenizer, train_pairs, val_pairs, settings["batch_size"],
                      settings["lr"], settings["epochs"], seed=req.seed,
                      num_workers=req.workers, info=info)
    return task, settings
