"""CheXlocalize (Stanford AIMI): CheXpert val/test images with segmentation ground truth.

Layout::

    root/CheXpert/{val,test}/patientX/studyN/viewN_frontal.jpg
    root/CheXpert/{val,test}_labels.csv              CheXpert labels ("Lung Opacity")
    root/CheXlocalize/gt_segmentations_{val,test}.json  cxr_id -> task -> COCO RLE
                                                      {"size": [h, w], "counts": str}
    root/CheXlocalize/gt_annotations_{val,test}.json    cxr_id -> {"img_size": [h, w],
                                                      task: [[[x, y], ...], ...]}
    root/CheXlocalize/hb_segmentations_test.json, hb_annotations_test.json,
                      hb_salient_pt_test.json           human benchmark (test split)

cxr_id = the last three path parts joined by '_' without extension
(`patient64541_study1_view1_frontal`), as CheXlocalize and AFLoc build it. Images are found by
walking `CheXpert/<split>/` (AFLoc's loader does the same). Every image gets ten findings, one
per task in the JSON's naming ("Airspace Opacity"; the CSV's "Lung Opacity" is its alias);
`positive` = the mask is non-empty; images absent from the JSON get ten negatives (all-zero
masks), as AFLoc does. Classification labels are AFLoc's too, `mask.sum() > 0` per task
(`labels="masks"`); `labels="csv"` reads CheXpert's radiologist labels from `{split}_labels.csv`
(1 -> 1, 0 -> 0; uncertain and blank left out; a CXR it lacks falls back to its masks).
A malformed entry (not an object, an unknown task name, a bad RLE or polygon) or a bad row of
the labels CSV is an error, or with `on_error="skip"` a counted skip of that whole CXR: never a
negative finding or a label taken from elsewhere.
`masks="annotations"` rasterises the polygons with CheXlocalize's rule instead of decoding the
RLE file. The human benchmark is exposed through `hb_masks(cxr_id)` and `hb_points(cxr_id)`
for a `human` method.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.datasets._util import (
    FileDataset,
    compare_counts,
    read_csv_rows,
    read_json,
    wrong_width,
)
from bench.datasets.base import CheckReport, Dataset
from bench.errors import DataError
from bench.imaging.masks import coco_rle_to_mask, polygon_problem, polygons_to_mask
from bench.registry import register_dataset
from bench.types import CLASSIFICATION, LOCALIZATION, Finding, Sample

TASKS = ("Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Airspace Opacity",
         "Edema", "Consolidation", "Atelectasis", "Pneumothorax", "Pleural Effusion",
         "Support Devices")
CSV_ALIASES = {"Lung Opacity": "Airspace Opacity"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def cxr_id_of(path: Path) -> str:
    parts = Path(path).with_suffix("").parts[-3:]
    return "_".join(parts)


def load_json(path: Path) -> dict:
    return read_json(path, dict, "an object keyed by cxr_id")


class HumanBenchmark:
    """The radiologist benchmark files of the test split, read lazily."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._seg: dict | None = None
        self._pts: dict | None = None

    def available(self) -> bool:
        return (self.folder / "hb_segmentations_test.json").is_file()

    def masks(self, cxr_id: str) -> dict[str, np.ndarray]:
        """task -> the human benchmark's binary mask (original frame) for one CXR."""
        if self._seg is None:
            self._seg = load_json(self.folder / "hb_segmentations_test.json")
        out = {}
        for task, rle in self._seg.get(cxr_id, {}).items():
            try:
                out[task] = coco_rle_to_mask(rle)
            except ValueError as exc:
                raise DataError(str(exc), self.folder / "hb_segmentations_test.json",
                                f"{cxr_id}/{task}") from exc
        return out

    def points(self, cxr_id: str) -> dict[str, Any]:
        """task -> the human benchmark's most salient point(s), as stored in the file."""
        if self._pts is None:
            self._pts = load_json(self.folder / "hb_salient_pt_test.json")
        return dict(self._pts.get(cxr_id, {}))


