"""MIMIC-CXR-JPG with MIMIC-CXR reports: the pretraining corpus (and study-level labels).

Layout (PhysioNet, v2.0.0 file names, gzipped or not)::

    root/mimic-cxr-2.0.0-metadata.csv.gz   dicom_id, subject_id, study_id, ViewPosition, ...
    root/mimic-cxr-2.0.0-split.csv.gz      dicom_id, study_id, subject_id, split
    root/mimic-cxr-2.0.0-chexpert.csv.gz   subject_id, study_id + 14 labels (1, 0, -1, blank)
    root/files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg
    reports: root/files/pXX/pSUBJECT/sSTUDY.txt, or root/mimic-cxr-reports/files/...,
             or root/mimic_cxr_sectioned.csv[.gz] (MIT-LCP's sectioned file)

Frontal images only by default (`views="PA,AP"`; `views="*"` keeps all), as AFLoc trains on
the Frontal view. Labels are study-level, joined on (subject_id, study_id): `labels` holds the
definite ones (1 -> 1, 0 -> 0); uncertain (-1) and unmentioned (blank) labels are left out and
kept raw in `meta["chexpert"]`. JPGs are never re-inverted. `exclude_ms_cxr=<MS-CXR json or
csv>` keeps MS-CXR out (AFLoc's `split_with_MS` column implies it is held out of pretraining):
by default every image of a study that holds an MS-CXR image, since the study's other views
carry the same report, whose sentences MS-CXR's phrases come from; `exclude_ms_cxr_by=image`
drops only MS-CXR's own dicom_ids. `bench train afloc` finds the MS-CXR file by itself.
`Sample.report` = FINDINGS then IMPRESSION (see `bench.report_text`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.datasets._util import (
    FileDataset,
    compare_counts,
    find_file,
    open_text,
    read_csv_rows,
    wrong_width,
)
from bench.datasets.base import CheckReport, Dataset
from bench.errors import DataError
from bench.registry import register_dataset
from bench.report_text import mimic_sections, report_text
from bench.types import CLASSIFICATION, PRETRAINING, Sample

CHEXPERT_LABELS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
    "Fracture", "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion",
    "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices",
)
METADATA = ("mimic-cxr-2.0.0-metadata.csv", "mimic-cxr-metadata.csv")
SPLIT = ("mimic-cxr-2.0.0-split.csv", "mimic-cxr-split.csv")
CHEXPERT = ("mimic-cxr-2.0.0-chexpert.csv", "mimic-cxr-chexpert.csv")
SECTIONED = ("mimic_cxr_sectioned.csv",)
LABEL_VALUES = {"1.0": 1.0, "1": 1.0, "0.0": 0.0, "0": 0.0, "-1.0": -1.0, "-1": -1.0,
                "": math.nan}


def ms_cxr_dicom_ids(path: Path) -> set[str]:
    """dicom_ids of MS-CXR (COCO json: image path stems; csv: the dicom_id column)."""
    if not path.is_file():
        raise DataError("missing MS-CXR file (exclude_ms_cxr)", path)
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return {Path(img["path"]).stem for img in data["images"]}
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"not an MS-CXR COCO json ({exc})", path) from exc
    _, rows = read_csv_rows(path, ["dicom_id"])
    return {row["dicom_id"] for _, row in rows if row.get("dicom_id")}


def find_ms_cxr_file() -> Path:
    """MS-CXR's annotation file in its configured data folder (`bench.data_paths`), to hold
    its studies out of pretraining; a UsageError that says how to choose otherwise."""
    from bench.data_paths import resolve_root
    from bench.datasets.ms_cxr import CSV_NAMES, JSON_NAMES, annotation_file
    from bench.errors import UsageError

    how = ("MS-CXR's images are MIMIC-CXR images and must be held out of AFLoc pretraining: "
           "pass --dataset-arg exclude_ms_cxr=/path/to/MS_CXR_Local_Alignment_v1.0.0.json "
           "(or its csv), or exclude_ms_cxr=none to train on every image")
    try:
        root = resolve_root("ms-cxr")
    except (UsageError, DataError) as exc:
        raise UsageError(f"{how} (no MS-CXR folder found: {exc})") from exc
    found = annotation_file(root)
    if found is not None:
        return found
    raise UsageError(f"{how} (none of {', '.join(JSON_NAMES + CSV_NAMES)} in {root})")


def study_path(root: Path, subject_id: str, study_id: str) -> Path:
    return root / "files" / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}"


@register_dataset("mimic-cxr")
class MimicCXR(FileDataset, Dataset):
    """MIMIC-CXR-JPG images with their reports' FINDINGS + IMPRESSION and CheXpert labels."""

    tasks = (PRETRAINING, CLASSIFICATION)
    holds_out_ms_cxr = True  # `bench train` fills exclude_ms_cxr (find_ms_cxr_file)
    pathologies = CHEXPERT_LABELS
    splits = ("train", "validate", "test", "all")
    default_split = "train"
    description = "MIMIC-CXR-JPG + reports (pretraining; study-level CheXpert labels)"
    expected_counts = {"all": {"images": 377110, "studies": 227835}}

    def __init__(self, root=None, split=None, on_error="raise", views: str = "PA,AP",
                 exclude_ms_cxr: str | None = None, exclude_ms_cxr_by: str = "study",
                 **options: Any):
        super().__init__(root, split, on_error, **options)
        self.require_root()
        self.views = None if views in ("*", "", None) else {v.strip().upper()
                                                             for v in str(views).split(",")}
        if exclude_ms_cxr_by not in ("study", "image"):
            raise DataError(f"exclude_ms_cxr_by must be study or image, not "
                            f"{exclude_ms_cxr_by!r}", self.root)
        self.exclude_by = exclude_ms_cxr_by
        self.exclude_path = (Path(exclude_ms_cxr) if exclude_ms_cxr
                             and str(exclude_ms_cxr).lower() != "none" else None)
        excluded = ms_cxr_dicom_ids(self.exclude_path) if self.exclude_path else set()
        self.meta_path = self.require_file(*METADATA)
        self.split_path = self.require_file(*SPLIT)
        self.chexpert_path = find_file(self.root, *CHEXPERT)
        self.sectioned_path = find_file(self.root, *SECTIONED)
        self.labels = self._read_labels() if self.chexpert_path else {}
        split_of = self._read_split()
        self.records: list[dict[str, str]] = []
        self.counts = {"images": 0, "excluded_view": 0, "excluded_ms_cxr": 0, "no_split": 0}
        header, rows = read_csv_rows(self.meta_path, ["dicom_id", "subject_id", "study_id",
                                                      "ViewPosition"])
        if excluded and self.exclude_by == "study":
            rows = list(rows)
            studies = {row.get("study_id") for _, row in rows if row.get("dicom_id") in excluded}
            excluded = excluded | {row["dicom_id"] for _, row in rows
                                   if row.get("study_id") in studies and row.get("dicom_id")}
        seen: set[str] = set()
        for line, row in rows:
            problem = wrong_width(row, header)
            dicom_id = row.get("dicom_id", "")
            if problem is None and not (dicom_id and row["subject_id"].isdigit()
                                        and row["study_id"].isdigit()):
                problem = "malformed ids (dicom_id, numeric subject_id and study_id expected)"
            if problem is None and dicom_id in seen:
                problem = f"duplicate dicom_id {dicom_id}"
            if problem is not None:
                self.bad(problem, self.meta_path, line, reason=problem.split(" (")[0])
                continue
            seen.add(dicom_id)
            self.counts["images"] += 1
            view = row["ViewPosition"].upper()
            if self.views is not None and view not in self.views:
                self.counts["excluded_view"] += 1
                continue
            if dicom_id in excluded:
                self.counts["excluded_ms_cxr"] += 1
                continue
            split = split_of.get(dicom_id)
            if split is None:
                self.counts["no_split"] += 1
                continue
            if self.split != "all" and split != self.split:
                continue
            self.records.append({"dicom_id": dicom_id, "subject_id": row["subject_id"],
                                 "study_id": row["study_id"], "view": view, "split": split})
        self._sectioned: dict[str, dict[str, str | None]] | None = None

    def _read_split(self) -> dict[str, str]:
        header, rows = read_csv_rows(self.split_path, ["dicom_id", "split"])
        out: dict[str, str] = {}
        for line, row in rows:
            problem = wrong_width(row, header)
            if problem is None and row["split"] not in ("train", "validate", "test"):
                problem = f"unknown split {row['split']!r}"
            if problem is None and row["dicom_id"] in out:
                problem = f"duplicate dicom_id {row['dicom_id']}"
            if problem is not None:
                self.bad(problem, self.split_path, line, reason=problem.split(" '")[0])
                continue
            out[row["dicom_id"]] = row["split"]
        return out

    def _read_labels(self) -> dict[tuple[str, str], dict[str, float]]:
        header, rows = read_csv_rows(self.chexpert_path, ["subject_id", "study_id"])
        unknown = [c for c in header if c not in ("subject_id", "study_id")
                   and c not in CHEXPERT_LABELS]
        if unknown:
            raise DataError(f"unknown pathology column(s) {', '.join(unknown)}",
                            self.chexpert_path, 1)
        out: dict[tuple[str, str], dict[str, float]] = {}
        for line, row in rows:
            problem = wrong_width(row, header)
            key = (row.get("subject_id", ""), row.get("study_id", ""))
            values: dict[str, float] = {}
            if problem is None:
                for name in CHEXPERT_LABELS:
                    v = row.get(name, "")
                    if v not in LABEL_VALUES:
                        problem = f"label {name} must be 1, 0, -1 or blank, got {v!r}"
                        break
                    values[name] = LABEL_VALUES[v]
            if problem is None and key in out:
                problem = f"duplicate study {key[1]} of subject {key[0]}"
            if problem is not None:
                self.bad(problem, self.chexpert_path, line, reason=problem.split(" must")[0])
                continue
            out[key] = values
        return out

    def input_files(self) -> list[Path]:
        files = [self.meta_path, self.split_path, self.chexpert_path, self.sectioned_path,
                 self.exclude_path]
        return [p for p in files if p is not None]

    def config(self) -> dict[str, Any]:
        return {"views": sorted(self.views) if self.views else "*",
                "exclude_ms_cxr": str(self.exclude_path) if self.exclude_path else None,
                "exclude_ms_cxr_by": self.exclude_by if self.exclude_path else None}

    # -- reports --------------------------------------------------------------------------
    def report_path(self, rec: dict[str, str]) -> Path | None:
        for base in (self.root, self.root / "mimic-cxr-reports"):
            p = study_path(base, rec["subject_id"], rec["study_id"]).with_suffix(".txt")
            if p.is_file():
                return p
        return None

    def sections(self, rec: dict[str, str]) -> dict[str, str | None] | None:
        p = self.report_path(rec)
        if p is not None:
            try:
                raw = p.read_bytes()
            except OSError as exc:
                raise DataError(f"unreadable report ({exc})", p) from exc
            try:
                return mimic_sections(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:  # never replacement characters in a caption
                bad = raw[exc.start:exc.start + 1].hex()
                raise DataError(f"report is not UTF-8 (byte 0x{bad} at offset {exc.start})",
                                p) from exc
        if self.sectioned_path is not None:
            return self._sectioned_table().get("s" + rec["study_id"])
        return None

    def _sectioned_table(self) -> dict[str, dict[str, str | None]]:
        if self._sectioned is None:
            import csv

            self._sectioned = {}
            try:
                with open_text(self.sectioned_path) as fh:
                    for row in csv.DictReader(fh):
                        self._sectioned[row["study"]] = {
                            k: (row.get(k) or None) for k in
                            ("impression", "findings", "last_paragraph", "comparison")}
            except (UnicodeDecodeError, csv.Error, KeyError, OSError) as exc:
                self._sectioned = None
                raise DataError(f"unreadable sectioned reports ({type(exc).__name__}: {exc})",
                                self.sectioned_path) from exc
        return self._sectioned

    # -- samples --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def image_path(self, rec: dict[str, str]) -> Path:
        return study_path(self.root, rec["subject_id"], rec["study_id"]) / f"{rec['dicom_id']}.jpg"

    def load(self, index: int) -> Sample | None:
        rec = self.records[index]
        path = self.image_path(rec)
        pixel_meta: dict = {}  # a DICOM's photometry, for the methods' readers
        image = self.decode(path, pixel_meta)
        if image is None:
            return None
        try:
            secs = self.sections(rec) or {}
        except DataError as exc:
            if self.on_error != "skip":
                raise
            reason = "report is not UTF-8" if "not UTF-8" in str(exc) else "unreadable report"
            self.skip(reason, str(exc))
            return None
        raw = self.labels.get((rec["subject_id"], rec["study_id"]), {})
        labels = {k: int(v) for k, v in raw.items() if v in (0.0, 1.0)}
        report = report_text(secs.get("findings"), secs.get("impression"),
                             secs.get("last_paragraph")) if secs else None
        return Sample(
            id=rec["dicom_id"], image=image, labels=labels, report=report or None,
            meta={**pixel_meta, "dicom_id": rec["dicom_id"], "subject_id": rec["subject_id"],
                  "study_id": rec["study_id"], "view": rec["view"], "split": rec["split"],
                  "path": str(path), "findings": secs.get("findings"),
                  "impression": secs.get("impression"), "chexpert": raw,
                  "hw": image.shape[:2]})

    def check(self) -> CheckReport:
        report = self.new_report()
        studies = {(r["subject_id"], r["study_id"]) for r in self.records}
        report.counts[self.split] = {"images": len(self.records), "studies": len(studies)}
        report.counts["metadata"] = dict(self.counts)
        compare_counts(report, "metadata", {"images": self.counts["images"]},
                       self.expected_counts.get("all", {}))
        if self.chexpert_path is None:
            report.notes.append("no chexpert.csv: samples carry no labels")
        else:
            unlabelled = sum(1 for s in studies if s not in self.labels)
            report.notes.append(f"{unlabelled} of {len(studies)} studies have no CheXpert row")
        no_report = []
        for r in self.records[:200]:
            try:
                if self.sections(r) is None:
                    no_report.append(r)
            except DataError as exc:  # a report that cannot be read is malformed input
                report.problems.append(str(exc))
        if no_report:
            report.missing.append(f"{len(no_report)} of the first {min(200, len(self.records))} "
                                  f"studies have no report (files/.../sSTUDY.txt or "
                                  f"mimic_cxr_sectioned.csv)")
        return self.finish_report(report, [self.image_path(r) for r in self.records])
