"""The GLoRIA lineage's text pipeline (GLoRIA, AFLoc): report cleaning, caption augmentation,
tokenisation, the layout that turns BERT tokens into word, sentence and report units, and the
BERT text encoder both releases share.

Two modes, chosen explicitly and recorded in every config:

- ``faithful`` reproduces the official code (AFLoc@940e3d7 ``pretraining_dataset.py`` and
  ``text_model.py``, which keep GLoRIA's ``create_path_2_sent_mapping``, ``process_text`` and
  ``aggregate_tokens``) including its quirks: the "max word count" test (``captions_per_image=5``
  compared with ``==``) that drops every sentence after the running word count hits exactly 5;
  the ``[0-9]+\\.`` splitter that eats decimals ("4.5 cm" -> "", "5 cm"); single-token query
  sentences dropped; and word-level caption lengths counting "." separator tokens while an
  ``[UNK]`` word shortens the span (``cap_len = #units not starting with "[" + 1``).
- ``corrected`` keeps every sentence, keeps decimals ("4.5"), keeps one-word query sentences,
  takes all words between [CLS] and [SEP] (``[UNK]`` included) and leaves the "." separators
  out of the word-level loss. Sentence membership comes from character offsets, not from "."
  tokens, so a decimal point never splits a sentence.

The layout is computed once per caption on the CPU (in the data loader) as index arrays, so
the encoder aggregates words/sentences on the device with two scatter-adds instead of the
official per-caption Python loops. Sums are linear, so summing the last 4 BERT layers first
and aggregating afterwards equals the official aggregate-then-sum up to float rounding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .encoders import sum_into_words, sum_last_layers, word_layout

TEXT_MODES = ("faithful", "corrected")
WORD_NUM = 97  # data.text.word_num
MAX_WORD_NUM = 5  # data.text.captions_per_image, misused as a word-count cutoff (== test)

_FAITHFUL_SPLIT = re.compile(r"[0-9]+\.")
# corrected: an enumeration marker ("1." to "99.", then space or end) where a list item can
# start: at the start, or after a line break or a sentence's ".", ":" or ";" (and spaces). A
# number that ends a sentence ("stable since 2010.") is a word, not a marker.
_ENUM = re.compile(r"(?:^|(?<=[.:;\n]))(\s*)[0-9]{1,2}\.(?=\s|$)")
# corrected: a period that is not a decimal point (digit on both sides)
_PERIOD = re.compile(r"(?<![0-9])\.|\.(?![0-9])")
_WORD = re.compile(r"\w+")  # nltk RegexpTokenizer(r"\w+") == re.findall
_WORD_DECIMAL = re.compile(r"[0-9]+\.[0-9]+|\w+")


def _check_mode(mode: str) -> None:
    if mode not in TEXT_MODES:
        raise ValueError(f"text mode must be one of {TEXT_MODES}, got {mode!r}")


def split_pieces(text: str, mode: str) -> list[str]:
    """Raw sentence pieces of a report (before word tokenisation)."""
    _check_mode(mode)
    if mode == "faithful":
        points = _FAITHFUL_SPLIT.split(text.replace("\n", " "))
        return [s for p in points for s in p.split(".")]
    # a marker becomes a sentence break (the "." split below), its spaces kept
    text = _ENUM.sub(lambda m: m.group(1) + ".", text).replace("\n", " ")
    return _PERIOD.split(text)


def _words(piece: str, mode: str) -> tuple[int, list[str]]:
    """(number of regex tokens, ASCII-filtered non-empty tokens) of one lower-cased piece."""
    piece = piece.replace("\ufffd\ufffd", " ")
    pattern = _WORD if mode == "faithful" else _WORD_DECIMAL
    tokens = pattern.findall(piece.lower())
    kept = [t.encode("ascii", "ignore").decode("ascii") for t in tokens]
    return len(tokens), [t for t in kept if t]


def clean_report(report: str | None, mode: str = "faithful",
                 max_word_num: int = MAX_WORD_NUM) -> list[str]:
    """The training sentences of one report (``create_path_2_sent_mapping``).

    Faithful: pieces with <= 1 regex token are dropped *before* the ASCII filter (so an
    all-non-ASCII piece can survive as an empty sentence), and the loop stops after the
    sentence at which the running word count equals ``max_word_num`` exactly.
    An empty list means the study is removed from training (``to_remove``).
    """
    _check_mode(mode)
    if not isinstance(report, str) or not report:
        return []
    sentences: list[str] = []
    count = 0
    for piece in split_pieces(report, mode):
        if len(piece) == 0:
            continue
        n_tokens, kept = _words(piece, mode)
        if mode == "faithful":
            if n_tokens <= 1:
                continue
        elif len(kept) <= 1:
            continue
        sentences.append(" ".join(kept))
        count += len(kept)
        if mode == "faithful" and count == max_word_num:
            break
    return sentences


def clean_query(text: str, mode: str = "faithful") -> str:
    """A free-text query as the official ``process_text`` prepares it: sentences joined by " ".

    Faithful drops one-token sentences, so a one-word query ("Pneumothorax") becomes empty;
    corrected keeps them.
    """
    _check_mode(mode)
    sentences = []
    for piece in split_pieces(text, mode):
        n_tokens, kept = _words(piece, mode)
        # faithful: one-token sentences go (an all-non-ASCII one stays, empty); corrected:
        # only empty ones
        too_short = n_tokens <= 1 if mode == "faithful" else not kept
        if too_short:
            continue
        sentences.append(" ".join(kept))
    return " ".join(sentences)


def augment_caption(sentences: list[str], rng: np.random.Generator) -> str:
    """Text augmentation (``random_combine_mode: 1``, ``random_num: true``): k ~ U[1, n-1]
    sentences drawn without replacement, in random order, joined with ". "."""
    if not sentences:
        raise ValueError("a caption needs at least one sentence")
    n = len(sentences)
    if n < 2:
        return sentences[0]
    k = int(rng.integers(1, n))
    idx = rng.choice(n, k, replace=False)
    return ". ".join(sentences[i] for i in idx)


def full_caption(sentences: list[str]) -> str:
    """The un-augmented caption (validation): every sentence joined with ". "."""
    return ". ".join(sentences)


# -- token layout ---------------------------------------------------------------------------

@dataclass
class TextBatch:
    """Tokenised captions plus the index arrays that define word/sentence units.

    ``word_index[b, t]``: word slot of token t (-1: not part of any unit, i.e. after [SEP]).
    ``sent_index[b, w]``: sentence slot of word slot w (-1: a separator or past [SEP]).
    ``word_mask`` / ``sent_mask``: which word / sentence slots enter the local losses.
    ``words``: the word-slot labels (official ``report`` list), for inspection and tests.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    word_index: torch.Tensor
    sent_index: torch.Tensor
    word_mask: torch.Tensor
    sent_mask: torch.Tensor
    words: list[list[str]]

    def to(self, device: Any) -> TextBatch:
        t = {k: getattr(self, k).to(device, non_blocking=True) for k in (
            "input_ids", "attention_mask", "token_type_ids", "word_index", "sent_index",
            "word_mask", "sent_mask")}
        return TextBatch(**t, words=self.words)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def select(self, idx: torch.Tensor | list[int]) -> TextBatch:
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        t = {k: getattr(self, k)[idx_t.to(getattr(self, k).device)] for k in (
            "input_ids", "attention_mask", "token_type_ids", "word_index", "sent_index",
            "word_mask", "sent_mask")}
        return TextBatch(**t, words=[self.words[i] for i in idx_t.tolist()])


