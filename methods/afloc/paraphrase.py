"""Sentence paraphrase augmentation: the text augmentation of AFLoc's fundus recipe.

The paper (Methods, experimental details) says that for the fundus dataset "we performed text
augmentation on frequently occurring sentences in the reports, generating five semantically
equivalent but differently expressed sentences for each sentence. During the training phase,
these equivalent sentences were randomly replaced." Neither the table nor the rule is released,
so what follows is this harness's reading (README, "AFLoc on retinal fundus pairs"):

- The table is a JSON object: each key is a report sentence, each value its paraphrases, either a
  list of strings or ``{"count": N, "paraphrases": [...]}`` (the template that
  ``bench data frequent-sentences`` writes; ``count`` is informational). Keys starting with
  ``_`` are notes and are ignored. Five paraphrases per sentence is the paper's number; any
  non-empty list is accepted.
- Matching: a key and each of its paraphrases go through AFLoc's own sentence cleaning (the run's
  ``text_mode``), and must each come out as exactly one sentence; a training sentence is
  replaced when it equals a cleaned key exactly (so case and punctuation do not matter, words
  and their order do).
- Rule (an assumption; the paper says only "randomly replaced"): each matching sentence of a
  training caption is drawn uniformly from the original and its paraphrases, independently,
  before the official sentence sampling and shuffling. The draw comes from its own generator
  seeded by (seed, epoch, pair index), so a resumed run sees the same text as an uninterrupted
  one, and the sentence sampling draws what it draws without a table.
- Only the training captions are paraphrased ("during the training phase"); validation captions
  keep the report's sentences.
- Faithful mode stops a report's sentences when the running word count hits exactly 5 (an
  official quirk); that cut is made on the original report, before any replacement.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import DataError
from bench.methods._shared.bert_text import clean_report, split_pieces

# mixed into the seed of the replacement draws, so they never reuse the caption draws' stream
PARAPHRASE_STREAM = 0x50415241
# the name a paired folder's own table has (written by the synthetic fundus world)
DEFAULT_NAME = "paraphrases.json"


def _one_sentence(text: str, text_mode: str) -> str | None:
    """`text` as AFLoc's cleaning leaves it, when that is exactly one sentence."""
    sents = clean_report(text, text_mode, max_word_num=10**9)
    return sents[0] if len(sents) == 1 else None


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"entry {k!r} is given twice")
        out[k] = v
    return out


