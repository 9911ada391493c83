"""SIIM-ACR Pneumothorax (Kaggle 2019), as downloaded.

Layout::

    root/train-rle.csv       header "ImageId, EncodedPixels" (note the space; .gz/.zip ok)
    root/dicom-images-train/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm

`ImageId` is the SOPInstanceUID, so the DICOM tree is indexed by file name (walked once, on
first use). One row per annotated instance; a negative image has one `-1` row. Header names and
values are stripped (stage-1 values read " -1"). Masks: the relative, column-major RLE of the
official `mask_functions.py`, all instances of an image OR-ed (torchxrayvision keeps only the
last instance; GLoRIA ORs).

Splits (classification task, label Pneumothorax = any instance):
- `gloria-row-train|val|test`: GLoRIA's split of the CSV *rows* (`train_test_split(
  test_size=0.3, random_state=0)`, then halved; first half test), then one sample per image of
  those rows in first-appearance order, as `PneumothoraxImageDataset` iterates
  `df.ImageId.unique()`. A multi-instance image may straddle splits.
- `image-train|val|test`: the same 70/15/15 rule over unique ImageIds (first-appearance order).
Both are drawn over every row (every ImageId) of the file, bad ones included, so a skipped row
drops its own image and moves no other (a bad row without an ImageId is an error for the
image-* splits).
- `afloc-test`: AFLoc's zero-shot classification list (`classification/DatasetsSplits/
  SIIM_Pneumothorax/test_list.txt` in YH0517/AFLoc, passed as `split_list=`): one sample per
  line, repeats included, labels from the list. It is not any GLoRIA split (its first image is
  in GLoRIA's train rows; its repeated lines are adjacent), so it cannot be rebuilt here.
- `all`: every image once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.datasets._util import (
    FileDataset,
    SplitUniverse,
    cached_parse,
    compare_counts,
    read_csv_rows,
    stable_gloria_split,
    wrong_width,
)
from bench.datasets.base import CheckReport, Dataset
from bench.errors import DataError
from bench.imaging.masks import siim_rle_problem, siim_rles_to_mask
from bench.registry import register_dataset
from bench.types import CLASSIFICATION, Finding, Sample

RLE_CSV = "train-rle.csv"
IMAGE_DIR = "dicom-images-train"
FRAME_HW = (1024, 1024)
PATHOLOGY = "Pneumothorax"


@dataclass
class SiimRow:
    image_id: str
    rle: str
    line: int
    slot: int = 0  # position among the file's data rows, bad ones included (the row split's id)

    @property
    def positive(self) -> bool:
        return self.rle != "-1"


@dataclass
class SiimImage:
    image_id: str
    rles: list[str] = field(default_factory=list)

    @property
    def positive(self) -> bool:
        return any(r != "-1" for r in self.rles)


def parse_rle_csv(path: Path, on_bad) -> tuple[list[SiimRow], dict[str, SiimImage],
                                               SplitUniverse, SplitUniverse]:
    """Rows (in file order) and images (first-appearance order) of train-rle.csv, and what the
    row and image splits are drawn over: every row slot, every ImageId (bad rows included)."""
    header, rows = read_csv_rows(path, ["ImageId", "EncodedPixels"])
    out: list[SiimRow] = []
    images: dict[str, SiimImage] = {}
    bad_ids: set[str] = set()
    seen: set[tuple[str, str]] = set()
    all_ids: dict[str, None] = {}
    unplaced: list[tuple[Path, int]] = []
    slot = -1
    for line, row in rows:
        slot += 1
        if row.get("ImageId"):
            all_ids.setdefault(row["ImageId"])
        problem = wrong_width(row, header)
        image_id = row.get("ImageId", "")
        rle = row.get("EncodedPixels", "")
        if problem is None and not image_id:
            problem = "empty ImageId"
        if problem is None:
            problem = siim_rle_problem(rle, FRAME_HW)
        if problem is None and (image_id, rle) in seen:
            problem = f"duplicate row for ImageId {image_id}"
        if problem is None and image_id in images:
            if rle == "-1" or "-1" in images[image_id].rles:
                problem = f"ImageId {image_id} has both '-1' and encoded rows"
        if problem is not None:
            on_bad(problem, path, line, problem.split(" for ")[0].split(" past ")[0])
            if image_id:
                bad_ids.add(image_id)
            else:
                unplaced.append((path, line))
            continue
        seen.add((image_id, rle))
        out.append(SiimRow(image_id, rle, line, slot))
        images.setdefault(image_id, SiimImage(image_id)).rles.append(rle)
    if bad_ids:
        out = [r for r in out if r.image_id not in bad_ids]
        images = {k: v for k, v in images.items() if k not in bad_ids}
    return (out, images, SplitUniverse(list(range(slot + 1)), [], "row"),
            SplitUniverse(list(all_ids), unplaced, "ImageId"))


def index_dicoms(folder: Path) -> dict[str, Path]:
    """SOPInstanceUID (file stem) -> path, walking the Study/Series tree once."""
    out: dict[str, Path] = {}
    if not folder.is_dir():
        return out
    for dirpath, _dirs, files in os.walk(folder):
        for f in files:
            if f.lower().endswith(".dcm"):
                out.setdefault(f[:-4], Path(dirpath) / f)
    return out


@register_dataset("siim")
class SIIM(FileDataset, Dataset):
    """SIIM-ACR Pneumothorax: Pneumothorax labels (and masks) from train-rle.csv + DICOMs."""

    tasks = (CLASSIFICATION,)
    pathologies = (PATHOLOGY,)
    splits = ("gloria-row-test", "gloria-row-val", "gloria-row-train",
              "image-test", "image-val", "image-train", "afloc-test", "all")
    default_split = "gloria-row-test"
    description = "SIIM-ACR Pneumothorax (train-rle.csv + DICOM tree)"
    # torchxrayvision's copy = stage-1 train + stage-1 test; the Kaggle stage-1 train file alone
    # (10,675 images) is what GLoRIA split.
    expected_counts = {
        "all": {"rows": 12954, "images": 12047, "positive_images": 2669, "positive_rows": 3576},
    }

    def __init__(self, root=None, split=None, on_error="raise", image_dir: str = IMAGE_DIR,
                 split_list: str | None = None, **options: Any):
        super().__init__(root, split, on_error, **options)
        self.require_root()
        self.csv_path = self.require_file(RLE_CSV, "stage_2_train.csv")
        self.image_dir = self.root / image_dir
        self.split_list = Path(split_list) if split_list else None
        self.rows, self.images, self.row_universe, self.image_universe = cached_parse(
            self.csv_path, parse_rle_csv, self.bad)
        self._paths: dict[str, Path] | None = None
        self.list_labels: list[int] | None = None
        self.index = self._select(self.split)
        if self.split == "afloc-test":
            self.index, self.list_labels = self._afloc_list()

    def input_files(self) -> list[Path]:
        extra = [self.split_list] if self.split == "afloc-test" and self.split_list else []
        return [self.csv_path] + extra

    def config(self) -> dict[str, Any]:
        return {"csv": self.csv_path.name, "image_dir": str(self.image_dir),
                "split_list": str(self.split_list) if self.split == "afloc-test" else None}

    def _afloc_list(self, on_bad=None) -> tuple[list[str], list[int]]:
        """AFLoc's `SIIM_Pneumothorax/test_list.txt`: "<study>/<series>/<sop>.jpg <label>" per
        line; every line is a sample (an image repeats once per RLE row), labelled by the line,
        as `classification/datasets.py:SIIM` reads it."""
        on_bad = on_bad or self.bad
        if self.split_list is None:
            raise DataError("split afloc-test needs split_list=<AFLoc classification/"
                            "DatasetsSplits/SIIM_Pneumothorax/test_list.txt>", self.root)
        if not self.split_list.is_file():
            raise DataError("missing split list", self.split_list)
        ids, labels = [], []
        for n, line in enumerate(self.split_list.read_text().splitlines(), start=1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(" ")
            image_id = Path(parts[0]).stem
            if len(parts) != 2 or parts[1] not in ("0", "1"):
                on_bad("expected '<path>.jpg <0|1>'", self.split_list, n, "malformed list line")
                continue
            if image_id not in self.images:
                on_bad(f"ImageId {image_id} is not in {self.csv_path.name}", self.split_list, n,
                       "split-list id not in labels")
                continue
            ids.append(image_id)
            labels.append(int(parts[1]))
        return ids, labels

    def _select(self, split: str) -> list[str]:
        if split == "all":
            return list(self.images)
        if split == "afloc-test":
            return self._afloc_list(lambda *a: None)[0] if self.split_list else []
        part = split.rsplit("-", 1)[1]
        if split.startswith("gloria-row-"):
            by_slot = {r.slot: r for r in self.rows}  # good rows of good images
            slots = stable_gloria_split(self.row_universe, part, by_slot)
            return list(dict.fromkeys(by_slot[k].image_id for k in slots))
        return stable_gloria_split(self.image_universe, part, self.images)

    @property
    def paths(self) -> dict[str, Path]:
        if self._paths is None:
            self._paths = index_dicoms(self.image_dir)
        return self._paths

    def image_path(self, image_id: str) -> Path:
        return self.paths.get(image_id, self.image_dir / "**" / (image_id + ".dcm"))

    def __len__(self) -> int:
        return len(self.index)

    def mask(self, image_id: str) -> np.ndarray:
        """OR of every instance at 1024 x 1024 (uint8)."""
        return siim_rles_to_mask(self.images[image_id].rles, FRAME_HW)

    def load(self, index: int) -> Sample | None:
        image_id = self.index[index]
        rec = self.images[image_id]
        path = self.paths.get(image_id)
        if path is None:
            missing = self.image_dir / f"{image_id}.dcm"
            self.bad(f"missing file (no {image_id}.dcm anywhere under the tree)", missing,
                     reason="missing file")
            return None
        pixel_meta: dict = {}  # a DICOM's photometry, for the methods' readers
        image = self.decode(path, pixel_meta)
        if image is None:
            return None
        findings = []
        if rec.positive:
            hw = image.shape[:2]
            if tuple(hw) != FRAME_HW:
                self.bad(f"image is {hw[1]}x{hw[0]}, the RLE is for 1024x1024", path,
                         reason="image size differs from the RLE's")
                return None
            findings.append(Finding(PATHOLOGY, f"{image_id}:pneumothorax",
                                    mask=self.mask(image_id)))
        label = int(rec.positive) if self.list_labels is None else self.list_labels[index]
        return Sample(id=image_id, image=image, findings=findings,
                      labels={PATHOLOGY: label},
                      meta={**pixel_meta, "split": self.split, "path": str(path),
                            "hw": image.shape[:2], "n_instances": sum(r != "-1" for r in rec.rles)})

    def check(self) -> CheckReport:
        report = self.new_report()
        found = {"rows": len(self.rows), "images": len(self.images),
                 "positive_images": sum(i.positive for i in self.images.values()),
                 "positive_rows": sum(r.positive for r in self.rows)}
        report.counts["all"] = found
        compare_counts(report, "all", found, self.expected_counts.get("all", {}))
        for split in self.splits[:-1]:
            try:
                ids = self._select(split)
            except DataError as exc:
                report.notes.append(f"split {split}: {exc}")
                continue
            report.counts[split] = {"samples": len(ids), "images": len(set(ids)),
                                    "positive": sum(self.images[i].positive for i in ids)}
        on_disk = set(self.paths)
        extra = on_disk - set(self.images)
        if extra:
            report.notes.append(f"{len(extra)} DICOMs under {self.image_dir.name}/ have no row "
                                f"in {self.csv_path.name} (e.g. {sorted(extra)[0]})")
        paths = [self.image_path(i) for i in dict.fromkeys(self.index)]
        return self.finish_report(report, paths)
