"""MIMIC-CXR-JPG tree (images, report .txt files, metadata/split/chexpert CSVs) and the MS-CXR
phrase-grounding files, whose images live in the same synthetic MIMIC tree (as in reality).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.synth.anchors import load_anchors
from bench.synth.chest import make_chest, sample_findings
from bench.synth.lexicon import CHEXPERT_LABELS, IMPLIES, is_negative, mentions
from bench.synth.reports import NEGATIVE, precise_phrase, write_report
from bench.synth.writers.common import (
    component_boxes,
    csv_bytes,
    dicom_id,
    gzip_bytes,
    jpeg_bytes,
    json_bytes,
    jsonl_bytes,
    readme,
    truth_record,
    write,
)

META_COLS = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription",
             "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime",
             "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
             "PatientOrientationCodeSequence_CodeMeaning"]
SPLIT_COLS = ["dicom_id", "study_id", "subject_id", "split"]
CHEXPERT_COLS = ["subject_id", "study_id", *CHEXPERT_LABELS]
MSCXR_CATEGORIES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Lung Opacity",
                    "Pleural Effusion", "Pneumonia", "Pneumothorax")
MSCXR_JSON = "MS_CXR_Local_Alignment_v1.0.0.json"
MSCXR_CSV = "MS_CXR_Local_Alignment_v1.0.0.csv"
MM_FIELD = 380.0  # a phantom's width spans ~38 cm of patient


def chexpert_row(drawn_names: list[str], hedged: set[str], report) -> dict[str, Any]:
    """Study labels as the CheXpert labeler would read this report: 1, -1, 0 or blank."""
    row: dict[str, Any] = {}
    for s in report.sentences:
        if s.polarity == NEGATIVE:
            for lab in mentions(s.text) & set(CHEXPERT_LABELS):
                row[lab] = "0.0"
    for n in drawn_names:
        for lab in IMPLIES.get(n, (n,)):
            if lab not in CHEXPERT_LABELS:
                continue
            if n in hedged:
                row.setdefault(lab, "-1.0")
                if row[lab] == "0.0":
                    row[lab] = "-1.0"
            else:
                row[lab] = "1.0"
    if not [n for n in drawn_names if n != "Support Devices"]:
        row["No Finding"] = "1.0"
    return row


def mimic_item(root: str, seed: int, code: int, i: int, size: int, profile: str,
               subject: int, study: int, split: str) -> dict[str, Any]:
    """One study (one frontal image + report) written into the MIMIC-CXR-JPG tree."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, code, i]))
    anchors = load_anchors()
    names = sample_findings(rng, profile)
    h = int(round(size * rng.uniform(1.0, 1.2) / 8) * 8)
    ph = make_chest(rng, h, size, anchors, names, n_opacities=int(rng.integers(1, 3)))
    rep, hedged = write_report(ph.findings, rng, anchors.sentences, MM_FIELD / size)
    did = dicom_id(seed, code, i)
    sub = str(subject)
    folder = Path(root) / "files" / f"p{sub[:2]}" / f"p{sub}"
    write(folder / f"s{study}" / f"{did}.jpg", jpeg_bytes(ph.image))
    write(folder / f"s{study}.txt", rep.mimic_text(ph.view))
    meta = {"dicom_id": did, "subject_id": subject, "study_id": study,
            "PerformedProcedureStepDescription": "CHEST (PA AND LAT)" if ph.view == "PA"
            else "CHEST (PORTABLE AP)", "ViewPosition": ph.view, "Rows": h, "Columns": size,
            "StudyDate": 21800101 + (i % 28), "StudyTime": f"{(i * 7919) % 240000:06d}.000",
            "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)" if ph.view == "PA"
            else "CHEST (PORTABLE AP)",
            "ViewCodeSequence_CodeMeaning": "postero-anterior" if ph.view == "PA"
            else "antero-posterior", "PatientOrientationCodeSequence_CodeMeaning": "Erect"}
    chex = {"subject_id": subject, "study_id": study, **chexpert_row(ph.names(), hedged, rep)}
    path = f"files/p{sub[:2]}/p{sub}/s{study}/{did}.jpg"
    anns = []
    for d in ph.findings if profile == "mscxr" else []:  # grounding boxes: MS-CXR images only
        if d.name not in MSCXR_CATEGORIES:
            continue
        phrase = precise_phrase(d, rng)
        for inst in d.instances:
            for box in component_boxes(inst, min_area=16):
                anns.append({"category": d.name, "label_text": phrase, "bbox": box})
    sentences = [{"text": s.text, "section": s.section, "polarity": s.polarity,
                  "finding": s.finding, "source": s.source} for s in rep.sentences]
    truth = truth_record(did, ph.findings, path=path, view=ph.view, ctr=ph.ctr,
                         hedged=sorted(hedged), sentences=sentences,
                         negated_ok=[s.text for s in rep.sentences
                                     if s.polarity == NEGATIVE and is_negative(s.text)])
    return {"meta": meta, "split": {"dicom_id": did, "study_id": study, "subject_id": subject,
                                     "split": split}, "chexpert": chex, "truth": truth,
            "path": path, "hw": [h, size], "anns": anns}


