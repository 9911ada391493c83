"""RSNA Pneumonia Detection Challenge (Kaggle stage 2), as downloaded.

Layout::

    root/stage_2_train_labels.csv            patientId,x,y,width,height,Target (.gz/.zip ok)
    root/stage_2_train_images/<patientId>.dcm   1024 x 1024, 8-bit MONOCHROME2 (JPEG baseline)

One row per box (x, y = top-left, width, height in the 1024 frame; floats such as 264.0), one
row with empty coordinates per negative image. All views are kept.

Splits:
- `test`: the MedKLIP/AFLoc zero-shot grounding list (5,337 images, 1,218 positive; package
  data `splits/rsna_grounding_test_medklip.csv`, or `split_list=<csv>` in the same schema; a
  `grounding_test.csv` in the root folder, AFLoc's name for it, is used when present).
  Boxes come from the list, as AFLoc reads them (each coordinate truncated to an int before
  the 1024 -> 224 mapping; the shipped list holds whole numbers). AFLoc localizes only
  `classes == 1`:
  negatives have no findings here, so the localization task sees exactly the positives, while
  the classification task still gets every image's label.
- `gloria-train|val|test`: GLoRIA's `preprocess_pneumonia_data`: images grouped per
  patientId (sorted, as pandas groupby does), `train_test_split(test_size=0.3,
  random_state=0)`, then the held-out part halved (first half test, second val). The split is
  drawn over every patientId of the file, bad rows' included, so a skipped row drops its own
  image and moves no other (a bad row without a patientId is an error for these splits).
- `all`: every labelled image.

Option `positives_only=true` drops images without a box (saves decoding in localization runs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from bench.datasets._util import (
    FileDataset,
    SplitUniverse,
    as_bool,
    cached_parse,
    compare_counts,
    read_csv_rows,
    stable_gloria_split,
    wrong_width,
)
from bench.datasets.base import CheckReport, Dataset
from bench.errors import DataError
from bench.imaging.masks import box_problem, boxes_to_mask
from bench.registry import register_dataset
from bench.types import CLASSIFICATION, LOCALIZATION, Finding, Sample

LABELS_CSV = "stage_2_train_labels.csv"
IMAGE_DIR = "stage_2_train_images"
FRAME_HW = (1024, 1024)  # the frame the boxes are given in
PATHOLOGY = "Pneumonia"


@dataclass
class RsnaImage:
    patient_id: str
    target: int
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    line: int = 0


def parse_labels(path: Path, on_bad) -> tuple[dict[str, RsnaImage], dict[str, int],
                                             SplitUniverse]:
    """stage_2_train_labels.csv -> patientId -> image (boxes in file order), row counts, and the
    sorted patientIds of every row (bad ones included) that the gloria-* splits are drawn over.

    `on_bad(message, path, row, reason)` raises or counts; a bad row drops its whole image
    (its ground truth would be incomplete).
    """
    header, rows = read_csv_rows(path, ["patientId", "x", "y", "width", "height", "Target"])
    images: dict[str, RsnaImage] = {}
    bad_ids: set[str] = set()
    seen_rows: set[tuple] = set()
    all_ids: set[str] = set()
    unplaced: list[tuple[Path, int]] = []
    n_rows = 0
    for line, row in rows:
        n_rows += 1
        if row.get("patientId"):
            all_ids.add(row["patientId"])
        problem = wrong_width(row, header)
        pid = row.get("patientId", "")
        if problem is None and not pid:
            problem = "empty patientId"
        target = row.get("Target", "")
        if problem is None and target not in ("0", "1"):
            problem = f"Target must be 0 or 1, got {target!r}"
        coords = [row.get(k, "") for k in ("x", "y", "width", "height")] if problem is None else []
        box = None
        if problem is None and target == "1":
            try:
                box = tuple(float(v) for v in coords)
            except ValueError:
                problem = f"non-numeric box {coords}"
            else:
                problem = box_problem(box, FRAME_HW)
        elif problem is None and any(coords):
            problem = "negative row (Target 0) with box coordinates"
        key = (pid, target, box)
        if problem is None and key in seen_rows:
            problem = f"duplicate row for patientId {pid}"
        if problem is None and pid in images and images[pid].target != int(target):
            problem = f"patientId {pid} is both positive and negative"
        if problem is not None:
            on_bad(problem, path, line, problem.split(" (")[0].split(" x=")[0])
            if pid:
                bad_ids.add(pid)
            else:
                unplaced.append((path, line))
            continue
        seen_rows.add(key)
        img = images.setdefault(pid, RsnaImage(pid, int(target), line=line))
        if box is not None:
            img.boxes.append(box)
    for pid in bad_ids:
        images.pop(pid, None)
    return images, {"rows": n_rows}, SplitUniverse(sorted(all_ids), unplaced,
                                                          "patientId")


def parse_split_list(path: Path, on_bad) -> list[RsnaImage]:
    """The grounding list: patientId, sop_instance_uid, boxes_xywh ('x;y;w;h|...'), label."""
    header, rows = read_csv_rows(path, ["patientId", "boxes_xywh", "label"])
    out: list[RsnaImage] = []
    seen: set[str] = set()
    for line, row in rows:
        problem = wrong_width(row, header)
        pid = row.get("patientId", "")
        boxes: list[tuple[float, ...]] = []
        label = row.get("label", "")
        if problem is None and label not in ("0", "1"):
            problem = f"label must be 0 or 1, got {label!r}"
        if problem is None and pid in seen:
            problem = f"duplicate patientId {pid}"
        if problem is None and row["boxes_xywh"]:
            for part in row["boxes_xywh"].split("|"):
                try:  # `int(float(v))`: load_rsna_grounding truncates before mapping
                    box = tuple(float(int(float(v))) for v in part.split(";"))
                    if len(box) != 4:
                        raise ValueError
                except ValueError:
                    problem = f"malformed box {part!r} (expected x;y;w;h)"
                    break
                problem = box_problem(box, FRAME_HW)
                if problem:
                    break
                boxes.append(box)
        if problem is None and (label == "1") != bool(boxes):
            problem = f"label {label} disagrees with {len(boxes)} box(es)"
        if problem is not None:
            on_bad(problem, path, line, problem.split(" (")[0].split(" x=")[0])
            continue
        seen.add(pid)
        out.append(RsnaImage(pid, int(label), list(boxes), line))
    return out


GROUNDING_CSV = "grounding_test.csv"


def default_split_list() -> Path:
    return Path(str(resources.files("bench.datasets") / "splits" /
                    "rsna_grounding_test_medklip.csv"))


@register_dataset("rsna")
class RSNA(FileDataset, Dataset):
    """RSNA Pneumonia: boxes for localization (test = MedKLIP/AFLoc grounding list) and labels."""

    tasks = (LOCALIZATION, CLASSIFICATION)
    pathologies = (PATHOLOGY,)
    splits = ("test", "gloria-train", "gloria-val", "gloria-test", "all")
    default_split = "test"
    description = "RSNA Pneumonia Detection Challenge (stage 2 train labels + DICOMs)"
    expected_counts = {
        "all": {"rows": 30227, "images": 26684, "positive": 6012, "boxes": 9555},
        "test": {"images": 5337, "positive": 1218, "boxes": 1947},
        "gloria-train": {"images": 18678},
        "gloria-val": {"images": 4003},
        "gloria-test": {"images": 4003},
    }

    def __init__(self, root=None, split=None, on_error="raise", split_list=None,
                 extension: str = ".dcm", image_dir: str = IMAGE_DIR,
                 positives_only: bool | str = False, **options: Any):
        super().__init__(root, split, on_error, **options)
        self.require_root()
        self.extension = extension if extension.startswith(".") else "." + extension
        self.image_dir = self.root / image_dir
        self.positives_only = as_bool(positives_only)
        self.labels_path = self.require_file(LABELS_CSV)
        self.split_list = Path(split_list) if split_list else self.default_split_list()
        self.images, self.row_counts, self.universe = cached_parse(self.labels_path,
                                                                   parse_labels, self.bad)
        self.index = self._select(self.split)
        if self.positives_only:
            self.index = [r for r in self.index if r.target]

    def default_split_list(self) -> Path:
        """The folder's own `grounding_test.csv` (AFLoc's file name; the synthetic world writes
        one) when it has one, else the packaged MedKLIP/AFLoc list."""
        own = self.root / GROUNDING_CSV
        return own if own.is_file() else default_split_list()

    def _select(self, split: str, on_bad=None) -> list[RsnaImage]:
        on_bad = on_bad or self.bad
        if split == "all":
            return list(self.images.values())
        if split.startswith("gloria-"):
            ids = stable_gloria_split(self.universe, split.split("-", 1)[1], self.images)
            return [self.images[i] for i in ids]
        if not self.split_list.is_file():
            raise DataError("missing split list", self.split_list)
        listed = parse_split_list(self.split_list, on_bad)
        out = []
        for rec in listed:
            if rec.patient_id not in self.images:
                on_bad(f"patientId {rec.patient_id} is not in {self.labels_path.name}",
                       self.split_list, rec.line, "split-list id not in labels")
                continue
            out.append(rec)
        return out

    def input_files(self) -> list[Path]:
        return [self.labels_path] + ([self.split_list] if self.split == "test" else [])

    def config(self) -> dict[str, Any]:
        return {"split_list": str(self.split_list) if self.split == "test" else None,
                "extension": self.extension, "positives_only": self.positives_only}

    def __len__(self) -> int:
        return len(self.index)

    def image_path(self, rec: RsnaImage) -> Path:
        return self.image_dir / (rec.patient_id + self.extension)

    def load(self, index: int) -> Sample | None:
        rec = self.index[index]
        path = self.image_path(rec)
        pixel_meta: dict = {}  # a DICOM's photometry, for the methods' readers
        image = self.decode(path, pixel_meta)
        if image is None:
            return None
        hw = image.shape[:2]
        findings = []
        if rec.target:
            boxes = np.asarray(rec.boxes, dtype=np.float64).reshape(-1, 4)
            if tuple(hw) != FRAME_HW:  # a resized copy: carry the 1024-frame boxes over
                sx, sy = hw[1] / FRAME_HW[1], hw[0] / FRAME_HW[0]
                boxes = boxes * np.array([sx, sy, sx, sy])
            for orig, box in zip(rec.boxes, boxes):
                problem = box_problem(box, hw)
                if problem:  # it would be an empty ground truth (IoU NaN, silently dropped)
                    source = self.split_list if self.split == "test" else self.labels_path
                    where = f"{list(orig)} of {source.name} row {rec.line}"
                    self.bad(f"box {where} fills no pixel of the decoded {hw[1]}x{hw[0]} "
                             f"image ({problem})", path,
                             reason="box fills no pixel of the decoded image")
                    return None
            findings.append(Finding(PATHOLOGY, f"{rec.patient_id}:pneumonia",
                                    mask=boxes_to_mask(boxes, hw), boxes=boxes))
        return Sample(id=rec.patient_id, image=image, findings=findings,
                      labels={PATHOLOGY: rec.target},
                      meta={**pixel_meta, "split": self.split, "path": str(path), "hw": hw,
                            "patient_id": rec.patient_id})

    # -- check ----------------------------------------------------------------------------
    def split_counts(self, records: list[RsnaImage]) -> dict[str, int]:
        return {"images": len(records), "positive": sum(r.target for r in records),
                "boxes": sum(len(r.boxes) for r in records)}

    def check(self) -> CheckReport:
        report = self.new_report()
        all_counts = dict(self.row_counts, **self.split_counts(list(self.images.values())))
        report.counts["all"] = all_counts
        compare_counts(report, "all", all_counts, self.expected_counts.get("all", {}))
        for split in self.splits[:-1]:
            if split == self.split:
                records = self.index  # problems of the checked split were raised or counted
            else:  # other splits: their problems are notes, not reasons to reject this one
                seen: list[str] = []

                def note(m, p, r, reason, seen=seen):
                    seen.append(f"{p}, row {r}: {m}")

                try:
                    records = self._select(split, note)
                except DataError as exc:
                    report.notes.append(f"split {split}: {exc}")
                    continue
                if seen:
                    report.notes.append(f"split {split}: {len(seen)} bad row(s), e.g. {seen[0]}")
            counts = self.split_counts(records)
            report.counts[split] = counts
            compare_counts(report, split, counts, self.expected_counts.get(split, {}))
        if self.split == "test":
            self._check_list_boxes(report)
        if self.image_dir.is_dir():
            on_disk = {e.name[:-len(self.extension)] for e in os.scandir(self.image_dir)
                       if e.name.endswith(self.extension)}
            extra = sorted(on_disk - set(self.images))
            if extra:
                report.notes.append(f"{len(extra)} files in {self.image_dir.name}/ have no row "
                                    f"in {self.labels_path.name} (e.g. {extra[0]})")
        return self.finish_report(report, [self.image_path(r) for r in self.index])

    def _check_list_boxes(self, report: CheckReport) -> None:
        """The grounding list's boxes should be the labels file's boxes for the same image."""
        differ = [r.patient_id for r in self.index
                  if sorted(r.boxes) != sorted(self.images[r.patient_id].boxes)]
        if differ:
            report.notes.append(f"{len(differ)} images of the split list have boxes that "
                                f"differ from {self.labels_path.name} (e.g. {differ[0]}); "
                                f"the list's boxes are used, as AFLoc does")
