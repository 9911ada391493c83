"""RSNA Pneumonia (stage_2_train_labels.csv + DICOMs + a grounding split list) and SIIM-ACR
Pneumothorax (train-rle.csv in the relative column-major RLE + Study/Series/SOP DICOM tree).
Both are written at 1024 x 1024, the frame their boxes and RLE are defined in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench.synth.anchors import encode_relative_rle, load_anchors
from bench.synth.chest import make_chest, sample_findings
from bench.synth.writers.common import (
    csv_bytes,
    jsonl_bytes,
    mask_box,
    patient_uuid,
    readme,
    truth_record,
    uid,
    write,
    write_dicom,
)

FRAME = 1024


def _fmt(v: float) -> str:
    return f"{float(v):.1f}"


def rsna_item(root: str, seed: int, code: int, i: int) -> dict[str, Any]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, code, i]))
    anchors = load_anchors()
    names = sample_findings(rng, "rsna")
    n_boxes = 0
    if rng.random() < 0.35:  # RSNA: ~22% positive overall, enriched here for localization
        per = anchors.rsna_boxes_per_image
        n_boxes = int(min(per[rng.integers(len(per))], 3))
        names = ["Pneumonia", *names]
    ph = make_chest(rng, FRAME, FRAME, anchors, names, n_opacities=max(n_boxes, 1))
    pid = patient_uuid(seed, code, i)
    sop, study, series = uid(seed, code, i, "sop"), uid(seed, code, i, "st"), uid(seed, code,
                                                                                  i, "se")
    write_dicom(Path(root) / "stage_2_train_images" / f"{pid}.dcm", ph.image, patient_id=pid,
                study_uid=study, series_uid=series, sop_uid=sop, view=ph.view)
    pn = ph.get("Pneumonia")
    boxes = [mask_box(m) for m in pn.instances] if pn is not None else []
    rows = ([{"patientId": pid, "x": _fmt(b[0]), "y": _fmt(b[1]), "width": _fmt(b[2]),
              "height": _fmt(b[3]), "Target": 1} for b in boxes]
            or [{"patientId": pid, "x": "", "y": "", "width": "", "height": "", "Target": 0}])
    cls = ("Lung Opacity" if boxes else
           "No Lung Opacity / Not Normal" if ph.findings else "Normal")
    split_row = {"patientId": pid, "sop_instance_uid": sop,
                 "boxes_xywh": "|".join(";".join(_fmt(v) for v in b) for b in boxes),
                 "label": 1 if boxes else 0}
    return {"rows": rows, "class": {"patientId": pid, "class": cls}, "split": split_row,
            "truth": truth_record(pid, ph.findings, view=ph.view, boxes=boxes)}


def write_rsna_tables(root: Path, items: list[dict[str, Any]]) -> None:
    write(root / "stage_2_train_labels.csv",
          csv_bytes(["patientId", "x", "y", "width", "height", "Target"],
                    [r for it in items for r in it["rows"]]))
    write(root / "stage_2_detailed_class_info.csv",
          csv_bytes(["patientId", "class"], [it["class"] for it in items]))
    write(root / "grounding_test.csv",
          csv_bytes(["patientId", "sop_instance_uid", "boxes_xywh", "label"],
                    [it["split"] for it in items]))
    write(root / "SYNTHETIC_TRUTH.jsonl", jsonl_bytes([it["truth"] for it in items]))
    readme(root, "RSNA Pneumonia stage 2 (stage_2_train_labels.csv, stage_2_train_images/"
           "<patientId>.dcm, 8-bit MONOCHROME2 JPEG-baseline 1024x1024)",
           "grounding_test.csv: every synthetic image in the MedKLIP/AFLoc grounding-list "
           "schema (patientId, sop_instance_uid, boxes_xywh 'x;y;w;h|...', label); pass it as "
           "split_list.\n")


def siim_item(root: str, seed: int, code: int, i: int) -> dict[str, Any]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, code, i]))
    anchors = load_anchors()
    names = sample_findings(rng, "siim")
    ph = make_chest(rng, FRAME, FRAME, anchors, names)
    study, series, sop = (uid(seed, code, i, "st"), uid(seed, code, i, "se"),
                          uid(seed, code, i, "sop"))
    write_dicom(Path(root) / "dicom-images-train" / study / series / f"{sop}.dcm", ph.image,
                patient_id=patient_uuid(seed, code, i), study_uid=study, series_uid=series,
                sop_uid=sop, view=ph.view)
    ptx = ph.get("Pneumothorax")
    rles = []
    if ptx is not None:  # one row per instance = connected component, as annotated
        n, lab = cv2.connectedComponents(ptx.mask.astype(np.uint8), connectivity=8)
        rles = [encode_relative_rle(lab == k) for k in range(1, n)]
    rows = [f"{sop}, {r}" for r in rles] or [f"{sop}, -1"]
    return {"rows": rows, "truth": truth_record(sop, ph.findings, view=ph.view,
                                                path=f"dicom-images-train/{study}/{series}/"
                                                     f"{sop}.dcm")}


def write_siim_tables(root: Path, items: list[dict[str, Any]]) -> None:
    lines = ["ImageId, EncodedPixels"] + [r for it in items for r in it["rows"]]
    write(root / "train-rle.csv", "\n".join(lines) + "\n")
    write(root / "SYNTHETIC_TRUTH.jsonl", jsonl_bytes([it["truth"] for it in items]))
    readme(root, "SIIM-ACR Pneumothorax (train-rle.csv 'ImageId, EncodedPixels', relative "
           "column-major RLE, -1 negatives, one row per instance; dicom-images-train/"
           "<Study>/<Series>/<SOP>.dcm)")