def _faithful_sentences(labels: list[str], n_slots: int) -> tuple[list[int], int]:
    """Official ``aggregate_tokens_sent_as_units`` on word labels: the unit before [SEP] is
    relabelled "*", [SEP] becomes ".", sentences are the spans between "." units."""
    cap = list(labels) + ["[PAD]"] * (n_slots - len(labels))
    sep = cap.index("[SEP]")
    if sep >= 1:
        cap[sep - 1] = "*"
    cap[sep] = "."
    dots = [i for i, c in enumerate(cap) if c == "."]
    sent = [-1] * n_slots
    sent[0] = 0  # [CLS]
    for k, end in enumerate(dots):
        start = 1 if k == 0 else dots[k - 1] + 1
        for w in range(start, end):
            sent[w] = k + 1
    sent[sep] = len(dots) + 1  # the [SEP] embedding follows the sentences
    return sent, len(dots)


def _corrected_sentences(labels: list[str], first: list[int], offsets: list[tuple[int, int]],
                         spans: list[tuple[int, int]], n_slots: int) -> tuple[list[int], int]:
    """Sentence membership from character offsets: a word belongs to the caption sentence its
    first character falls in; the ". " separators belong to none."""
    sep = labels.index("[SEP]")
    sent = [-1] * n_slots
    sent[0] = 0
    used: list[int] = []
    for w in range(1, sep):
        start = offsets[first[w]][0]
        for k, (a, b) in enumerate(spans):
            if a <= start < b:
                if k not in used:
                    used.append(k)
                sent[w] = used.index(k) + 1
                break
    sent[sep] = len(used) + 1
    return sent, len(used)


