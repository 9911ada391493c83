"""GLoRIA's zero-shot prompts.

``generate_chexpert_class_prompts(n=5)``: for each of the five CheXpert competition classes of
GLoRIA's dictionary (``constants.CHEXPERT_CLASS_PROMPTS``, shipped as
``data/chexpert_class_prompts.json``), every ``f"{a} {b} {c}"`` over the entry's first, second
and third key in their order (for Pleural Effusion that is severity, location, subtype, so "small
left bilateral pleural effusion"), then ``random.sample(prompts, 5)``, the classes in the
dictionary's order, from Python's generator seeded with 6 (``random.seed(6)`` at import of
``gloria.py``). The sampling is reproduced exactly with a generator of our own.

A class outside the dictionary (pneumonia on RSNA, pneumothorax on SIIM, COVID-19, fundus
diseases) has no official prompt: the harness uses its prompt set, the positive prompts of
AFLoc's CXR dictionary (`bench.methods.afloc.prompts`; "Findings suggesting {class}" for a class
outside that one too). GLoRIA scores a class by its best prompt, so no negative prompt is used.
"""

from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path

DATA = Path(__file__).with_name("data") / "chexpert_class_prompts.json"
SEED = 6
PER_CLASS = 5


@lru_cache(maxsize=1)
def dictionary() -> dict[str, dict[str, list[str]]]:
    return json.loads(DATA.read_text())


@lru_cache(maxsize=4)
def official_prompts(n: int = PER_CLASS, seed: int = SEED) -> dict[str, list[str]]:
    """{class: n prompts} as ``generate_chexpert_class_prompts(n)`` draws them after
    ``random.seed(seed)``."""
    rng = random.Random(seed)
    out = {}
    for name, entry in dictionary().items():
        keys = list(entry)
        combos = [f"{a} {b} {c}" for a in entry[keys[0]] for b in entry[keys[1]]
                  for c in entry[keys[2]]]
        out[name] = rng.sample(combos, n)
    return out


def class_prompts(pathology: str) -> tuple[list[str], str]:
    """(prompts of `pathology`, where they come from: "gloria" or "harness")."""
    official = {k.lower(): v for k, v in official_prompts().items()}
    key = {"effusion": "pleural effusion"}.get(pathology.lower(), pathology.lower())
    if key in official:
        return list(official[key]), "gloria"
    from bench.methods.afloc.prompts import cxr_prompts

    return cxr_prompts(pathology)[0], "harness"
