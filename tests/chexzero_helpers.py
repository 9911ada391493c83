"""CheXzero test fixtures built locally: OpenAI-CLIP state dicts in the released files' layout
and dtypes (random weights; nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch

# OpenAI's clip.model.convert_weights makes these fp16: the weights and biases of every Conv and
# Linear, nn.MultiheadAttention's in_proj_weight / in_proj_bias, and the `text_projection` and
# `proj` parameters; everything else (LayerNorms, embeddings, logit_scale) stays fp32.
_HALF_SUFFIXES = ("attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
                  "attn.out_proj.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                  "mlp.c_proj.weight", "mlp.c_proj.bias")
_HALF_KEYS = ("visual.conv1.weight", "visual.proj", "text_projection")


def openai_dtypes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict as ``clip.load("ViT-B/32")`` on a GPU holds it (convert_weights applied)."""
    return {k: (v.detach().half() if k in _HALF_KEYS or k.endswith(_HALF_SUFFIXES)
                else v.detach().float()).clone() for k, v in state.items()}


def small_clip(seed: int = 0, quick_gelu: bool = True, embed_dim: int = 32):
    """A small open_clip CLIP with OpenAI's key layout (2 blocks per tower, 7 x 7 grid)."""
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    model = open_clip.CLIP(embed_dim,
                           CLIPVisionCfg(layers=2, width=32, head_width=16, patch_size=32,
                                         image_size=224),
                           CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2,
                                       layers=2),
                           quick_gelu=quick_gelu)
    with torch.no_grad():  # non-trivial LayerNorms and projections
        for name, p in model.named_parameters():
            if "ln" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def small_config() -> dict:
    return {"embed_dim": 32,
            "vision_cfg": {"layers": 2, "width": 32, "head_width": 16, "patch_size": 32,
                           "image_size": 224},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                         "layers": 2}}


def save_small(path: Path, seed: int = 0) -> torch.nn.Module:
    """A harness safetensors checkpoint of `small_clip(seed)`; returns the model."""
    from bench.methods.chexzero import checkpoint as ck

    model = small_clip(seed)
    ck.save_weights(path, model.state_dict(), {"arch": small_config(), "preset": "tiny",
                                               "context_length": 77})
    return model