@dataclass(frozen=True)
class ParaphraseTable:
    """Cleaned sentence -> its equivalents (the cleaned original first, then the paraphrases)."""

    path: str
    sha256: str
    text_mode: str
    choices: dict[str, tuple[str, ...]]

    @classmethod
    def load(cls, path: str | Path, text_mode: str) -> ParaphraseTable:
        """Read and check a table; any problem is one `DataError` line naming file and entry."""
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read the paraphrase table ({exc.strerror or exc})",
                            path) from None
        try:
            data = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
        except UnicodeDecodeError:
            raise DataError("paraphrase table is not UTF-8 text", path) from None
        except json.JSONDecodeError as exc:
            raise DataError(f"paraphrase table is not valid JSON (line {exc.lineno}, column "
                            f"{exc.colno}: {exc.msg})", path) from None
        except ValueError as exc:
            raise DataError(f"paraphrase table: {exc}", path) from None
        if not isinstance(data, dict):
            raise DataError("paraphrase table must be a JSON object {sentence: [paraphrases]}",
                            path)
        choices: dict[str, tuple[str, ...]] = {}
        origin: dict[str, str] = {}
        for key, value in data.items():
            if key.startswith("_"):
                continue
            where = f"paraphrase table, entry {key!r}"
            if isinstance(value, dict):
                value = value.get("paraphrases")
            if not isinstance(value, list) or not value:
                raise DataError(f"{where}: expected a non-empty list of paraphrases (or "
                                f"{{\"paraphrases\": [...]}})", path)
            cleaned = _one_sentence(key, text_mode)
            if cleaned is None:
                raise DataError(f"{where}: the sentence is not exactly one sentence after "
                                f"AFLoc's {text_mode} text cleaning, so it can never match",
                                path)
            if cleaned in choices:
                raise DataError(f"{where}: same sentence after cleaning as entry "
                                f"{origin[cleaned]!r}", path)
            alts = [cleaned]
            for k, p in enumerate(value, 1):
                if not isinstance(p, str) or not p.strip():
                    raise DataError(f"{where}: paraphrase {k} is empty or not a string (fill it "
                                    f"in or remove it)", path)
                c = _one_sentence(p, text_mode)
                if c is None:
                    raise DataError(f"{where}: paraphrase {k} ({p!r}) is not exactly one "
                                    f"sentence after AFLoc's {text_mode} text cleaning", path)
                alts.append(c)
            choices[cleaned] = tuple(alts)
            origin[cleaned] = key
        if not choices:
            raise DataError("paraphrase table has no entries", path)
        return cls(str(path.resolve()), hashlib.sha256(raw).hexdigest(), text_mode, choices)

    def replace(self, sentences: list[str], rng: np.random.Generator) -> list[str]:
        """`sentences` with each one found in the table drawn uniformly from its equivalents
        (the original included); one draw per matching sentence, in order."""
        out = []
        for s in sentences:
            alts = self.choices.get(s)
            out.append(s if alts is None else alts[int(rng.integers(len(alts)))])
        return out

    def describe(self) -> dict[str, Any]:
        """What a run records of the table it used."""
        return {"path": self.path, "sha256": self.sha256, "entries": len(self.choices),
                "paraphrases": sum(len(a) - 1 for a in self.choices.values()),
                "rule": "each matching sentence uniform over the original and its paraphrases, "
                        "per (seed, epoch, pair); training captions only"}


def paraphrase_rng(seed: int, epoch: int, index: int, stream: tuple = ()) -> np.random.Generator:
    """The generator of pair `index`'s replacements in `epoch`: a function of these alone."""
    return np.random.default_rng((seed, epoch, index, *stream, PARAPHRASE_STREAM))


def dataset_table(root: str | Path | None) -> Path | None:
    """A paired folder's own table, ``<root>/paraphrases.json``, where there is one."""
    if root is None:
        return None
    path = Path(root) / DEFAULT_NAME
    return path if path.is_file() else None


def frequent_sentences(reports: list[str | None], text_mode: str = "faithful",
                       top: int | None = None) -> list[tuple[str, int]]:
    """The `top` sentences held by the most reports, as (sentence, number of reports): counted
    after AFLoc's cleaning (what a table key must match), each shown in its most common written
    form; ties in cleaned-sentence order. The start of a paraphrase table for real reports."""
    counts: Counter[str] = Counter()
    written: dict[str, Counter[str]] = defaultdict(Counter)
    for report in reports:
        kept = set(clean_report(report, text_mode))  # what training sees of this report
        if not kept:
            continue
        counts.update(kept)
        for piece in split_pieces(report or "", text_mode):
            c = _one_sentence(piece, text_mode)
            if c in kept:
                written[c][" ".join(piece.split())] += 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return [(written[c].most_common(1)[0][0] + ".", n) for c, n in ranked]


def template(sentences: list[tuple[str, int]], source: str, n_reports: int,
             slots: int = 5) -> dict[str, Any]:
    """A table to fill in: each sentence with its count and `slots` empty paraphrases (the
    paper's five). `ParaphraseTable.load` refuses empty slots, so an unfilled one is noticed."""
    return {"_about": f"paraphrase table template: the {len(sentences)} most frequent sentences "
                      f"of {n_reports} training reports of {source}; fill each empty slot with an "
                      f"equivalent sentence (or delete it), then pass the file to bench train "
                      f"afloc --paraphrases",
            **{s: {"count": n, "paraphrases": [""] * slots} for s, n in sentences}}
