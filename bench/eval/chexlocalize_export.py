"""Any method's maps as CheXlocalize's saliency pickles, for the official scripts.

One file per (CXR, task), ``{cxr_id}_{task}_map.pkl`` (the task in CheXlocalize's naming:
"Airspace Opacity" for "Lung Opacity"), a plain pickle of a dict, as CheXlocalize's own
``CPU_Unpickler`` and `bench.eval.external_maps.load_pkl` read it:

- ``map``: float32 tensor **(1, 1, h, w)** covering the whole image, which the official
  ``pkl_to_mask`` resizes straight to (H, W) = (cxr_dims[1], cxr_dims[0]) (bilinear,
  align_corners=False). A map on a square-resize frame (the CAMs, CheXlocalize's 320) is written
  as it is; a map on a letterbox frame (AFLoc, GLoRIA: 224) is **un-letterboxed**: resized to the
  frame's side, then the padding is cut away, so what is left stretches back onto the image as
  the harness carries it (`bench.imaging.geometry.map_to_original`), and a round trip
  (export, ``bench score``) gives the same numbers as scoring in place. A map on a crop frame
  (letterbox 256 -> crop 224, short-side crop) is carried to the native size; the border the
  method never saw (NaN in the harness) gets the map's minimum, since the official scripts
  cannot take NaN (so those round trips are close, not identical).
- ``prob``: the method's probability for the task, a Python float (what the official scripts
  compare with their cutoffs; `read_prob` keeps it in float64, as the in-place run does); 0.0
  with ``prob_missing`` set for a method that cannot classify.
- ``task``, ``gt`` (1 if the CXR's finding is positive, else 0).
- ``cxr_img``: float32 tensor (3, h, w) in [0, 1]: the grey image on the map's grid (the
  official scripts do not read it; ``cxr_img=False`` leaves it out, a quarter of the size).
- ``cxr_dims``: **(w, h)** of the original image, CheXlocalize's order.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench.imaging.geometry import (
    LETTERBOX,
    ORIGINAL,
    STRETCHED,
    Frame,
    letterbox_placement,
    map_to_original,
    resize_map,
)
from bench.imaging.recipes import to_uint8_gray
from bench.store import atomic_write_bytes

ALIASES = {"Lung Opacity": "Airspace Opacity"}


def task_name(pathology: str) -> str:
    return ALIASES.get(pathology, pathology)


def pkl_name(cxr_id: str, pathology: str) -> str:
    return f"{cxr_id}_{task_name(pathology)}_map.pkl"


def whole_image_map(heatmap: np.ndarray, frame: Frame, hw: tuple[int, int]) -> np.ndarray:
    """A method's map as a grid covering the whole H x W image (stretched), float32."""
    m = np.asarray(heatmap, dtype=np.float32)
    if frame.kind == ORIGINAL:
        return m
    if frame.kind in STRETCHED:
        return resize_map(m, (frame.size, frame.size))
    if frame.kind == LETTERBOX and frame.pre is None:
        m = resize_map(m, (frame.size, frame.size))
        p = letterbox_placement(hw[0], hw[1], frame.size)
        return np.ascontiguousarray(m[p.top:p.top + p.new_h, p.left:p.left + p.new_w])
    out = map_to_original(m, frame, hw)  # crop frames: native size, NaN outside the crop
    bad = ~np.isfinite(out)
    if bad.all():
        return np.zeros_like(out)
    if bad.any():
        out[bad] = np.nanmin(out)
    return out


def saliency_record(heatmap: np.ndarray, frame: Frame, image: np.ndarray, pathology: str,
                    positive: bool, prob: float | None, cxr_img: bool = True) -> dict[str, Any]:
    """The dict of one pickle (torch tensors where CheXlocalize has them)."""
    import torch

    h, w = int(image.shape[0]), int(image.shape[1])
    grid = whole_image_map(heatmap, frame, (h, w))
    gh, gw = grid.shape
    rec: dict[str, Any] = {
        "map": torch.from_numpy(np.ascontiguousarray(grid, dtype=np.float32))[None, None],
        "prob": float(prob) if prob is not None and np.isfinite(prob) else 0.0,
        "task": task_name(pathology), "gt": int(bool(positive)), "cxr_dims": (w, h)}
    if cxr_img:
        grey = to_uint8_gray(image)
        small = (cv2.resize(grey, (gw, gh), interpolation=cv2.INTER_AREA)
                 if (gh, gw) != (h, w) else grey)
        rec["cxr_img"] = torch.from_numpy(small.astype(np.float32) / 255.0)[None].repeat(3, 1, 1)
    if prob is None or not np.isfinite(prob):
        rec["prob_missing"] = True
    return rec


