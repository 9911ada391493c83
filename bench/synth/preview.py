"""A contact sheet of synthetic chest X-rays and fundus photographs with ground-truth outlines.

One tile per finding (plus a normal study and fundus lesions), drawn with the same generator
as the world, outlines in colour, each tile captioned SYNTHETIC.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from bench.synth.anchors import load_anchors
from bench.synth.chest import make_chest
from bench.synth.fundus import make_fundus

TILES = [["Pneumonia"], ["Consolidation", "Pleural Effusion"], ["Lung Opacity"],
         ["Atelectasis"], ["Cardiomegaly", "Edema"], ["Enlarged Cardiomediastinum"],
         ["Lung Lesion"], ["Pneumothorax"], ["Support Devices"], ["COVID-19"], []]
FUNDUS = [["Macular Degeneration"], ["Retinopathy"], ["Myopia", "Glaucoma"],
          ["Macular Degeneration", "Retinopathy"], ["Cataract"]]
COLORS = [(255, 80, 80), (80, 200, 255), (255, 220, 60), (120, 255, 120), (255, 120, 255)]


def _outline(img: np.ndarray, mask: np.ndarray, color, thick: int = 1) -> None:
    cs, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(img, cs, -1, color, thick, cv2.LINE_AA)


def _caption(img: np.ndarray, text: str) -> None:
    cv2.rectangle(img, (0, 0), (img.shape[1], 15), (0, 0, 0), -1)
    cv2.putText(img, text[:38], (3, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (255, 255, 255), 1,
                cv2.LINE_AA)


def contact_sheet(seed: int = 0, tile: int = 256, cols: int = 4) -> np.ndarray:
    """RGB uint8 contact sheet."""
    anchors = load_anchors()
    tiles = []
    for k, names in enumerate(TILES):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 99, k]))
        ph = make_chest(rng, 512, 512, anchors, names)
        img = cv2.cvtColor(cv2.resize(ph.image, (tile, tile), interpolation=cv2.INTER_AREA),
                           cv2.COLOR_GRAY2RGB)
        for j, d in enumerate(ph.findings):
            m = cv2.resize(d.mask.astype(np.uint8), (tile, tile),
                           interpolation=cv2.INTER_NEAREST)
            _outline(img, m, COLORS[j % len(COLORS)])
        _caption(img, "SYNTHETIC " + (", ".join(names) if names else "normal"))
        tiles.append(img)
    for k, names in enumerate(FUNDUS):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 98, k]))
        f = make_fundus(rng, tile, names)
        img = f.image.copy()
        for j, m in enumerate(f.masks.values()):
            _outline(img, m, COLORS[(j + 1) % len(COLORS)])
        _caption(img, "SYNTHETIC fundus: " + ", ".join(names))
        tiles.append(img)
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[r:r + cols]) for r in range(0, len(tiles), cols)]
    return np.vstack(rows)


def write_preview(path: str | Path, seed: int = 0, tile: int = 256, colors: int = 0) -> Path:
    """Write the sheet as PNG; `colors` > 0 quantizes to a palette (small file for docs)."""
    from PIL import Image

    sheet = contact_sheet(seed, tile)
    im = Image.fromarray(sheet)
    if colors:
        im = im.quantize(colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, optimize=True)
    return path
