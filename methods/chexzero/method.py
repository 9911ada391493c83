"""The ``chexzero`` method: CheXzero's zero-shot classification, and (the harness's adaptation)
heatmaps.

CheXzero (Tiu et al. 2022) fine-tunes OpenAI's CLIP ViT-B/32 on MIMIC-CXR impressions. Here, as
in its ``zero_shot.py``:

- **Zero-shot classification**: for each label, the template pair ``("{}", "no {}")`` filled
  with the label as given (the harness's pathology name; the tokenizer lower-cases it). Each
  text embedding is L2-normalised, averaged over its templates (one each) and re-normalised; the
  image embedding is L2-normalised; the logit is the **raw cosine** (no ``logit_scale``) and
  P(positive) = exp(c+) / (exp(c+) + exp(c-)). "No Finding" becomes "no No Finding", as
  officially (kept; the official AUC for it is known to be poor).
- **Ensemble**: several checkpoints (a folder, or paths; `checkpoint.checkpoint_paths`) are run
  in ``sorted`` order and their probabilities averaged, as ``ensemble_models`` does.
- **Localization map (not official; the harness's adaptation)**: CheXzero has no localization
  or CAM code. The map is the cosine between the query's text embedding and each ViT patch token
  taken through ``ln_post`` and ``proj`` (the layers the class token takes to the embedding),
  on the 7 x 7 grid of the 224 input, which covers the whole ``pil_letterbox 320`` frame; for an
  ensemble, the members' maps are averaged. The protocols carry it back bilinearly.

Texts longer than 77 tokens are cut with ``<|endoftext|>`` last, as CheXzero's training does
(its ``zero_shot.py`` calls ``clip.tokenize``, which raises instead).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from bench.errors import CheckpointError
from bench.methods._shared import checkpoints as shared_ck
from bench.methods._shared.vision_language import VisionLanguageMethod, softmax_pair
from bench.methods.base import Option, fingerprint_path
from bench.registry import register_method
from bench.types import Capabilities

from . import checkpoint as ck
from .imaging import EVAL
from .model import (
    CONTEXT_LENGTH,
    OFFICIAL_ARCH,
    PRESETS,
    arch_of,
    build,
    image_features,
    tokenizer,
    unit,
)

DESCRIPTION = ("CheXzero: OpenAI CLIP ViT-B/32 trained on MIMIC-CXR impressions (open_clip "
               "ViT-B-32-quickgelu; checkpoint ensembles averaged); maps are the harness's "
               "adaptation (patch tokens x text), not official")
MAP_NOTE = ("not official (CheXzero has no localization): the harness's adaptation, the cosine "
            "of the text embedding with each ViT patch token through ln_post and proj (7 x 7 "
            "grid at 224 over the 320 zero-padded frame); an ensemble's maps are averaged")
TEMPLATES = ("{}", "no {}")


def load_member(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """One model from our safetensors file or a released CheXzero state dict, loaded strictly."""
    path = Path(path)
    if shared_ck.is_harness_file(path):
        state, cfg = ck.read_harness(path)
        arch, preset, fmt = cfg.get("arch"), cfg.get("preset"), "afloc-bench safetensors"
    else:
        state = ck.read_official(path)
        arch, preset, fmt = OFFICIAL_ARCH, "official", "CheXzero state dict (OpenAI CLIP)"
    dtypes = ck.dtype_counts(state)
    model = build(arch)
    shared_ck.load_into(model, state, str(path), strict=True)
    return model.eval(), {"file": path.name, "format": fmt, "preset": preset,
                          "arch": arch if isinstance(arch, str) else "small open_clip CLIP",
                          "keys": len(state), "dtypes": dtypes}


def load_chexzero(checkpoint: Any, preset: str = "tiny", seed: int = 0,
                  ) -> tuple[list[torch.nn.Module], dict[str, Any]]:
    """(models in the official ensemble order, info); no checkpoint: one random `preset` model."""
    paths = ck.checkpoint_paths(checkpoint)
    if not paths:
        torch.manual_seed(seed)
        model = build(arch_of(preset)).eval()
        return [model], {"random_init": True, "members": [{"preset": preset}],
                         "notice": f"no checkpoint: {preset} preset with RANDOM weights"}
    models, members = [], []
    for p in paths:
        m, info = load_member(p)
        models.append(m)
        members.append(info)
    dims = {int(m.text_projection.shape[1]) for m in models}
    if len(dims) > 1:
        raise CheckpointError(f"ensemble members of different embedding sizes "
                                        f"{sorted(dims)}: {', '.join(map(str, paths))}")
    return models, {"random_init": False, "members": members}


@register_method("chexzero")
class CheXzeroMethod(VisionLanguageMethod):
    """CheXzero (CLIP ViT-B/32 on chest X-rays); maps are the harness's adaptation (patch tokens
    through ln_post + proj, cosine with the text), not an official CheXzero output."""

    capabilities = Capabilities(localize=True, classify=True, free_text=True, trainable=True)
    frame = EVAL.frame
    recipes = {"localize": EVAL, "classify": EVAL}
    description = DESCRIPTION
    model_attributes = ("models", "tokenizer")
    option_specs: ClassVar[dict[str, Option]] = {
        **VisionLanguageMethod.option_specs,
        "checkpoint": Option(None, "a CheXzero .pt (OpenAI-CLIP ViT-B/32 state dict), a folder "
                             "of them or several paths joined by commas (an ensemble: mean of "
                             "probabilities and of maps), or bench train's .safetensors"),
        "preset": Option("tiny", "model of the random initialisation (no checkpoint)",
                         choices=PRESETS),
    }

    def __init__(self, checkpoint: Any = None, device: str = "cpu", seed: int = 0,
                 **options: Any):
        if isinstance(checkpoint, (list, tuple)):
            checkpoint = ",".join(map(str, checkpoint))
        super().__init__(checkpoint, device, seed, **options)
        self.models, self.info = load_chexzero(checkpoint, self.option("preset"), seed)
        for m in self.models:
            m.to(device)
        self.tokenizer = tokenizer(CONTEXT_LENGTH)

    # -- the image-text hooks -------------------------------------------------------------
    def encode_images(self, x: torch.Tensor, purposes: frozenset[str]) -> dict[str, torch.Tensor]:
        """{"global": [N, M, D], "local": [N, M, g, g, D]}, L2-normalised, M ensemble members."""
        glob, local = [], []
        for m in self.models:
            g, p = image_features(m, x)
            glob.append(unit(g.float()).cpu())
            local.append(unit(p.float()).cpu())
        return {"global": torch.stack(glob, 1), "local": torch.stack(local, 1)}

    def encode_texts(self, texts: list[str], kind: str) -> torch.Tensor:
        """[Q, M, D]: each member's L2-normalised ``encode_text`` of the texts as given."""
        tokens = self.tokenizer(texts).to(self.device)
        return torch.stack([unit(m.encode_text(tokens).float()).cpu() for m in self.models], 1)

    def class_prompts(self, pathology: str) -> tuple[list[str], list[str]]:
        return [TEMPLATES[0].format(pathology)], [TEMPLATES[1].format(pathology)]

    def class_vectors(self, pathology: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Per member, the normalised embeddings averaged over the templates, re-normalised."""
        pos, neg = self.class_prompts(pathology)
        return (unit(self.text_embeddings(pos, self.class_text_kind).mean(0)),
                unit(self.text_embeddings(neg, self.class_text_kind).mean(0)))

    def zero_shot(self, features: dict[str, torch.Tensor], pos: torch.Tensor,
                  neg: torch.Tensor) -> np.ndarray:
        return ensemble_probs(features["global"], pos, neg)

    def maps(self, features: dict[str, torch.Tensor], i: int,
             texts: list[str]) -> list[np.ndarray]:
        emb = self.text_embeddings(texts, "query")  # [Q, M, D]
        return list(ensemble_maps(features["local"][i], emb).numpy().astype(np.float32))

    def config(self) -> dict[str, Any]:
        return {
            "members": self.info.get("members"), "n_members": len(self.models or []),
            "random_init": bool(self.info.get("random_init")), "notice": self.info.get("notice"),
            "templates": list(TEMPLATES), "context_length": CONTEXT_LENGTH,
            "tokenizer": "OpenAI CLIP BPE (open_clip SimpleTokenizer)",
            "zero_shot": "softmax(cos(img, '{}'), cos(img, 'no {}')) on raw cosines (no "
                         "logit_scale), mean over the sorted ensemble",
            "heatmap": MAP_NOTE,
        }

    # -- identity, training ---------------------------------------------------------------
    @classmethod
    def weights_identity(cls, options: dict[str, Any]) -> dict[str, Any] | None:
        """An ensemble (a folder, or several paths) counts by each member's content; a single
        file is hashed by the runner."""
        value = options.get("checkpoint")
        if value is None or (isinstance(value, str) and "," not in value
                             and Path(value).is_file()):
            return None
        try:
            paths = ck.checkpoint_paths(value)
        except CheckpointError:
            return None
        return {"ensemble": [[p.name, fingerprint_path(p)] for p in paths]}

    train_presets = PRESETS
    train_option_specs: ClassVar[dict[str, Option]] = {
        "init": Option(None, "paper preset: OpenAI CLIP ViT-B/32 weights to start from (a "
                       "state dict .pt/.safetensors, e.g. open_clip's ViT-B-32-quickgelu "
                       "'openai' file), as CheXzero's clip.load('ViT-B/32')"),
        "optimizer": Option(None, "sgd (momentum, CheXzero's run_train.py default), adamw "
                            "(its --optimizer adam) or clip (OpenAI CLIP's AdamW: betas 0.9/0.98,"
                            " eps 1e-6, weight decay 0.2, 50 warm-up steps); default: sgd for "
                            "paper, clip for tiny", choices=("sgd", "adamw", "clip")),
        "momentum": Option(0.9, "SGD momentum (run_train.py: 0.9)", float),
        "missing_impression": Option("official", "text of a report without an IMPRESSION "
                                     "section: official ('NO IMPRESSION', as data_process.py "
                                     "writes), report (the whole report) or skip",
                                     choices=("official", "report", "skip")),
    }

    @classmethod
    def train_task(cls, request: Any, data: Any) -> Any:
        from .train import make_task

        return make_task(request, data)


def ensemble_probs(img: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> np.ndarray:
    """[N, P] mean over members of softmax(cos(img, pos), cos(img, neg)): `img` [N, M, D],
    `pos` / `neg` [P, M, D], all L2-normalised."""
    cos_pos = torch.einsum("nmd,pmd->mnp", img, pos)
    cos_neg = torch.einsum("nmd,pmd->mnp", img, neg)
    probs = [softmax_pair(cos_pos[m], cos_neg[m]) for m in range(img.shape[1])]
    return np.mean(probs, axis=0)


def ensemble_maps(local: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """[Q, g, g] mean over members of the patch-text cosines: `local` [M, g, g, D], `text`
    [Q, M, D], both L2-normalised."""
    return torch.einsum("mhwd,qmd->qmhw", local, text).mean(1)
