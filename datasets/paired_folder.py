"""A generic folder of images with reports (+ optional masks and labels): the paper's retinal
fundus set, or any private set.

Layout::

    root/pairs.csv                  image (path relative to root), report, optional split
                                    (train, val, validate, valid or test; default test)
    root/labels.csv                 optional: image + one 0/1 column per label (blank = unknown)
    root/masks/<image stem>/<finding name>.png   optional: nonzero pixels = the finding
    root/paraphrases.json           optional: sentence paraphrases for AFLoc's fundus recipe,
                                    read by `bench train afloc` (`methods/afloc/paraphrase.py`)

Tasks follow what is present: pretraining (reports), classification (labels.csv),
localization (masks/). Pathologies are the labels.csv columns and the mask names. A mask that
is all zero is a negative finding (positive=False). The prompt is "Findings suggesting
{name}.".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.datasets._util import FileDataset, read_csv_rows, wrong_width
from bench.datasets.base import CheckReport, Dataset
from bench.errors import DataError
from bench.imaging.io import RASTER_SUFFIXES, read_raster
from bench.registry import register_dataset
from bench.types import CLASSIFICATION, LOCALIZATION, PRETRAINING, Finding, Sample

SPLIT_NAMES = {"train": "train", "val": "val", "validate": "val", "valid": "val",
               "test": "test"}


@register_dataset("paired-folder")
class PairedFolder(FileDataset, Dataset):
    """Image + report pairs from pairs.csv, with optional labels.csv and masks/ folders."""

    tasks = (LOCALIZATION, CLASSIFICATION, PRETRAINING)
    pathologies: tuple[str, ...] = ()
    splits = ("test", "val", "train", "all")
    default_split = "test"
    description = "generic image + report folder (pairs.csv, optional labels.csv and masks/)"
    expected_counts: dict[str, Any] = {}

    def __init__(self, root=None, split=None, on_error="raise", **options: Any):
        super().__init__(root, split, on_error, **options)
        self.require_root()
        self.pairs_path = self.require_file("pairs.csv")
        header, rows = read_csv_rows(self.pairs_path, ["image", "report"])
        self.records: list[dict[str, str]] = []
        seen: set[str] = set()
        self.split_sizes: dict[str, int] = {}
        for line, row in rows:
            problem = wrong_width(row, header)
            split = SPLIT_NAMES.get((row.get("split") or "test").lower()) if problem is None \
                else None
            if problem is None and not row["image"]:
                problem = "empty image path"
            elif problem is None and split is None:
                problem = f"unknown split {row['split']!r} (train, val or test)"
            elif problem is None and row["image"] in seen:
                problem = f"duplicate image {row['image']}"
            elif problem is None and Path(row["image"]).suffix.lower() not in RASTER_SUFFIXES \
                    and Path(row["image"]).suffix.lower() != ".dcm":
                problem = f"unsupported image type {row['image']!r}"
            if problem is not None:
                self.bad(problem, self.pairs_path, line, reason=problem.split(" '")[0].split(
                    " (")[0])
                continue
            seen.add(row["image"])
            self.split_sizes[split] = self.split_sizes.get(split, 0) + 1
            if self.split == "all" or split == self.split:
                self.records.append({"image": row["image"], "report": row["report"],
                                     "split": split})
        self.labels_path = self.root / "labels.csv"
        self.labels = self._read_labels() if self.labels_path.is_file() else {}
        self.mask_dir = self.root / "masks"
        mask_names = sorted({p.stem for p in self.mask_dir.glob("*/*.png")}) \
            if self.mask_dir.is_dir() else []
        self.label_names = self._label_names
        self.pathologies = tuple(dict.fromkeys(list(self.label_names) + mask_names))
        tasks = [PRETRAINING]
        if self.labels:
            tasks.insert(0, CLASSIFICATION)
        if mask_names:
            tasks.insert(0, LOCALIZATION)
        self.tasks = tuple(tasks)

    _label_names: tuple[str, ...] = ()

    def _read_labels(self) -> dict[str, dict[str, int]]:
        header, rows = read_csv_rows(self.labels_path, ["image"])
        self._label_names = tuple(c for c in header if c != "image")
        out: dict[str, dict[str, int]] = {}
        for line, row in rows:
            problem = wrong_width(row, header)
            values: dict[str, int] = {}
            if problem is None and row["image"] in out:
                problem = f"duplicate image {row['image']}"
            if problem is None:
                for name in self._label_names:
                    v = row[name]
                    if v in ("1", "1.0"):
                        values[name] = 1
                    elif v in ("0", "0.0"):
                        values[name] = 0
                    elif v != "":
                        problem = f"label {name} must be 0, 1 or blank, got {v!r}"
                        break
            if problem is not None:
                self.bad(problem, self.labels_path, line, reason=problem.split(" must")[0])
                continue
            out[row["image"]] = values
        return out

    def __len__(self) -> int:
        return len(self.records)

    def input_files(self) -> list[Path]:
        masks = [mp for rec in self.records
                 for mp in (self.mask_dir / Path(rec["image"]).stem).glob("*.png")]
        labels = [self.labels_path] if self.labels_path.is_file() else []
        return [self.pairs_path] + labels + masks

    def load(self, index: int) -> Sample | None:
        rec = self.records[index]
        path = self.root / rec["image"]
        pixel_meta: dict = {}  # a DICOM's photometry, for the methods' readers
        image = self.decode(path, pixel_meta)
        if image is None:
            return None
        hw = tuple(image.shape[:2])
        findings = []
        stem = Path(rec["image"]).stem
        folder = self.mask_dir / stem
        for mp in sorted(folder.glob("*.png")) if folder.is_dir() else []:
            try:
                raw = read_raster(mp)
            except DataError as exc:
                if self.on_error == "skip":
                    self.skip("unreadable mask", str(exc))
                    return None
                raise
            if raw.ndim == 3:
                raw = raw.max(axis=2)
            if raw.shape != hw:
                self.bad(f"mask is {raw.shape[1]}x{raw.shape[0]}, image is {hw[1]}x{hw[0]}",
                         mp, reason="mask size differs from image")
                return None
            mask = (raw > 0).astype(np.uint8)
            findings.append(Finding(mp.stem, f"{stem}:{mp.stem}", mask=mask,
                                    positive=bool(mask.any())))
        return Sample(id=stem, image=image, findings=findings,
                      labels=dict(self.labels.get(rec["image"], {})), report=rec["report"],
                      meta={**pixel_meta, "split": rec["split"], "path": str(path), "hw": hw,
                            "image": rec["image"]})

    def check(self) -> CheckReport:
        report = self.new_report()
        report.counts["splits"] = dict(self.split_sizes)
        counts: dict[str, Any] = {"images": len(self.records),
                                  "with_report": sum(bool(r["report"]) for r in self.records)}
        for name in self.label_names:
            counts[f"positive {name}"] = sum(self.labels.get(r["image"], {}).get(name) == 1
                                             for r in self.records)
        if self.mask_dir.is_dir():
            counts["with_masks"] = sum((self.mask_dir / Path(r["image"]).stem).is_dir()
                                       for r in self.records)
        report.counts[self.split] = counts
        unlabelled = [r["image"] for r in self.records if self.labels and
                      r["image"] not in self.labels]
        if unlabelled:
            report.notes.append(f"{len(unlabelled)} images have no row in labels.csv "
                                f"(e.g. {unlabelled[0]})")
        listed = {r["image"] for r in self.records}
        extra = [k for k in self.labels if k not in listed and self.split == "all"]
        if extra:
            report.notes.append(f"{len(extra)} labels.csv rows name images not in pairs.csv")
        return self.finish_report(report, [self.root / r["image"] for r in self.records])
