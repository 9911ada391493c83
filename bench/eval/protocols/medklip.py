"""The ``medklip-rsna`` protocol: MedKLIP's official RSNA grounding score (``score_cal`` in
``Sample_Zero-Shot_Grounding_RSNA/test.py``).

- Only positive images count. The ground truth is the boxes rasterised on the image's canvas
  (``int(float(.))`` of x, y, w, h, as the official loader does on the 1024 x 1024 RSNA
  canvas; a mask where the finding has no boxes), then resized to 224 x 224 nearest
  (torchvision ``Resize([224, 224], NEAREST)`` on a tensor: the whole image, aspect ignored).
- The map is read on the same 224 x 224 frame: a map already on a 224 ``resize``/``square``
  frame as it is (MedKLIP's), any other carried to the image and resized bilinearly; it is not
  normalised: it is binarised at ``map > threshold`` (0.008, the official constant for
  MedKLIP's attention, whose uniform value is 1/196).
- IoU = |P & G| / (|P| + |G| - |P & G|) and Dice = 2 |P & G| / (|P| + |G|) per image, averaged
  over the images; the pointing game counts an image as a hit when any pixel equal to the map's
  maximum (the whole 16 x 16 block of the arg-max patch for MedKLIP) lies in G; the score is
  hits / positive images.

Confidence intervals resample the positive rows (seeded, percentile 95%), per category and
overall. The threshold is an option (``--protocol-arg threshold=...``) recorded in run.json.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from bench.errors import UsageError
from bench.eval.bootstrap import bootstrap_nanmeans, intervals, official_stream, quiet
from bench.eval.protocols.base import Protocol, finite_number
from bench.eval.summary import entry, interval_entry, require_columns, skeleton
from bench.imaging.geometry import STRETCHED, Frame, map_to_original

SIZE = 224
THRESHOLD = 0.008
METRICS = ("iou", "dice", "pointing_game")


def gt_canvas(finding: Any, hw: tuple[int, int]) -> np.ndarray:
    """The finding's GT on the image's canvas: its boxes as the official loader draws them
    (``int(float(v))`` of each of x, y, w, h), else its mask (> 0)."""
    boxes = getattr(finding, "boxes", None)
    if boxes is not None and len(boxes):
        seg = np.zeros(hw, dtype=np.float64)
        for x, y, w, h in np.asarray(boxes, dtype=np.float64):
            x, y, w, h = int(x), int(y), int(w), int(h)
            seg[y:y + h, x:x + w] = 1
        return seg
    mask = getattr(finding, "mask", None)
    if mask is None:
        return np.zeros(hw, dtype=np.float64)
    return (np.asarray(mask) > 0).astype(np.float64)


def nearest_224(canvas: np.ndarray) -> np.ndarray:
    """torchvision ``Resize([224, 224], NEAREST)`` of a 2-D array (``interpolate`` nearest)."""
    t = torch.from_numpy(np.ascontiguousarray(canvas, dtype=np.float64))[None, None]
    return F.interpolate(t, size=(SIZE, SIZE), mode="nearest")[0, 0].numpy()


def map_224(heatmap: np.ndarray, frame: Frame, hw: tuple[int, int]) -> np.ndarray:
    m = np.asarray(heatmap, dtype=np.float64)
    if frame.kind in STRETCHED and m.shape == (SIZE, SIZE):
        return m
    full = map_to_original(m.astype(np.float32), frame, hw)
    t = torch.from_numpy(np.ascontiguousarray(full, dtype=np.float64))[None, None]
    return F.interpolate(t, size=(SIZE, SIZE), mode="bilinear",
                         align_corners=False)[0, 0].numpy()


def score(pred: np.ndarray, seg: np.ndarray, threshold: float = THRESHOLD) -> dict[str, float]:
    """``score_cal`` of one positive image: IoU, Dice and the pointing hit."""
    p = (pred > threshold).astype(np.float64)
    g = seg.astype(np.float64)
    inter, ps, gs = float((g * p).sum()), float(p.sum()), float(g.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.float64(inter) / np.float64(gs + ps - inter)
        dice = 2 * np.float64(inter) / np.float64(gs + ps)
    hit = float(((pred == pred.max()) * g).sum() > 0)
    return {"iou": float(iou), "dice": float(dice), "pointing_game": hit,
            "inter": inter, "pred": ps, "gt": gs}


class MedklipRsnaProtocol(Protocol):
    name = "medklip-rsna"
    description = ("MedKLIP official RSNA grounding (score_cal): 224x224 resize frame, raw map "
                   "> 0.008, per-image IoU/Dice averaged over positive images, pointing game "
                   "over the max-valued pixels")
    bootstrap_unit = "row"

    def __init__(self, threshold: float = THRESHOLD, dataset: str | None = None,
                 prompt: str | None = None, **options: Any):
        del dataset, prompt  # passed by the evaluator to every protocol; no variant here
        if options:
            raise UsageError(f"protocol medklip-rsna: unknown options {sorted(options)} "
                             f"(known: threshold)")
        t = finite_number(threshold)
        if t is None:
            raise UsageError(f"protocol medklip-rsna: threshold must be a number, not "
                             f"{threshold!r}")
        super().__init__(threshold=t)
        self.threshold = t

    def localization_rows(self, sample, findings, maps, frame, probs=None) -> list[dict]:
        rows = []
        for f, m in zip(findings, maps):
            row = self.id_columns(sample, f)
            if f.positive:
                seg = nearest_224(gt_canvas(f, sample.hw))
                row.update(score(map_224(m, frame, sample.hw), seg, self.threshold))
            else:
                row.update({k: np.nan for k in (*METRICS, "inter", "pred", "gt")})
            rows.append(row)
        return rows

    def summarize(self, rows: pd.DataFrame, n_boot: int, seed: int,
                  tuning_rows: pd.DataFrame | None = None) -> dict[str, Any]:
        require_columns(rows, ["sample_id", "pathology", "positive", *METRICS], self.name)
        pos = rows[rows["positive"].astype(bool)].reset_index(drop=True)
        n = len(pos)
        out = skeleton("localization", self.name, n, pos["sample_id"].nunique() if n else 0,
                       n_boot, seed, "row", threshold=self.threshold)
        cats = sorted(pos["pathology"].astype(str).unique()) if n else []
        code = pd.Index(cats).get_indexer(pos["pathology"].astype(str)) if n else np.zeros(0)
        rng = official_stream(seed)
        for metric in METRICS:
            values = pos[metric].to_numpy(dtype=np.float64) if n else np.zeros(0)
            table = np.full((n, len(cats) + 1), np.nan)
            for j in range(len(cats)):
                table[code == j, j] = values[code == j]
            if n:
                table[:, -1] = values
            ivs = (intervals(bootstrap_nanmeans(rng, n, n_boot, table))
                   if n_boot > 0 and n else None)

            out["metrics"][metric] = {
                "per_category": {c: _entry(values, code == j, ivs, j)
                                 for j, c in enumerate(cats)},
                "overall": _entry(values, np.ones(n, dtype=bool), ivs, len(cats)),
            }
        return out


def _entry(values: np.ndarray, sel: np.ndarray, ivs: list | None, j: int) -> dict[str, Any]:
    with quiet():
        mean = float(np.nanmean(values[sel])) if sel.any() else np.nan
    if ivs is None:
        return entry(mean, np.nan, np.nan, mean, int(sel.sum()))
    return interval_entry(ivs[j], mean, int(sel.sum()))