def layout_one(tokens: list[str], mode: str, offsets: list[tuple[int, int]] | None = None,
               spans: list[tuple[int, int]] | None = None) -> dict[str, Any]:
    """Index arrays for one tokenised caption (length T = len(tokens))."""
    _check_mode(mode)
    n = len(tokens)
    index, labels, first = word_layout(tokens)
    sep = labels.index("[SEP]")
    word_mask = [False] * n
    if mode == "faithful":
        # cap_len = #units not starting with "[" + 1, counted over the padded label list
        cap_len = len([w for w in labels if not w.startswith("[")]) + 1
        for w in range(min(cap_len, n)):
            word_mask[w] = True
        sent, n_sent = _faithful_sentences(labels, n)
    else:
        if offsets is None or spans is None:
            raise ValueError("corrected mode needs token offsets and sentence spans")
        sent, n_sent = _corrected_sentences(labels, first, offsets, spans, n)
        for w in range(sep):  # [CLS] and every word before [SEP], separators excluded
            word_mask[w] = w == 0 or sent[w] >= 1
    # sentence slots: [CLS] + the sentences (official sentence cap_len = K + 1)
    sent_mask = [i < n_sent + 1 for i in range(n)]
    return {"word_index": index, "sent_index": sent, "word_mask": word_mask,
            "sent_mask": sent_mask, "words": labels + ["[PAD]"] * (n - len(labels))}


