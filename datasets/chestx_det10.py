"""ChestX-Det10 (Deepwise): NIH ChestX-14 images with boxes for ten findings.

Layout::

    root/train.json, root/test.json   JSON lists of {"file_name": "<n>.png", "syms": [class...],
                                      "boxes": [[x1, y1, x2, y2], ...]} (syms[i] pairs boxes[i])
    root/train_data/<file_name>, root/test_data/<file_name>   (root/images/ also accepted)
    root/ChestX_Det_{train,test}.json  optional ChestX-Det file with "polygons" aligned with
                                      syms/boxes; used for masks when present (`polygons=auto`)

Boxes are top-left/bottom-right pixels on the 1024 x 1024 PNGs; Finding.boxes holds them as
x, y, w, h (w = x2 - x1). One Finding per class present in an image (its boxes unioned, or
its polygons filled with CheXlocalize's rasteriser; a class with boxes but no polygon keeps its
boxes). Neither AFLoc nor GLoRIA has code for this dataset, so the category prompt is the
default "Findings suggesting {class}.".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.datasets._util import FileDataset, compare_counts, read_json
from bench.datasets.base import CheckReport, Dataset
from bench.imaging.masks import (
    box_problem,
    boxes_to_mask,
    polygon_problem,
    polygons_to_mask,
    xyxy_to_xywh,
)
from bench.registry import register_dataset
from bench.types import CLASSIFICATION, LOCALIZATION, Finding, Sample

CLASSES = ("Atelectasis", "Calcification", "Consolidation", "Effusion", "Emphysema",
           "Fibrosis", "Fracture", "Mass", "Nodule", "Pneumothorax")
FRAME_HW = (1024, 1024)


def read_list(path: Path) -> list:
    return read_json(path, list, "a JSON list of images")


@register_dataset("chestx-det10")
class ChestXDet10(FileDataset, Dataset):
    """ChestX-Det10 boxes (and ChestX-Det polygons when that file is given)."""

    tasks = (LOCALIZATION, CLASSIFICATION)
    pathologies = CLASSES
    splits = ("test", "train")
    default_split = "test"
    description = "ChestX-Det10 boxes on NIH ChestX-14 PNGs"
    expected_counts = {"train": {"images": 3001, "no_finding": 681, "boxes": 6863},
                       "test": {"images": 542, "no_finding": 83, "boxes": 1476}}

    def __init__(self, root=None, split=None, on_error="raise", polygons: str = "auto",
                 **options: Any):
        super().__init__(root, split, on_error, **options)
        self.require_root()
        self.list_path = self.root / f"{self.split}.json"
        self.poly_path = self.root / f"ChestX_Det_{self.split}.json"
        self.use_polygons = (polygons == "auto" and self.poly_path.is_file()) or \
            polygons in ("1", "true", "yes", True)
        self.images = self._parse(self.list_path, with_polygons=False)
        self.polys: dict[str, list] = {}
        if self.use_polygons:
            for rec in self._parse(self.poly_path, with_polygons=True):
                self.polys[rec["file_name"]] = rec["instances"]
        self.n_boxes = sum(len(r["instances"]) for r in self.images)

    def config(self) -> dict[str, Any]:
        return {"polygons": str(self.poly_path) if self.use_polygons else None}

    def input_files(self) -> list[Path]:
        return [self.list_path] + ([self.poly_path] if self.use_polygons else [])

    def _parse(self, path: Path, with_polygons: bool) -> list[dict]:
        out, seen = [], set()
        for k, entry in enumerate(read_list(path)):
            where = f"[{k}]"
            name = ""
            try:
                name = str(entry["file_name"])
                syms, boxes = list(entry["syms"]), list(entry["boxes"])
                polys = list(entry["polygons"]) if with_polygons else [None] * len(syms)
            except (KeyError, TypeError) as exc:
                self.bad(f"malformed entry (missing {exc})", path, where, reason="malformed entry")
                continue
            problem = None
            if name in seen:
                problem = f"duplicate file_name {name}"
            elif not (len(syms) == len(boxes) == len(polys)):
                problem = (f"malformed entry ({len(syms)} syms, {len(boxes)} boxes"
                           + (f", {len(polys)} polygons)" if with_polygons else ")"))
            instances = []
            for sym, box, poly in zip(syms, boxes, polys) if problem is None else []:
                if sym not in CLASSES:
                    if with_polygons:  # ChestX-Det has 13 classes: keep ChestX-Det10's ten
                        continue
                    problem = f"unknown pathology {sym!r}"
                    break
                try:
                    xywh = xyxy_to_xywh(box)
                except (TypeError, ValueError):
                    problem = f"non-numeric box {box!r}"
                    break
                problem = box_problem(xywh, FRAME_HW) or (
                    polygon_problem(poly, FRAME_HW) if with_polygons else None)
                if problem:
                    break
                instances.append((sym, xywh, poly))
            if problem is not None:
                self.bad(problem, path, f"{where} ({name})" if name else where,
                         reason=problem.split(" (")[0].split(" x=")[0].split(" '")[0])
                continue
            seen.add(name)
            out.append({"file_name": name, "instances": instances, "where": where})
        return out

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, name: str) -> Path:
        for folder in (f"{self.split}_data", "images", f"{self.split}"):
            p = self.root / folder / name
            if p.is_file():
                return p
        return self.root / f"{self.split}_data" / name

    def load(self, index: int) -> Sample | None:
        rec = self.images[index]
        path = self.image_path(rec["file_name"])
        pixel_meta: dict = {}  # a DICOM's photometry, for the methods' readers
        image = self.decode(path, pixel_meta)
        if image is None:
            return None
        hw = tuple(image.shape[:2])
        polys = self.polys.get(rec["file_name"]) if self.use_polygons else None
        for _, xywh, _ in rec["instances"]:  # boxes are in the PNG's own frame
            problem = box_problem(xywh, hw)
            if problem:  # it would be an empty ground truth (IoU NaN, silently dropped)
                self.bad(f"box {[float(v) for v in xywh]} of {self.list_path.name} row "
                         f"{rec['where']} fills no pixel of the decoded {hw[1]}x{hw[0]} image "
                         f"({problem})", path, reason="box fills no pixel of the decoded image")
                return None
        for _, _, poly in polys or []:
            problem = polygon_problem(poly, hw)
            if problem:
                self.bad(f"polygon of {self.poly_path.name} for {rec['file_name']} does not fit "
                         f"the decoded {hw[1]}x{hw[0]} image ({problem})", path,
                         reason="polygon outside the decoded image")
                return None
        findings = []
        for cls in CLASSES:
            boxes = [b for s, b, _ in rec["instances"] if s == cls]
            if not boxes:
                continue
            arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
            cls_polys = [p for s, _, p in polys if s == cls] if polys is not None else []
            if cls_polys:
                mask = polygons_to_mask(cls_polys, hw)
                source = "polygons"
            else:  # no polygon file, image or class there: the boxes are the ground truth
                mask = boxes_to_mask(arr, hw)
                source = "boxes"
            findings.append(Finding(cls, f"{rec['file_name']}:{cls}", mask=mask, boxes=arr,
                                    meta={"mask_from": source}))
        present = {f.pathology for f in findings}
        return Sample(id=Path(rec["file_name"]).stem, image=image, findings=findings,
                      labels={c: int(c in present) for c in CLASSES},
                      meta={**pixel_meta, "split": self.split, "path": str(path), "hw": hw,
                            "file_name": rec["file_name"]})

    def check(self) -> CheckReport:
        report = self.new_report()
        counts = {"images": len(self.images),
                  "no_finding": sum(not r["instances"] for r in self.images),
                  "boxes": self.n_boxes}
        report.counts[self.split] = counts
        compare_counts(report, self.split, counts, self.expected_counts.get(self.split, {}))
        if self.use_polygons:
            lacking = [r["file_name"] for r in self.images
                       if r["instances"] and r["file_name"] not in self.polys]
            classes_lacking = sum(
                1 for r in self.images if r["file_name"] in self.polys
                for c in {s for s, _, _ in r["instances"]}
                if not any(s == c for s, _, _ in self.polys[r["file_name"]]))
            report.notes.append(f"masks from polygons ({self.poly_path.name}); "
                                f"{len(lacking)} images with boxes have no polygon entry, and "
                                f"{classes_lacking} (image, class) pairs with boxes have no "
                                f"polygon; those fall back to boxes")
        return self.finish_report(report, [self.image_path(r["file_name"])
                                           for r in self.images])
