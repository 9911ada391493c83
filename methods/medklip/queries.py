"""MedKLIP's query book: the 75 description embeddings the decoder's queries are made from.

The official model keeps ``disease_book`` as a plain tensor attribute (not in the checkpoint):
the ``[CLS]`` ``last_hidden_state`` of Bio_ClinicalBERT over the 75 strings of
``observation explanation.json`` in the file's key order, tokenised with
``padding='max_length', max_length=64, truncation=True``. So a released checkpoint needs the
user's copy of that JSON (``--method-arg descriptions=PATH``, from their MedKLIP clone; the
strings are not shipped with the harness) and a local Bio_ClinicalBERT. The book is computed
once and cached beside the checkpoint (an atomic write), keyed by the text encoder's identity
and the descriptions' sha256, so a change of either recomputes it.

A new query (a free-text phrase, an unseen class such as COVID-19) is embedded the same way,
one text at a time: the MedKLIP paper's route for unseen diseases (a new description through
the text encoder), which the official code does not implement.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from bench.errors import CheckpointError

from .names import KEY_ALIASES, OBSERVATIONS

MAX_LENGTH = 64  # the grounding and classification scripts' get_tokenizer
CACHE_FORMAT = "medklip-query-book/1"


def load_descriptions(path: str | Path) -> list[str]:
    """The 75 description strings of an official ``observation explanation.json``, in the
    official order (the file's key order, checked against the 75 names; the RSNA/CXR14
    copies' 'eumonia' key is read as 'pneumonia')."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{p}: not a readable MedKLIP descriptions JSON "
                              f"({type(exc).__name__})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{p}: expected a JSON object of 75 name -> description entries")
    keys = [KEY_ALIASES.get(k, k) for k in data]
    if keys != list(OBSERVATIONS):
        bad = next((f"entry {i}: {k!r} (expected {o!r})" for i, (k, o)
                    in enumerate(zip(keys, OBSERVATIONS)) if k != o),
                   f"{len(keys)} entries (expected 75)")
        raise CheckpointError(f"{p}: not MedKLIP's observation explanation.json: {bad}")
    texts = list(data.values())
    if not all(isinstance(t, str) for t in texts):
        raise CheckpointError(f"{p}: every description must be a string")
    return texts


def descriptions_hash(texts: list[str]) -> str:
    return hashlib.sha256(json.dumps(list(texts)).encode()).hexdigest()


@torch.no_grad()
def embed_texts(text_model: Any, tokenizer: Any, texts: list[str],
                max_length: int = MAX_LENGTH, batch_size: int = 32) -> torch.Tensor:
    """[N, D] ``last_hidden_state[:, 0]`` of `texts` (max_length padding, truncation), as the
    official query book is made."""
    text_model.eval()
    device = next(text_model.parameters()).device
    out = []
    for a in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[a:a + batch_size]), padding="max_length", truncation=True,
                        max_length=max_length, return_tensors="pt")
        hidden = text_model(input_ids=enc["input_ids"].to(device),
                            attention_mask=enc["attention_mask"].to(device)).last_hidden_state
        out.append(hidden[:, 0].float().cpu())
    return torch.cat(out, 0) if out else torch.zeros(0)


def cache_key(text_identity: Any, desc_hash: str) -> str:
    blob = json.dumps({"text_encoder": text_identity, "descriptions": desc_hash},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_path(checkpoint: str | Path, key: str) -> Path:
    p = Path(checkpoint)
    return p.with_name(f"{p.name}.query-book-{key[:16]}.safetensors")


def read_cached(path: Path, key: str) -> torch.Tensor | None:
    """The cached book at `path` when it was written for `key` (else None)."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
                return None
            return f.get_tensor("disease_book")
    except Exception:
        return None


def write_cached(path: Path, key: str, book: torch.Tensor, info: dict[str, Any]) -> bool:
    """Write the book atomically; False (with a warning) where the folder is not writable."""
    from safetensors.torch import save_file

    from bench.store import atomic_write

    meta = {"format": CACHE_FORMAT, "key": key, "info": json.dumps(info, default=str)}
    try:
        with atomic_write(path) as tmp:
            save_file({"disease_book": book.contiguous()}, tmp, metadata=meta)
    except Exception as exc:
        warnings.warn(f"could not cache MedKLIP's query book at {path} ({exc}); it is "
                      f"recomputed in each run", stacklevel=2)
        return False
    return True


def cached_book(checkpoint: str | Path, text_identity: Any, texts: list[str],
                compute: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    """(book, info): the cached book for (text encoder, descriptions) beside `checkpoint`, or
    ``compute(texts)`` written there."""
    key = cache_key(text_identity, descriptions_hash(texts))
    path = cache_path(checkpoint, key)
    book = read_cached(path, key)
    if book is not None:
        return book, {"query_book": "cached", "query_book_file": str(path)}
    book = compute(texts)
    stored = write_cached(path, key, book, {"text_encoder": text_identity})
    return book, {"query_book": "computed", "query_book_file": str(path) if stored else None}


# -- the synthetic world's own descriptions (tiny preset) ----------------------------------------
_OWN = {
    "normal": "no abnormality, the chest looks normal",
    "effusion": "fluid in the pleural space blunting the costophrenic angle",
    "opacity": "an area of increased density in the lung",
    "pneumothorax": "air in the pleural space with a visible pleural line and no lung markings",
    "edema": "fluid in the lung interstitium with vascular congestion",
    "atelectasis": "collapse of part of the lung with volume loss",
    "consolidation": "airspace filled with fluid or pus, a dense opacity",
    "pneumonia": "lung infection seen as airspace opacity or consolidation",
    "cardiomegaly": "an enlarged heart silhouette",
    "enlarge": "an enlarged cardiomediastinal silhouette",
    "nodule": "a small round opacity in the lung",
    "mass": "a large opacity in the lung",
    "lesion": "a focal abnormality in the lung",
    "fracture": "a break in a rib or other bone",
    "device": "a support device such as a tube or line",
}


def synthetic_descriptions() -> list[str]:
    """The harness's own short descriptions of the 75 queries (tiny preset, synthetic world);
    not the official strings."""
    return [_OWN.get(n, f"{n.replace('_', ' ')} seen on the chest radiograph")
            for n in OBSERVATIONS]


def position_texts() -> list[str]:
    """The position book's sentences, as the official pretraining builds them from the 51
    anatomy names ("It is located at " + name)."""
    from .names import ANATOMIES

    return ["It is located at " + a for a in ANATOMIES]