def write_pkl(folder: Path, cxr_id: str, pathology: str, record: dict[str, Any]) -> Path:
    path = Path(folder) / pkl_name(cxr_id, pathology)
    atomic_write_bytes(path, pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL))
    return path


def default_splits(ds_cls: Any) -> list[str]:
    """The dataset's default split and its validation split (CheXlocalize's tuning split)."""
    from bench.train.data import split_names

    splits = list(getattr(ds_cls, "splits", ()) or [])
    first = getattr(ds_cls, "default_split", None) or (splits[0] if splits else None)
    _, val = split_names(ds_cls)
    return [s for s in dict.fromkeys([first, val]) if s]


def export_chexlocalize(method_name: str, dataset: str, out: Path, splits: list[str] | None = None,
                        root: str | None = None, prompt: str = "simple",
                        method_options: dict[str, Any] | None = None,
                        dataset_options: dict[str, Any] | None = None, device: str = "cpu",
                        seed: int = 0, batch_size: int = 8, limit: int | None = None,
                        progress: bool = True, cxr_img: bool = True,
                        ) -> dict[str, dict[str, Any]]:
    """Write `method_name`'s maps (and probabilities) for every finding of the dataset's splits;
    returns per split the counts of images and maps written."""
    from collections import Counter

    from bench.eval.runner import RunSpec, _queries, build_dataset
    from bench.registry import get_dataset, get_method

    cls = get_method(method_name)
    options = dict(method_options or {})
    ds_cls = get_dataset(dataset)
    if ("checkpoint" not in options and "checkpoint" in cls.option_specs
            and getattr(ds_cls, "synthetic", False)):
        default = cls.default_checkpoint()
        if default:
            options["checkpoint"] = default
    method = cls(device=device, seed=seed, **options)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, dict[str, Any]] = {}
    try:
        for split in splits or default_splits(ds_cls):
            spec = RunSpec(method=method_name, dataset=dataset, split=split, root=root,
                           prompt=prompt, dataset_options=dict(dataset_options or {}), seed=seed)
            ds = build_dataset(spec)
            method.bind(ds, "chexlocalize")
            n = len(ds) if limit is None else min(limit, len(ds))
            done = {"images": 0, "maps": 0}
            skipped: Counter[str] = Counter()
            it: Any = range(0, n, batch_size)
            if progress:
                from tqdm.auto import tqdm

                it = tqdm(it, desc=f"export {split}", leave=False)
            for a in it:
                batch = [s for s in (ds.load(i) for i in range(a, min(a + batch_size, n)))
                         if s is not None and s.image is not None]
                if min(a + batch_size, n) - a > len(batch):
                    skipped["unreadable image"] += min(a + batch_size, n) - a - len(batch)
                batch = [s for s in batch if s.findings]
                if not batch:
                    continue
                queries = [_queries(ds, s, prompt) for s in batch]
                maps = method.localize(batch, queries)
                names = sorted({f.pathology for s in batch for f in s.findings})
                probs = (method.classify(batch, names) if method.capabilities.classify
                         else np.full((len(batch), len(names)), np.nan))
                for s, ms, pr in zip(batch, maps, probs):
                    for f, m in zip(s.findings, ms):
                        rec = saliency_record(m, method.frame, s.image, f.pathology,
                                              f.positive, float(pr[names.index(f.pathology)]),
                                              cxr_img)
                        write_pkl(out, str(s.id), f.pathology, rec)
                        done["maps"] += 1
                    done["images"] += 1
            if skipped:
                done["skipped"] = dict(skipped)
            counts[split] = done
    finally:
        method.close()
    return counts
