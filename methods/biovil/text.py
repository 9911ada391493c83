"""CXR-BERT's text input, as hi-ml-multimodal's ``TextInput.tokenize_input_prompts`` makes it.

- a prompt holding a special token other than ``[MASK]`` is refused (the official check: any
  of the tokenizer's special tokens as a substring of the joined prompts);
- trailing ``!``, ``?`` and ``.`` are stripped from each prompt (``rstrip("!?.")``);
- the tokenizer runs with special tokens ([CLS] ... [SEP]) and ``padding="longest"``; only
  ``input_ids`` and ``attention_mask`` reach the model; a batch longer than the model's
  ``max_position_embeddings`` is an error (``TextInferenceEngine``).

Training (the harness's) truncates reports at the config's ``max_length`` instead.

The tokenizer is a ``BertTokenizerFast`` built from the folder's ``vocab.txt`` (CXR-BERT's
``CXRBertTokenizer`` is a plain ``BertTokenizer``), with ``do_lower_case`` from its
``tokenizer_config.json`` (default true): no remote code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.errors import CheckpointError, UsageError


@dataclass
class TextBatch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    def to(self, device: Any) -> TextBatch:
        return TextBatch(self.input_ids.to(device, non_blocking=True),
                         self.attention_mask.to(device, non_blocking=True))

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def clean_prompt(prompt: str) -> str:
    """The official clean-up: trailing '!', '?' and '.' removed (nothing else)."""
    return prompt.rstrip("!?.")


def check_special_tokens(tokenizer: Any, prompts: list[str]) -> None:
    """The official check: no special token but [MASK] anywhere in the prompts."""
    special = [t for t in tokenizer.all_special_tokens if t != tokenizer.mask_token]
    joined = " ".join(prompts)
    found = [t for t in special if t in joined]
    if found:
        raise UsageError(f"BioViL: the text {joined[:80]!r} contains the special token "
                         f"{found[0]} (only [MASK] is allowed)")


class Tokenize:
    """Prompts -> token ids: the official clean-up and padding, or (training, `max_length`
    set) truncation at `max_length`."""

    def __init__(self, tokenizer: Any, max_positions: int, max_length: int | None = None):
        self.tokenizer, self.max_positions, self.max_length = tokenizer, max_positions, max_length

    def __call__(self, texts: list[str], official: bool = True) -> TextBatch:
        texts = list(texts)
        if official:
            check_special_tokens(self.tokenizer, texts)
            texts = [clean_prompt(t) for t in texts]
        kw: dict[str, Any] = {"padding": "longest"}
        if self.max_length is not None:
            kw.update(truncation=True, max_length=self.max_length)
        enc = self.tokenizer(texts, add_special_tokens=True, return_tensors="pt", **kw)
        ids = enc["input_ids"].long()
        if ids.shape[1] > self.max_positions:
            raise UsageError(f"BioViL: a text of {ids.shape[1]} tokens is longer than the "
                             f"model's {self.max_positions} positions")
        return TextBatch(ids, enc["attention_mask"].long())


def load_vocab_tokenizer(folder: str | Path) -> Any:
    """``BertTokenizerFast`` from a CXR-BERT folder's vocab.txt (and tokenizer_config.json)."""
    from transformers import BertTokenizerFast

    folder = Path(folder)
    vocab = folder / "vocab.txt"
    if not vocab.is_file():
        raise CheckpointError(f"{folder}: no vocab.txt (CXR-BERT's tokenizer vocabulary)")
    lower = True
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        try:
            lower = bool(json.loads(cfg.read_text()).get("do_lower_case", True))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{cfg}: not readable JSON ({type(exc).__name__})") from exc
    return BertTokenizerFast(vocab_file=str(vocab), do_lower_case=lower)