@register_dataset("chexlocalize")
class CheXlocalize(FileDataset, Dataset):
    """CheXlocalize: ten pathologies per CXR, segmentation masks on CheXpert val/test."""

    tasks = (LOCALIZATION, CLASSIFICATION)
    pathologies = TASKS
    splits = ("test", "val")
    default_split = "test"
    description = "CheXlocalize segmentations on CheXpert val/test"
    expected_counts = {"val": {"images": 234, "images_with_positive": 187, "positives": 643},
                       "test": {"images": 668}}

    def __init__(self, root=None, split=None, on_error="raise", masks: str = "segmentations",
                 labels: str = "masks", **options: Any):
        super().__init__(root, split, on_error, **options)
        self.require_root()
        if masks not in ("segmentations", "annotations"):
            raise DataError(f"masks must be 'segmentations' or 'annotations', got {masks!r}")
        self.mask_source = masks
        if labels not in ("masks", "csv"):
            raise DataError(f"labels must be 'masks' or 'csv', got {labels!r}")
        self.label_source = labels
        self.image_dir = self.root / "CheXpert" / self.split
        self.gt_dir = self.root / "CheXlocalize"
        name = "gt_segmentations" if masks == "segmentations" else "gt_annotations"
        self.gt_path = self.gt_dir / f"{name}_{self.split}.json"
        self.bad_ids: set[str] = set()  # CXRs skipped whole for a malformed entry or row
        self.gt = self._validate(load_json(self.gt_path))
        if not self.image_dir.is_dir():
            raise DataError("missing image folder", self.image_dir)
        self.labels_csv = self.root / "CheXpert" / f"{self.split}_labels.csv"
        if labels == "csv" and not self.labels_csv.is_file():
            raise DataError("labels=csv needs the CheXpert labels file", self.labels_csv)
        self.csv_labels = self._read_labels() if labels == "csv" else {}
        self.paths = sorted(p for p in self.image_dir.rglob("*")
                            if p.suffix.lower() in IMAGE_SUFFIXES
                            and cxr_id_of(p) not in self.bad_ids)
        self.ids = [cxr_id_of(p) for p in self.paths]
        self.human = HumanBenchmark(self.gt_dir)

    def config(self) -> dict[str, Any]:
        return {"masks": self.mask_source, "labels": self.label_source}

    def input_files(self) -> list[Path]:
        hb = [self.gt_dir / f"hb_{k}_test.json" for k in ("segmentations", "salient_pt")]
        return ([self.gt_path] + ([self.labels_csv] if self.label_source == "csv" else [])
                + ([p for p in hb if p.is_file()] if self.split == "test" else []))

    # -- parsing --------------------------------------------------------------------------
    def _validate(self, data: dict) -> dict:
        """Raise on a malformed entry, or (skipping) drop its whole CXR: a task left out would
        read as a negative. Unknown task names count as malformed (a misspelt task)."""
        clean: dict[str, dict] = {}
        for cxr_id, entry in data.items():
            if not isinstance(entry, dict):
                self.bad("entry is not an object", self.gt_path, cxr_id, reason="malformed entry")
                self.bad_ids.add(cxr_id)
                continue
            for task, value in entry.items():
                if task == "img_size":
                    continue
                where = f"{cxr_id}/{task}"
                if task not in TASKS:
                    problem, reason = f"unknown pathology {task!r}", "unknown pathology"
                else:
                    problem = self._entry_problem(value, entry.get("img_size"))
                    reason = (problem or "").split(" (")[0]
                if problem:
                    self.bad(problem, self.gt_path, where, reason=reason)
                    self.bad_ids.add(cxr_id)
                    break  # one problem skips the CXR: count it once
            else:
                clean[cxr_id] = dict(entry)
        return clean

    def _entry_problem(self, value: Any, img_size: Any) -> str | None:
        if self.mask_source == "segmentations":
            if not isinstance(value, dict) or "size" not in value or "counts" not in value:
                return "malformed RLE (needs size and counts)"
            return None
        if not isinstance(img_size, list) or len(img_size) != 2:
            return "missing img_size"
        if not isinstance(value, list):
            return "malformed polygons (expected a list of contours)"
        for poly in value:
            problem = polygon_problem(poly, tuple(img_size))
            if problem:
                return problem
        return None

    def _read_labels(self) -> dict[str, dict[str, int]]:
        header, rows = read_csv_rows(self.labels_csv, ["Path"])
        out: dict[str, dict[str, int]] = {}
        cols = {c: CSV_ALIASES.get(c, c) for c in header if CSV_ALIASES.get(c, c) in TASKS}
        for line, row in rows:
            problem = wrong_width(row, header)
            cxr_id = cxr_id_of(Path(row["Path"])) if row.get("Path") else None
            if problem is None and cxr_id in out:
                problem = f"duplicate image {row['Path']}"
            labels = {}
            if problem is None:
                for col, task in cols.items():
                    v = row[col]
                    if v in ("1", "1.0"):
                        labels[task] = 1
                    elif v in ("0", "0.0"):
                        labels[task] = 0
                    elif v not in ("", "-1", "-1.0"):
                        problem = f"label {col} must be 1, 0, -1 or blank, got {v!r}"
                        break
            if problem is not None:
                self.bad(problem, self.labels_csv, line, reason=problem.split(" must")[0])
                if cxr_id:  # its labels are unknown: never fall back to the masks
                    self.bad_ids.add(cxr_id)
                continue
            out[cxr_id] = labels
        return out

    # -- masks ----------------------------------------------------------------------------
    def gt_masks(self, cxr_id: str, hw: tuple[int, int]) -> dict[str, np.ndarray]:
        """task -> GT mask at the image's resolution (tasks absent from the JSON left out)."""
        entry = self.gt.get(cxr_id, {})
        out = {}
        for task in TASKS:
            if task not in entry:
                continue
            where = f"{cxr_id}/{task}"
            if self.mask_source == "segmentations":
                try:
                    m = coco_rle_to_mask(entry[task])
                except ValueError as exc:
                    raise DataError(str(exc), self.gt_path, where) from exc
            else:
                m = polygons_to_mask(entry[task], tuple(entry["img_size"]))
            if m.shape != tuple(hw):
                raise DataError(f"mask is {m.shape[1]}x{m.shape[0]}, image is {hw[1]}x{hw[0]}",
                                self.gt_path, where)
            out[task] = m
        return out

    def hb_masks(self, cxr_id: str) -> dict[str, np.ndarray]:
        return self.human.masks(cxr_id)

    def hb_points(self, cxr_id: str) -> dict[str, Any]:
        return self.human.points(cxr_id)

    # -- samples --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Sample | None:
        path, cxr_id = self.paths[index], self.ids[index]
        pixel_meta: dict = {}  # a DICOM's photometry, for the methods' readers
        image = self.decode(path, pixel_meta)
        if image is None:
            return None
        hw = tuple(image.shape[:2])
        try:
            masks = self.gt_masks(cxr_id, hw)
        except DataError as exc:
            if self.on_error == "skip":
                self.skip("undecodable ground truth", str(exc))
                return None
            raise
        zeros = np.zeros(hw, dtype=np.uint8)
        zeros.setflags(write=False)  # one shared read-only array for every negative
        findings = []
        for task in TASKS:
            m = masks.get(task)
            positive = m is not None and bool(m.any())
            findings.append(Finding(task, f"{cxr_id}:{task}", mask=m if positive else zeros,
                                    positive=positive))
        labels = self.csv_labels.get(cxr_id) if self.label_source == "csv" else None
        if labels is None:  # AFLoc's rule (also for a CXR the CSV does not list)
            labels = {f.pathology: int(f.positive) for f in findings}
        return Sample(id=cxr_id, image=image, findings=findings, labels=dict(labels),
                      meta={**pixel_meta, "split": self.split, "path": str(path), "hw": hw,
                            "cxr_id": cxr_id, "in_gt": cxr_id in self.gt})

    def check(self) -> CheckReport:
        report = self.new_report()
        ids = set(self.ids)
        in_json = set(self.gt)
        positives = 0
        with_pos = 0
        for cxr_id in in_json:
            n = 0
            for task in TASKS:
                v = self.gt[cxr_id].get(task)
                if v is None:
                    continue
                if self.mask_source == "segmentations":
                    try:
                        n += bool(coco_rle_to_mask(v).any())
                    except ValueError as exc:
                        report.problems.append(f"{self.gt_path}, row {cxr_id}/{task}: {exc}")
                else:
                    n += bool(v)
            positives += n
            with_pos += n > 0
        counts = {"images": len(self.paths), "images_in_json": len(in_json),
                  "images_with_positive": with_pos, "positives": positives}
        report.counts[self.split] = counts
        compare_counts(report, self.split, counts, self.expected_counts.get(self.split, {}))
        absent = sorted(in_json - ids)
        if absent:
            report.missing.append(f"{len(absent)} CXRs in {self.gt_path.name} have no image "
                                  f"under {self.image_dir} (e.g. {absent[0]})")
        report.notes.append("classification labels: " + (
            f"CheXpert's {self.labels_csv.name}" if self.label_source == "csv"
            else "mask.sum() > 0 per task (AFLoc)"))
        if self.split == "test" and not self.human.available():
            report.notes.append("no hb_segmentations_test.json: the human benchmark is "
                                "unavailable")
        if not self.paths:
            report.missing.append(f"no images under {self.image_dir}")
        return self.finish_report(report, self.paths)
