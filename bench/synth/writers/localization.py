"""CheXlocalize (CheXpert val/test JPGs, labels CSVs, COCO-RLE segmentations, polygons, human
benchmark), COVID Rural (JPGs, LabelMe 4.5.6 polygons, PNG masks) and ChestX-Det10 (JSON
lists with x1, y1, x2, y2 boxes + PNGs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench.synth.anchors import load_anchors
from bench.synth.chest import make_chest, sample_findings
from bench.synth.lexicon import CHEXPERT_LABELS, labels_of
from bench.synth.writers.common import (
    component_boxes,
    csv_bytes,
    jpeg_bytes,
    json_bytes,
    jsonl_bytes,
    png_bytes,
    polygons,
    readme,
    truth_record,
    write,
)

CHEXLOCALIZE_TASKS = ("Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion",
                      "Airspace Opacity", "Edema", "Consolidation", "Atelectasis",
                      "Pneumothorax", "Pleural Effusion", "Support Devices")
CHEXPERT_CSV_COLS = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding",
                     "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                     "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax",
                     "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices"]
DET10 = {"Atelectasis": "Atelectasis", "Calcification": "Calcification",
         "Consolidation": "Consolidation", "Pleural Effusion": "Effusion",
         "Emphysema": "Emphysema", "Fibrosis": "Fibrosis", "Fracture": "Fracture",
         "Pneumothorax": "Pneumothorax"}


def coco_rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_util

    enc = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(enc["size"][0]), int(enc["size"][1])],
            "counts": enc["counts"].decode("ascii")}


def _task_masks(ph, hw) -> dict[str, np.ndarray]:
    out = {}
    for task in CHEXLOCALIZE_TASKS:
        label = "Lung Opacity" if task == "Airspace Opacity" else task
        m = np.zeros(hw, bool)
        for d in ph.findings:
            if label in labels_of([d.name]):
                m |= d.mask
        out[task] = m
    return out


def _human(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible human reader's outline: grown or shrunk a little and shifted."""
    if not mask.any():
        return mask
    k = int(rng.integers(2, 9))
    ker = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    m = (cv2.dilate if rng.random() < 0.6 else cv2.erode)(mask.astype(np.uint8), ker)
    dx, dy = (int(v) for v in rng.integers(-6, 7, 2))
    m = np.roll(m, (dy, dx), (0, 1))
    return m.astype(bool) if m.any() else mask


def chexlocalize_item(root: str, seed: int, code: int, i: int, size: int, split: str,
                      patient: int) -> dict[str, Any]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, code, i]))
    names = sample_findings(rng, "chexlocalize")
    h = int(round(size * rng.uniform(1.05, 1.25) / 8) * 8)
    ph = make_chest(rng, h, size, load_anchors(), names)
    rel = Path("CheXpert") / split / f"patient{patient}" / "study1" / "view1_frontal.jpg"
    write(Path(root) / rel, jpeg_bytes(ph.image))
    cxr_id = f"patient{patient}_study1_view1_frontal"
    masks = _task_masks(ph, (h, size))
    present = labels_of(ph.names())
    csv_path = (f"CheXpert-v1.0/valid/patient{patient}/study1/view1_frontal.jpg"
                if split == "val" else f"test/patient{patient}/study1/view1_frontal.jpg")
    row = {"Path": csv_path, "Sex": "Unknown", "Age": "", "Frontal/Lateral": "Frontal",
           "AP/PA": ph.view}
    for c in CHEXPERT_CSV_COLS[5:]:
        row[c] = "1.0" if c in present else "0.0"
    row["No Finding"] = "0.0" if [n for n in ph.names() if n != "Support Devices"] else "1.0"
    seg = {t: coco_rle(m) for t, m in masks.items()}
    ann = {"img_size": [h, size]}
    ann.update({t: polygons(m) for t, m in masks.items() if m.any()})
    out = {"row": row, "cxr_id": cxr_id, "seg": seg, "ann": ann,
           "truth": truth_record(cxr_id, ph.findings, view=ph.view, path=str(rel))}
    if split == "test":
        hb = {t: _human(m, rng) for t, m in masks.items()}
        out["hb_seg"] = {t: coco_rle(m) for t, m in hb.items()}
        out["hb_ann"] = {"img_size": [h, size]}
        out["hb_ann"].update({t: polygons(m) for t, m in hb.items() if m.any()})
        pts = {}
        for t, m in hb.items():
            if m.any():
                dist = cv2.distanceTransform(m.astype(np.uint8), cv2.DIST_L2, 3)
                y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
                pts[t] = [[int(x), int(y)]]
        out["hb_pt"] = pts
    return out