def caption_spans(caption: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of a ". "-joined caption."""
    spans, start = [], 0
    for part in caption.split(". "):
        spans.append((start, start + len(part)))
        start += len(part) + 2
    return spans


class CaptionCollate:
    """Stacks uint8 frames into a normalised batch and tokenises their captions (runs in the
    loader workers): the batch of AFLoc's and GLoRIA's training tasks."""

    def __init__(self, processor: TextProcessor):
        self.processor = processor

    def __call__(self, items: list[tuple[np.ndarray, str]]) -> tuple[torch.Tensor, TextBatch]:
        from bench.imaging.recipes import to_tensor

        frames = np.stack([f for f, _ in items])
        return to_tensor(frames), self.processor.encode([c for _, c in items])


class TextProcessor:
    """Tokenises captions and builds `TextBatch`es (the CPU half of the text encoder)."""

    def __init__(self, tokenizer: Any, mode: str = "faithful", word_num: int = WORD_NUM):
        _check_mode(mode)
        self.tokenizer = tokenizer
        self.mode = mode
        self.word_num = word_num

    def encode(self, captions: list[str]) -> TextBatch:
        enc = self.tokenizer(
            list(captions), padding="max_length", truncation=True, max_length=self.word_num,
            return_offsets_mapping=self.mode == "corrected", return_token_type_ids=True,
        )
        ids = enc["input_ids"]
        rows = []
        for b, cap in enumerate(captions):
            tokens = self.tokenizer.convert_ids_to_tokens(ids[b])
            if self.mode == "corrected":
                rows.append(layout_one(tokens, "corrected", [tuple(o) for o in
                                                             enc["offset_mapping"][b]],
                                       caption_spans(cap)))
            else:
                rows.append(layout_one(tokens, "faithful"))
        return TextBatch(
            input_ids=torch.tensor(ids, dtype=torch.long),
            attention_mask=torch.tensor(enc["attention_mask"], dtype=torch.long),
            token_type_ids=torch.tensor(enc["token_type_ids"], dtype=torch.long),
            word_index=torch.tensor([r["word_index"] for r in rows], dtype=torch.long),
            sent_index=torch.tensor([r["sent_index"] for r in rows], dtype=torch.long),
            word_mask=torch.tensor([r["word_mask"] for r in rows], dtype=torch.bool),
            sent_mask=torch.tensor([r["sent_mask"] for r in rows], dtype=torch.bool),
            words=[r["words"] for r in rows],
        )

    def encode_queries(self, texts: list[str]) -> TextBatch:
        """Queries/prompts: cleaned with ``clean_query`` (sentences joined by a space)."""
        return self.encode([clean_query(t, self.mode) for t in texts])


def aggregate(hidden: torch.Tensor, batch: TextBatch) -> dict[str, torch.Tensor]:
    """Word, sentence and report embeddings from the (layer-summed) token states [B, T, D].

    words[b, w] = sum of the tokens of word w; sentences[b, s] = mean of the words of sentence
    s ([CLS] and [SEP] slots copied); report[b] = mean over all T word slots (zeros included).
    Returns tensors laid out [B, D, T] for words/sentences (the official layout) and [B, D].
    """
    b, t, d = hidden.shape
    words = sum_into_words(hidden, batch.word_index)
    s_idx = torch.where(batch.sent_index < 0, torch.full_like(batch.sent_index, t),
                        batch.sent_index)
    sents = hidden.new_zeros(b, t + 1, d)
    sents.scatter_add_(1, s_idx.unsqueeze(-1).expand(b, t, d), words)
    counts = hidden.new_zeros(b, t + 1)
    counts.scatter_add_(1, s_idx, torch.ones_like(s_idx, dtype=hidden.dtype))
    # an empty sentence (faithful mode keeps an all-non-ASCII piece as "") gets a zero vector;
    # the official numpy mean gives NaN there (a deliberate deviation: no NaN loss)
    sents = (sents / counts.clamp(min=1).unsqueeze(-1))[:, :t]
    report = words.sum(1) / t
    return {"words": words.transpose(1, 2), "sentences": sents.transpose(1, 2),
            "report": report}


class TextEncoder(nn.Module):
    """BERT (``.model``, so keys read ``text_encoder.model.*`` as in both releases), the sum of
    its last `last_n_layers` hidden states, and the word, sentence and report units.

    A config dict with another ``model_type`` (ELECTRA, DistilBERT: `encoders.WORDPIECE_ENCODERS`)
    builds that type's base model; token type ids go only to models that take them (DistilBERT
    has none, and BERT's are all zero for one caption, so nothing is lost)."""

    def __init__(self, bert_config: dict[str, Any], last_n_layers: int = 4,
                 bert: nn.Module | None = None):
        super().__init__()
        import inspect

        from .encoders import text_model_from_config

        if bert is None:
            bert = text_model_from_config(bert_config)
        self.model = bert
        self.last_n_layers = last_n_layers
        self.token_types = "token_type_ids" in inspect.signature(bert.forward).parameters

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def forward(self, batch: TextBatch) -> dict[str, torch.Tensor]:
        # BERT runs on the batch's longest caption, not the 97-token padding: masked keys add
        # exactly zero to attention, and every slot past [SEP] is outside all word units, so
        # the pad positions' states (zero-filled back here) never reach an embedding
        t = batch.input_ids.shape[1]
        n = max(int(batch.attention_mask.sum(1).max()), 1)
        types = {"token_type_ids": batch.token_type_ids[:, :n]} if self.token_types else {}
        out = self.model(input_ids=batch.input_ids[:, :n],
                         attention_mask=batch.attention_mask[:, :n], output_hidden_states=True,
                         **types)
        hidden = sum_last_layers(out.hidden_states, self.last_n_layers)
        if n < t:
            hidden = F.pad(hidden, (0, 0, 0, t - n))
        return aggregate(hidden, batch)
