"""MS-CXR (PhysioNet, `MS_CXR_Local_Alignment_v1.0.0.{json,csv}`; v1.1.0 csv too).

Layout::

    root/MS_CXR_Local_Alignment_v1.0.0.json   COCO: images[] (path "files/p1X/pSUB/sSTUDY/
                                              DICOM.jpg", width, height), annotations[] (bbox
                                              x, y, w, h in original pixels, label_text,
                                              category_id), categories[]
    root/MS_CXR_Local_Alignment_v1.0.0.csv    dicom_id, category_name, label_text, path,
                                              x, y, w, h, image_width, image_height[, split]
    images: <image_root>/files/p1X/... (image_root = MIMIC-CXR-JPG root; default root)

The JSON is read when present, else the CSV (v1.0.0, then v1.1.0). Split `test` = the whole
file (AFLoc uses it all). Annotations are grouped per image by lower-cased `label_text`, as
AFLoc's `merge_annotation` does: each group is one Finding (one query) whose mask is the union
of its boxes and whose `boxes` keeps every box, so the `afloc` protocol can sum them as the
official code does; the group's category is its last annotation's and its precise query is the
lower-cased text, as there. One Sample per image carries all of that image's phrases (decoded once);
`per="phrase"` gives one Sample per (image, phrase) instead, with ids "<dicom_id>:<k>".
Prompts: simple "Findings suggesting {category}.", precise = the lower-cased phrase. With the
simple prompt the `afloc` protocol regroups an image's phrases by category (AFLoc's
MS_CXR_CLS keys `merge_annotation` by the category prompt); a phrase whose boxes carry two
categories is counted under its last one there (the official splits it; not seen in MS-CXR).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.datasets._util import FileDataset, compare_counts, read_csv_rows, wrong_width
from bench.datasets.base import CheckReport, Dataset
from bench.errors import DataError
from bench.imaging.masks import box_problem, boxes_to_mask
from bench.registry import register_dataset
from bench.types import LOCALIZATION, Finding, Sample

CATEGORIES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Lung Opacity",
              "Pleural Effusion", "Pneumonia", "Pneumothorax")
JSON_NAMES = ("MS_CXR_Local_Alignment_v1.0.0.json", "MS_CXR_Local_Alignment_v1.1.0.json")
CSV_NAMES = ("MS_CXR_Local_Alignment_v1.0.0.csv", "MS_CXR_Local_Alignment_v1.1.0.csv")


def annotation_file(root: Path) -> Path | None:
    """MS-CXR's annotation file in `root` (the first of JSON_NAMES, then CSV_NAMES), or None."""
    return next((root / n for n in JSON_NAMES + CSV_NAMES if (root / n).is_file()), None)


@dataclass
class Phrase:
    category: str
    text: str
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)


@dataclass
class MsCxrImage:
    dicom_id: str
    path: str
    hw: tuple[int, int]
    phrases: dict[str, Phrase] = field(default_factory=dict)  # lower-cased text -> phrase


