"""Model presets and the text encoder / tokenizer sources.

``paper``: ResNet-50 (ImageNet weights from the local torchvision cache when present) and a
Hugging Face BERT (default ``emilyalsentzer/Bio_ClinicalBERT``) loaded offline from the user's
cache or a local folder; D = 768; tau 4/5/10; input 224 upsampled to 299.
``tiny``: the same code with a small ResNet (one BasicBlock per stage), a 4-layer BERT of
width 64 (so D = 64) and a WordPiece vocabulary built from the training reports with ``tokenizers``;
the model input stays 224 (no upsample to 299) to keep CPU training cheap, and the 1x1 local
embedders start at 0.1x their default init (``local_init_scale``). Why: the local attention's
first softmax (over a caption's words or sentences) takes raw dot products, which at the default
init of a from-scratch model already have a spread of 11-17, so each region starts almost
one-hot assigned to a random word or sentence and the gradient through that softmax is nearly
zero. Whether the maps then learned to localize in 10 CPU minutes came down to the seed (2 of 4);
at 0.1x the spread starts near 1.7 and the assignment is learned. The ``paper`` preset keeps the
official init: its encoders are pretrained, so the initial assignment is not random.
The tiny BERT also trains without dropout (BERT's default is 0.1 on hidden states and attention
probabilities; the ``paper`` preset keeps its checkpoint's). Ten epochs of 3,000 synthetic
reports underfit (validation loss tracks training loss), so the model needs no regularisation,
and dropout's noise fell on the from-scratch text side, whose report embedding the official
heatmap dots with the image. With it, 2 of 5 seeds' maps beat the ``center`` prior on the
full-size synthetic MS-CXR after 10 CPU minutes; without it, 4 of 5 (README, learning check).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bench.errors import CheckpointError

from .model import LEVELS, AFLocConfig

DEFAULT_TEXT_ENCODER = "emilyalsentzer/Bio_ClinicalBERT"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PRESETS = ("paper", "tiny")

TINY_BERT = {"vocab_size": 0, "hidden_size": 64, "num_hidden_layers": 4,
             "num_attention_heads": 2, "intermediate_size": 128,
             "max_position_embeddings": 128, "type_vocab_size": 2,
             "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
# BERT-base with Bio_ClinicalBERT's vocabulary size, for random-weight benchmarks
BERT_BASE = {"vocab_size": 28996, "hidden_size": 768, "num_hidden_layers": 12,
             "num_attention_heads": 12, "intermediate_size": 3072,
             "max_position_embeddings": 512, "type_vocab_size": 2}


def preset_config(preset: str, levels: tuple[str, ...] = LEVELS, text_mode: str = "faithful",
                  **overrides: Any) -> AFLocConfig:
    if preset == "paper":
        cfg = AFLocConfig(arch="resnet50", imagenet_weights=True, input_size=299,
                          bert=dict(BERT_BASE), text_encoder=DEFAULT_TEXT_ENCODER,
                          levels=levels, text_mode=text_mode, preset="paper")
    elif preset == "tiny":
        cfg = AFLocConfig(arch="small", small_widths=(16, 32, 64, 128), imagenet_weights=False,
                          input_size=224, bert=dict(TINY_BERT), text_encoder=None,
                          levels=levels, text_mode=text_mode, preset="tiny",
                          local_init_scale=0.1)
    else:
        raise ValueError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def build_wordpiece(texts: Iterable[str], vocab_size: int = 2000) -> Any:
    """A lower-casing BERT WordPiece tokenizer for `texts` (returns BertTokenizerFast).

    The vocabulary is chosen deterministically (the ``tokenizers`` trainer breaks frequency
    ties differently from run to run): the special tokens, every character and its "##"
    continuation, then whole words by descending count (ties alphabetical) up to
    `vocab_size`; rarer words fall back to WordPiece character pieces.
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    norm = normalizers.BertNormalizer(lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for t in texts:
        counts.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(t)))
    # "." always: it separates the sentences of every training caption (". " joins)
    chars = sorted({c for w in counts for c in w} | {"."})
    vocab: dict[str, int] = {}
    for tok in SPECIAL_TOKENS + chars + ["##" + c for c in chars]:
        vocab.setdefault(tok, len(vocab))
    for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size:
            break
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = norm
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece()
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return tokenizer_from_json(tok.to_str())


def tokenizer_from_json(text: str) -> Any:
    from tokenizers import Tokenizer
    from transformers import BertTokenizerFast

    return BertTokenizerFast(tokenizer_object=Tokenizer.from_str(text), unk_token="[UNK]",
                             sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
                             mask_token="[MASK]")


def tokenizer_to_json(tokenizer: Any) -> str:
    return tokenizer.backend_tokenizer.to_str()


def load_pretrained_text(source: str) -> tuple[Any, Any]:
    """(BertModel, tokenizer) from a local folder or the offline Hugging Face cache."""
    from transformers import AutoModel, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(source, local_files_only=True)
        bert = AutoModel.from_pretrained(source, local_files_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"text encoder {source!r} is not available offline: pass --text-encoder with a "
            f"local folder holding its config.json, weights and vocab, or put it in the "
            f"Hugging Face cache ({type(exc).__name__})") from exc
    if getattr(bert, "pooler", None) is None and hasattr(bert, "base_model"):
        bert = bert.base_model
    return bert, tok


def load_tokenizer(source: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"tokenizer {source!r} is not available offline: pass text_encoder=<local folder "
            f"with vocab.txt/tokenizer.json> ({type(exc).__name__})") from exc