def write_chexlocalize_tables(root: Path, items: list[dict[str, Any]], split: str) -> None:
    write(root / "CheXpert" / f"{split}_labels.csv",
          csv_bytes(CHEXPERT_CSV_COLS, [it["row"] for it in items]))
    folder = root / "CheXlocalize"
    write(folder / f"gt_segmentations_{split}.json",
          json_bytes({it["cxr_id"]: it["seg"] for it in items}))
    write(folder / f"gt_annotations_{split}.json",
          json_bytes({it["cxr_id"]: it["ann"] for it in items}))
    if split == "test":
        write(folder / "hb_segmentations_test.json",
              json_bytes({it["cxr_id"]: it["hb_seg"] for it in items}))
        write(folder / "hb_annotations_test.json",
              json_bytes({it["cxr_id"]: it["hb_ann"] for it in items}))
        write(folder / "hb_salient_pt_test.json",
              json_bytes({it["cxr_id"]: it["hb_pt"] for it in items}))
    write(root / f"SYNTHETIC_TRUTH_{split}.jsonl", jsonl_bytes([it["truth"] for it in items]))


def covid_item(root: str, seed: int, code: int, i: int, size: int) -> dict[str, Any]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, code, i]))
    h = int(round(size * rng.uniform(1.0, 1.2) / 8) * 8)
    ph = make_chest(rng, h, size, load_anchors(), sample_findings(rng, "covid"))
    name = f"synthetic_covid_{i:04d}"
    base = Path(root) / "covid_rural_annot"
    write(base / "jpgs" / f"{name}.jpg", jpeg_bytes(ph.image))
    cov = ph.get("COVID-19")
    mask = cov.mask if cov is not None else np.zeros((h, size), bool)
    write(base / "pngs_masks" / f"{name}.png", png_bytes(mask.astype(np.uint8) * 255))
    shapes = [{"label": "opacity", "points": p, "group_id": None, "shape_type": "polygon",
               "flags": {}} for p in polygons(mask)]
    labelme = {"version": "4.5.6", "flags": {}, "shapes": shapes,
               "imagePath": f"../{name}.jpg", "imageData": None, "imageHeight": h,
               "imageWidth": size}
    write(base / "jpgs" / "jsons" / f"{name}.json", json_bytes(labelme, indent=2))
    return {"truth": truth_record(name, ph.findings, view=ph.view)}


def write_covid_tables(root: Path, items: list[dict[str, Any]]) -> None:
    write(root / "SYNTHETIC_TRUTH.jsonl", jsonl_bytes([it["truth"] for it in items]))
    readme(root, "COVID Rural (covid_rural_annot/jpgs/*.jpg, jpgs/jsons/*.json LabelMe 4.5.6 "
           "polygons labelled 'opacity', pngs_masks/*.png)",
           "The opacity pattern is bilateral, peripheral and lower-zone (COVID-19-like); the "
           "synthetic MIMIC reports never call it COVID.\n")


def det10_item(root: str, seed: int, code: int, i: int, size: int, split: str) -> dict[str, Any]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, code, i]))
    ph = make_chest(rng, size, size, load_anchors(), sample_findings(rng, "det10"))
    name = f"synthetic_{split}_{i:05d}.png"
    write(Path(root) / f"{split}_data" / name, png_bytes(ph.image))
    syms, boxes = [], []
    for d in ph.findings:
        cls = DET10.get(d.name)
        if d.name == "Lung Lesion":
            cls = "Nodule" if d.attrs.get("kind") == "nodule" else "Mass"
        if cls is None:
            continue
        for inst in d.instances:
            for x, y, w, h in component_boxes(inst, min_area=9):
                syms.append(cls)
                boxes.append([int(x), int(y), int(x + w), int(y + h)])
    return {"entry": {"file_name": name, "syms": syms, "boxes": boxes},
            "truth": truth_record(name, ph.findings, view=ph.view)}


def write_det10_tables(root: Path, items: list[dict[str, Any]], split: str) -> None:
    write(root / f"{split}.json", json_bytes([it["entry"] for it in items]))
    write(root / f"SYNTHETIC_TRUTH_{split}.jsonl", jsonl_bytes([it["truth"] for it in items]))


def chexlocalize_csv_labels() -> tuple[str, ...]:
    return tuple(c for c in CHEXPERT_CSV_COLS[5:] if c in CHEXPERT_LABELS)