@register_dataset("ms-cxr")
class MsCXR(FileDataset, Dataset):
    """MS-CXR phrase grounding boxes on MIMIC-CXR-JPG images."""

    tasks = (LOCALIZATION,)
    pathologies = CATEGORIES
    splits = ("test",)
    default_split = "test"
    description = "MS-CXR phrase grounding (COCO json or csv) on MIMIC-CXR-JPG"
    expected_counts = {"test": {"pairs": 1162}}

    def __init__(self, root=None, split=None, on_error="raise", image_root: str | None = None,
                 per: str = "image", **options: Any):
        super().__init__(root, split, on_error, **options)
        self.require_root()
        self.image_root = Path(image_root) if image_root else self.root
        self.source = annotation_file(self.root)
        if self.source is None:
            raise DataError(f"missing file (or {', '.join(JSON_NAMES[1:] + CSV_NAMES)})",
                            self.root / JSON_NAMES[0])
        self.n_annotations = 0
        self.bad_images: set[str] = set()  # dicom_ids with an unreadable annotation
        images = self._read_json() if self.source.suffix == ".json" else self._read_csv()
        self.n_annotations -= sum(len(ph.boxes) for d in self.bad_images if d in images
                                  for ph in images[d].phrases.values())
        self.index = [img for d, img in images.items() if img.phrases and d not in self.bad_images]
        if per not in ("image", "phrase"):
            raise DataError(f"per must be 'image' or 'phrase', got {per!r}")
        self.per = per
        # per="phrase": one Sample per (image, phrase), as AFLoc's merged list is laid out
        self.items = [(k, key) for k, img in enumerate(self.index) for key in img.phrases] \
            if per == "phrase" else [(k, None) for k in range(len(self.index))]

    def config(self) -> dict[str, Any]:
        return {"image_root": str(self.image_root), "source": self.source.name, "per": self.per}

    def input_files(self) -> list[Path]:
        return [self.source]

    # -- parsing --------------------------------------------------------------------------
    def _reject(self, dicom_id: str | None, problem: str, where: object, reason: str) -> None:
        """Raise, or count one bad annotation and drop its image whole."""
        self.bad(problem, self.source, where, reason=reason)
        if dicom_id:
            self.bad_images.add(dicom_id)

    def _add(self, images, dicom_id, path, hw, category, text, box, where) -> None:
        if category not in CATEGORIES:
            self._reject(dicom_id, f"unknown pathology {category!r}", where, "unknown pathology")
            return
        if not text:
            self._reject(dicom_id, "empty label_text", where, "empty label_text")
            return
        problem = box_problem(box, hw)
        if problem:
            self._reject(dicom_id, problem, where, problem.split(" x=")[0])
            return
        img = images.setdefault(dicom_id, MsCxrImage(dicom_id, path, hw))
        if img.path != path or img.hw != hw:
            self._reject(dicom_id, f"image {dicom_id} listed with two paths or sizes", where,
                         "inconsistent image entry")
            return
        phrase = img.phrases.setdefault(text.lower(), Phrase(category, text))
        phrase.category = category  # `merge_annotation` keeps the group's last category
        phrase.boxes.append(tuple(float(v) for v in box))
        self.n_annotations += 1

    def _read_json(self) -> dict[str, MsCxrImage]:
        try:
            data = json.loads(self.source.read_text(encoding="utf-8"))
            cats = {c["id"]: c["name"] for c in data["categories"]}
            imgs = data["images"]
            anns = data["annotations"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"not an MS-CXR COCO json ({exc})", self.source) from exc
        by_id: dict[Any, dict] = {}
        for k, img in enumerate(imgs):
            where = f"images[{k}]"
            if not isinstance(img, dict) or "id" not in img or "path" not in img:
                self.bad("malformed image entry (needs id and path)", self.source, where,
                         reason="malformed image entry")
                continue
            if img["id"] in by_id:
                self.bad(f"duplicate image id {img['id']}", self.source, where,
                         reason="duplicate image id")
                continue
            by_id[img["id"]] = img
        images: dict[str, MsCxrImage] = {}
        seen_ann: set = set()
        for k, ann in enumerate(anns):
            where = f"annotations[{k}]"
            known = by_id.get(ann.get("image_id")) if isinstance(ann, dict) else None
            owner = Path(str(known["path"])).stem if known is not None else None
            if isinstance(ann, dict) and "image_id" in ann and known is None:
                self.bad(f"image_id {ann['image_id']!r} is not in images[]", self.source, where,
                         reason="annotation of an unknown image")
                continue
            try:
                img = by_id[ann["image_id"]]
                box = [float(v) for v in ann["bbox"]]
                if len(box) != 4:
                    raise ValueError("bbox needs 4 values")
                hw = (int(ann.get("height", img.get("height"))),
                      int(ann.get("width", img.get("width"))))
                category = cats.get(ann["category_id"], f"category_id {ann['category_id']}")
                text = str(ann.get("label_text") or "").strip()
            except (KeyError, TypeError, ValueError) as exc:
                what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
                self._reject(owner, f"malformed annotation ({what})", where,
                             "malformed annotation")
                continue
            if ann.get("id") is not None:
                if ann["id"] in seen_ann:
                    self._reject(owner, f"duplicate annotation id {ann['id']}", where,
                                 "duplicate annotation id")
                    continue
                seen_ann.add(ann["id"])
            self._add(images, Path(img["path"]).stem, img["path"], hw, category, text, box,
                      where)
        return images

    def _read_csv(self) -> dict[str, MsCxrImage]:
        cols = ["dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h",
                "image_width", "image_height"]
        header, rows = read_csv_rows(self.source, cols)
        images: dict[str, MsCxrImage] = {}
        seen: set[tuple] = set()
        for line, row in rows:
            problem = wrong_width(row, header)
            if problem is None:
                try:
                    box = tuple(float(row[k]) for k in ("x", "y", "w", "h"))
                    hw = (int(float(row["image_height"])), int(float(row["image_width"])))
                except ValueError:
                    problem = "non-numeric box or image size"
            if problem is None and (row["dicom_id"], row["label_text"], box) in seen:
                problem = f"duplicate row for {row['dicom_id']}"
            if problem is not None:
                self._reject(row.get("dicom_id"), problem, line, problem.split(" for ")[0])
                continue
            seen.add((row["dicom_id"], row["label_text"], box))
            self._add(images, row["dicom_id"], row["path"], hw, row["category_name"],
                      row["label_text"], box, line)
        return images

    def prompt(self, finding: Finding, mode: str = "simple") -> str:
        """'precise' = the lower-cased phrase, the query `merge_annotation` hands the model."""
        if mode == "precise" and finding.meta.get("phrase_key"):
            return str(finding.meta["phrase_key"])
        return super().prompt(finding, mode)

    # -- samples --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    def image_path(self, img: MsCxrImage) -> Path:
        p = self.image_root / img.path
        if not p.is_file() and img.path.startswith("files/"):
            alt = self.image_root / img.path[len("files/"):]  # image_root given as .../files
            if alt.is_file():
                return alt
        return p

    def load(self, index: int) -> Sample | None:
        k, only = self.items[index]
        img = self.index[k]
        path = self.image_path(img)
        pixel_meta: dict = {}  # a DICOM's photometry, for the methods' readers
        image = self.decode(path, pixel_meta)
        if image is None:
            return None
        if tuple(image.shape[:2]) != img.hw:  # its boxes would land elsewhere
            self.bad(f"image is {image.shape[1]}x{image.shape[0]}, annotations say "
                     f"{img.hw[1]}x{img.hw[0]}", path, reason="image size differs from the "
                     "annotations")
            return None
        findings = []
        for j, (key, ph) in enumerate(img.phrases.items()):
            if only is not None and key != only:
                continue
            boxes = np.asarray(ph.boxes, dtype=np.float64).reshape(-1, 4)
            findings.append(Finding(ph.category, f"{img.dicom_id}:{j}",
                                    mask=boxes_to_mask(boxes, img.hw), boxes=boxes,
                                    phrase=ph.text, meta={"phrase_key": key}))
        sid = img.dicom_id if only is None else findings[0].query_id
        return Sample(id=sid, image=image, findings=findings,
                      labels={ph.category: 1 for ph in img.phrases.values()},
                      meta={**pixel_meta, "split": self.split, "path": str(path), "hw": img.hw,
                            "dicom_id": img.dicom_id})

    def check(self) -> CheckReport:
        report = self.new_report()
        pairs = sum(len(i.phrases) for i in self.index)
        counts = {"images": len(self.index), "pairs": pairs, "boxes": self.n_annotations}
        for c in CATEGORIES:
            counts[c] = sum(ph.category == c for i in self.index for ph in i.phrases.values())
        report.counts["test"] = counts
        report.notes.append(f"read {self.source.name}")
        compare_counts(report, "test", counts, self.expected_counts.get("test", {}))
        return self.finish_report(report, [self.image_path(i) for i in self.index])
