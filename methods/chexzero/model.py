"""CheXzero's model: OpenAI's CLIP, built by open_clip, and what the harness reads from it.

The released checkpoints are ``state_dict``s of OpenAI-CLIP ViT-B/32 (``clip.load("ViT-B/32")``
then training; 302 keys). open_clip builds that module as **``ViT-B-32-quickgelu``**: the same
keys and shapes, and OpenAI's QuickGELU activation. Its plain ``ViT-B-32`` has the same keys and
shapes too, so it loads the same file without a word, but with nn.GELU: other outputs. The
harness therefore builds only ``OFFICIAL_ARCH`` and checks every built model's MLP activations
(`check_quickgelu`), so a GELU model is refused whatever built it.

Presets (`PRESETS`): ``paper`` is that ViT-B/32 (embed 512; vision 12 x 768, patch 32, 224 px;
text 12 x 512, 8 heads, context 77, vocabulary 49408); ``tiny`` is the same architecture family
made small (`TINY`: a 4-layer ViT of width 64, patch 32 at 224 so the grid stays 7 x 7, and a
4-layer text transformer of width 64, embed 64), with QuickGELU and OpenAI's BPE vocabulary, so
its state dict has the 302-key layout's names (fewer blocks).

Features (`image_features`): OpenAI's ``encode_image`` is ``ln_post(x[:, 0]) @ proj`` after the
transformer. The harness runs the same layers once and also keeps the patch tokens through
``ln_post`` and ``proj`` (the map adaptation: `bench.methods.chexzero.method`), reshaped to the
7 x 7 grid.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from bench.errors import CheckpointError

OFFICIAL_ARCH = "ViT-B-32-quickgelu"
CONTEXT_LENGTH = 77
PRESETS = ("paper", "tiny")
# the tiny preset: open_clip.CLIP(embed_dim, vision_cfg, text_cfg, quick_gelu=True)
TINY: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"layers": 4, "width": 64, "head_width": 32, "patch_size": 32,
                   "image_size": 224},
    "text_cfg": {"context_length": CONTEXT_LENGTH, "vocab_size": 49408, "width": 64,
                 "heads": 2, "layers": 4},
}


class _NoPretrainedNotice(logging.Filter):
    """open_clip logs "No pretrained weights loaded" for every model it builds without weights;
    the harness loads them itself right after."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextmanager
def _quiet_open_clip():
    root, flt = logging.getLogger(), _NoPretrainedNotice()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def build(arch: dict[str, Any] | str) -> torch.nn.Module:
    """An open_clip CLIP: ``OFFICIAL_ARCH`` (the name), or a small config (`TINY`'s shape),
    always with QuickGELU, random weights, fp32."""
    import open_clip

    if arch == OFFICIAL_ARCH:
        with _quiet_open_clip():
            model = open_clip.create_model(OFFICIAL_ARCH, pretrained=None, device="cpu")
    elif isinstance(arch, dict):
        from open_clip.model import CLIPTextCfg, CLIPVisionCfg

        model = open_clip.CLIP(int(arch["embed_dim"]), CLIPVisionCfg(**arch["vision_cfg"]),
                               CLIPTextCfg(**arch["text_cfg"]), quick_gelu=True)
    else:
        raise CheckpointError(f"CheXzero is built as open_clip's {OFFICIAL_ARCH} (OpenAI's "
                              f"QuickGELU), not {arch!r}: plain 'ViT-B-32' uses nn.GELU and "
                              f"loads the same file silently wrong")
    check_quickgelu(model)
    return model.float()


def check_quickgelu(model: torch.nn.Module) -> None:
    """Every transformer MLP of `model` uses QuickGELU (OpenAI CLIP's activation), else an error."""
    from open_clip.transformer import QuickGELU

    acts = [(name, m) for name, m in model.named_modules() if name.endswith("mlp.gelu")]
    wrong = [name for name, m in acts if not isinstance(m, QuickGELU)]
    if not acts or wrong:
        raise CheckpointError(f"model activations are not OpenAI CLIP's QuickGELU "
                              f"({wrong[0] if wrong else 'no transformer MLP found'}): CheXzero's "
                              f"weights must run in open_clip's {OFFICIAL_ARCH}, never the plain "
                              f"ViT-B-32 (GELU)")
    v = model.visual
    if getattr(v, "attn_pool", None) is not None or getattr(v, "final_ln_after_pool", False) \
            or getattr(v, "pool_type", "tok") != "tok":
        raise CheckpointError("not OpenAI CLIP's vision tower (class-token pooling after ln_post)")


def arch_of(preset: str) -> dict[str, Any] | str:
    if preset == "paper":
        return OFFICIAL_ARCH
    if preset == "tiny":
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY.items()}
    raise ValueError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")


def image_features(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(global [N, D], patches [N, g, g, D]), both unnormalised: the global one is
    ``encode_image``'s (class token through ``ln_post`` and ``proj``), the patches are the other
    tokens through the same ``ln_post`` and ``proj`` (the harness's map adaptation)."""
    v = model.visual
    tokens = v.ln_post(v.transformer(v._embeds(x)))
    glob, patches = tokens[:, 0] @ v.proj, tokens[:, 1:] @ v.proj
    n, hw, d = patches.shape
    g = int(round(hw ** 0.5))
    return glob, patches.reshape(n, g, g, d)


def tokenizer(context_length: int = CONTEXT_LENGTH) -> Any:
    """OpenAI CLIP's BPE tokenizer as open_clip ships it (its vocabulary file is in the package):
    lower-cased, ``<|startoftext|> ... <|endoftext|>``, zero-padded to `context_length`; a longer
    text is cut with ``<|endoftext|>`` as its last token (CheXzero's ``preprocess_text``)."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)


def unit(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """x / |x| along `dim` (CheXzero divides by the norm, unclamped)."""
    return x / x.norm(dim=dim, keepdim=True)


def clip_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor,
              gather: Any = None) -> dict[str, torch.Tensor]:
    """CLIP's loss as CheXzero's ``train_batch`` computes it from ``model(images, texts)``:
    L2-normalised features, logits = `scale` (``exp(logit_scale)``, learnt, not clamped) x
    cosine, cross-entropy of the image rows and of the text rows against the diagonal, averaged.

    ``gather`` (optional, ``torchrun``): each rank scores its rows against every rank's."""
    img, txt = unit(image), unit(text)
    if gather is None:
        per_image, per_text, offset = scale * img @ txt.t(), scale * txt @ img.t(), 0
    else:
        all_txt, offset = gather(txt)
        all_img, _ = gather(img)
        per_image, per_text = scale * img @ all_txt.t(), scale * txt @ all_img.t()
    labels = torch.arange(offset, offset + img.shape[0], device=img.device)
    loss_img = F.cross_entropy(per_image, labels)
    loss_txt = F.cross_entropy(per_text, labels)
    return {"loss": (loss_img + loss_txt) / 2, "image_to_text": loss_img.detach(),
            "text_to_image": loss_txt.detach(), "logit_scale": scale.detach()}
