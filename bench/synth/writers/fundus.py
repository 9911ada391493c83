"""The fundus set as a paired folder: images/, pairs.csv (image, report, split), labels.csv
(nine diseases), masks/<stem>/<lesion>.png for drusen, hemorrhages and CNV, and
paraphrases.json: five paraphrases of each sentence frequent in the training reports (the paper's
fundus text augmentation; read by `bench train afloc` on this folder).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from bench.synth.fundus import (
    DISEASES,
    frequent_paraphrases,
    fundus_report,
    make_fundus,
    sample_diseases,
)
from bench.synth.writers.common import csv_bytes, jpeg_bytes, jsonl_bytes, png_bytes, readme, write

# a sentence is "frequent" when at least this share of the training reports holds it (and at
# least 2 of them)
FREQUENT_SHARE = 0.01


def fundus_item(root: str, seed: int, code: int, i: int, size: int, split: str) -> dict[str, Any]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, code, i]))
    diseases = sample_diseases(rng)
    if split == "test" and not diseases and rng.random() < 0.5:
        diseases = ["Macular Degeneration" if rng.random() < 0.5 else "Retinopathy"]
    f = make_fundus(rng, size, diseases)
    stem = f"synthetic_fundus_{i:05d}"
    rel = f"images/{stem}.jpg"
    write(Path(root) / rel, jpeg_bytes(f.image))
    for lesion, m in f.masks.items():
        write(Path(root) / "masks" / stem / f"{lesion}.png", png_bytes(m.astype(np.uint8) * 255))
    labels = {"image": rel, **{d: int(d in f.diseases) for d in DISEASES}}
    return {"pair": {"image": rel, "report": fundus_report(f, rng), "split": split},
            "labels": labels,
            "truth": {"id": stem, "eye": f.eye, "diseases": f.diseases,
                      "lesions": {k: int(v.sum()) for k, v in f.masks.items()}, **f.attrs}}


def write_fundus_tables(root: Path, items: list[dict[str, Any]]) -> None:
    write(root / "pairs.csv", csv_bytes(["image", "report", "split"], [it["pair"] for it in items]))
    write(root / "labels.csv", csv_bytes(["image", *DISEASES], [it["labels"] for it in items]))
    write(root / "SYNTHETIC_TRUTH.jsonl", jsonl_bytes([it["truth"] for it in items]))
    write(root / "paraphrases.json", paraphrase_bytes(
        [it["pair"]["report"] for it in items if it["pair"]["split"] == "train"]))
    readme(root, "paired folder (pairs.csv image,report,split; labels.csv with the paper's nine "
           "fundus diseases MD, retinopathy, myopia, glaucoma, CODA, RAS, cataract, MEM, ML; "
           "masks/<image stem>/<lesion>.png for Choroidal Neovascularization, Drusen, "
           "Retinal Hemorrhage)")


def paraphrase_bytes(train_reports: list[str]) -> bytes:
    """The world's paraphrase table, labelled SYNTHETIC: `PARAPHRASES` entries whose sentence is in
    at least max(2, 1%) of the training reports, with that count."""
    min_count = max(2, math.ceil(FREQUENT_SHARE * len(train_reports)))
    table = {"_about": "SYNTHETIC paraphrase table of the synthetic fundus world (hand-written "
                       "for its report templates, bench.synth.fundus.PARAPHRASES): five "
                       "paraphrases of each sentence found in at least "
                       f"{min_count} of its {len(train_reports)} training reports",
             **frequent_paraphrases(train_reports, min_count)}
    return (json.dumps(table, indent=1, ensure_ascii=False) + "\n").encode()
