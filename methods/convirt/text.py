"""ConVIRT's text side as ViLMedic trains and runs it: report cleaning, the caption, tokenisation.

ViLMedic (``vilmedic/datasets/base/TextDataset.py``, ``config/SELFSUP/convirt-mimic.yml``):

- the caption is the whole report, IMPRESSION then FINDINGS joined by a space (or whichever
  exists), ``make_datasets/mimic_cxr/make_mimic_cxr.py``'s ``impression_and_or_findings``; no
  sentence is sampled (the ConVIRT paper samples one; ViLMedic does not);
- ``processing: r2gen_clean_report`` (``text_clean="r2gen"``, the config since January 2022),
  then words split on whitespace and joined by one space; ``"none"`` keeps the text as written
  (the config the model zoo entry was added with, December 2021);
- the tokenizer runs with ``add_special_tokens=False`` (the dataset is a "src" sequence),
  ``padding="max_length"``, ``truncation=True``, ``max_length=128``: no ``<s>``/``</s>``, so the
  pooler reads the first word's token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

TEXT_CLEAN = ("r2gen", "none")
MAX_LENGTH = 128

# r2gen_clean_report's sentence filter deletes these characters. The official character class
# holds the range ':'..'[' (by accident, it reads like a list), which also takes '<=>@' and
# the capitals; capitals never reach it (the report is lower-cased first).
_R2GEN_DELETE = re.compile(r"[.,?;*!%^&_+()\[\]{}:<=>@A-Z]")
# r2gen_clean_report's chain of literal replacements, in order: (old, new, times)
_R2GEN_REPLACE = (
    ("\n", " ", 1), ("__", "_", 7), ("  ", " ", 6), ("..", ".", 8), ("1. ", "", 1),
    (". 2. ", ". ", 1), (". 3. ", ". ", 1), (". 4. ", ". ", 1), (". 5. ", ". ", 1),
    (" 2. ", ". ", 1), (" 3. ", ". ", 1), (" 4. ", ". ", 1), (" 5. ", ". ", 1),
)


def r2gen_clean(report: str) -> str:
    """R2Gen's report cleaning as ViLMedic applies it: each replacement applied as many times
    as the official chain does (a run of 2**8 dots is not fully collapsed, as there), lower
    case, split on ". ", per sentence quotes, slashes and the characters above deleted, then
    sentences joined by " . " and a final " ." ("" when nothing is left)."""
    text = report
    for old, new, times in _R2GEN_REPLACE:
        for _ in range(times):
            text = text.replace(old, new)
    sentences = [_r2gen_sentence(s) for s in text.strip().lower().split(". ")]
    if sentences == [""]:
        return ""
    return " . ".join(sentences) + " ."


def _r2gen_sentence(sentence: str) -> str:
    for ch in ('"', "/", "\\", "'"):
        sentence = sentence.replace(ch, "")
    return _R2GEN_DELETE.sub("", sentence.strip().lower())


def clean_text(text: str | None, mode: str = "r2gen") -> str:
    """A report or query as the model reads it: the cleaning, then words joined by one space."""
    if mode not in TEXT_CLEAN:
        raise ValueError(f"text cleaning must be one of {TEXT_CLEAN}, got {mode!r}")
    text = text or ""
    if mode == "r2gen":
        text = r2gen_clean(text.strip())
    return " ".join(text.split())


def report_caption(findings: str | None, impression: str | None,
                   report: str | None = None) -> str | None:
    """ViLMedic's caption: IMPRESSION then FINDINGS, each with its whitespace runs made one
    space, joined by a space (either alone where one is missing); the adapter's report where
    neither section is known (a dataset without sections)."""
    parts = [re.sub(r"\s+", " ", p) for p in (impression, findings) if p]
    parts = [p for p in parts if p]
    if parts:
        return " ".join(parts)
    return report if report and report.strip() else None


@dataclass
class TextBatch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    def to(self, device: Any) -> TextBatch:
        return TextBatch(self.input_ids.to(device, non_blocking=True),
                         self.attention_mask.to(device, non_blocking=True))

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


class Tokenize:
    """Cleaned texts -> token ids, as ViLMedic's collate does (no special tokens, padded to
    `max_length`)."""

    def __init__(self, tokenizer: Any, clean: str = "r2gen", max_length: int = MAX_LENGTH,
                 special_tokens: bool = False):
        if clean not in TEXT_CLEAN:
            raise ValueError(f"text cleaning must be one of {TEXT_CLEAN}, got {clean!r}")
        self.tokenizer, self.clean = tokenizer, clean
        self.max_length, self.special_tokens = max_length, special_tokens

    def __call__(self, texts: list[str], cleaned: bool = False) -> TextBatch:
        if not cleaned:
            texts = [clean_text(t, self.clean) for t in texts]
        enc = self.tokenizer(list(texts), add_special_tokens=self.special_tokens,
                             padding="max_length", truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return TextBatch(enc["input_ids"].long(), enc["attention_mask"].long())