def write_mimic_tables(root: Path, items: list[dict[str, Any]]) -> None:
    """The three v2.0.0 CSVs (gzipped, mtime 0) and the truth sidecar."""
    write(root / "mimic-cxr-2.0.0-metadata.csv.gz",
          gzip_bytes(csv_bytes(META_COLS, [r["meta"] for r in items])))
    write(root / "mimic-cxr-2.0.0-split.csv.gz",
          gzip_bytes(csv_bytes(SPLIT_COLS, [r["split"] for r in items])))
    write(root / "mimic-cxr-2.0.0-chexpert.csv.gz",
          gzip_bytes(csv_bytes(CHEXPERT_COLS, [r["chexpert"] for r in items])))
    write(root / "SYNTHETIC_TRUTH.jsonl", jsonl_bytes([r["truth"] for r in items]))
    readme(root, "MIMIC-CXR-JPG v2.0.0 (files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg, sSTUDY.txt "
           "reports, metadata/split/chexpert CSVs)",
           "Studies with subject_id >= 19000000 are the synthetic MS-CXR images (split train, "
           "excluded from pretraining with exclude_ms_cxr).\n")


def write_mscxr(root: Path, items: list[dict[str, Any]]) -> None:
    """MS-CXR v1.0.0 COCO JSON + CSV (boxes x, y, w, h in original pixels)."""
    cats = [{"id": k + 1, "name": n, "supercategory": "finding"}
            for k, n in enumerate(MSCXR_CATEGORIES)]
    cat_id = {c["name"]: c["id"] for c in cats}
    images, anns, rows = [], [], []
    for k, it in enumerate(items):
        h, w = it["hw"]
        did = it["meta"]["dicom_id"]
        images.append({"id": k + 1, "file_name": f"{did}.jpg", "width": w, "height": h,
                       "path": it["path"]})
        for a in it["anns"]:
            x, y, bw, bh = a["bbox"]
            anns.append({"id": len(anns) + 1, "image_id": k + 1,
                         "category_id": cat_id[a["category"]], "bbox": [x, y, bw, bh],
                         "area": bw * bh, "iscrowd": 0, "width": w, "height": h,
                         "label_text": a["label_text"]})
            rows.append({"dicom_id": did, "category_name": a["category"],
                         "label_text": a["label_text"], "path": it["path"], "x": x, "y": y,
                         "w": bw, "h": bh, "image_width": w, "image_height": h})
    coco = {"info": {"description": "SYNTHETIC MS-CXR-like phrase grounding (afloc-bench)",
                     "version": "1.0.0-synthetic"},
            "images": images, "annotations": anns, "categories": cats}
    write(root / MSCXR_JSON, json_bytes(coco))
    cols = ["dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h",
            "image_width", "image_height"]
    write(root / MSCXR_CSV, csv_bytes(cols, rows))
    write(root / "SYNTHETIC_TRUTH.jsonl", jsonl_bytes([r["truth"] for r in items]))
    readme(root, "MS-CXR v1.0.0 (COCO json + csv); images are in ../mimic-cxr-jpg/files")
