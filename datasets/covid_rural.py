"""COVID Rural (TCIA COVID-19-AR radiographs with Tang et al.'s opacity annotations).

Layout (haimingt/opacity_segmentation_covid_chest_X_ray, folder `covid_rural_annot/`)::

    root/covid_rural_annot/jpgs/<name>.jpg
    root/covid_rural_annot/jpgs/jsons/<name>.json    LabelMe 4.5.6 polygons (shapes[].label,
                                                     points [[x, y], ...], shape_type)
    root/covid_rural_annot/pngs_masks/<name>.png     rasterised opacity masks

AFLoc pairs each JPG with its PNG mask by stem, skips images without a mask or with an empty
one, and uses category "COVID-19" with the prompt "Findings suggesting pneumonia.". The
finding's mask is binary (> 0); the PNG's own values (as PIL reads them) ride along in
`meta["afloc_mask_values"]`, because the official loader letterboxes those values as float32
before its >= 1e-5 test. `masks="png"` (default) does exactly that; `masks="json"` rasterises
the LabelMe opacity polygons instead (every label except the lung fields `left_lung` and
`right_lung`), and `masks="auto"` takes the PNG where it exists, else the JSON. The mask
PNGs (or JSONs) are read in `__init__` to drop empty ones, counted in `skipped` ("empty mask
(dropped as AFLoc does)"); the radiographs themselves are decoded only in `load`. A mask file
that cannot be read whole (an unreadable PNG, a malformed LabelMe file, one bad polygon) is an
error, or with `on_error="skip"` drops its image, counted once under that reason: a finding is
never scored with part of its mask.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.datasets._util import FileDataset, compare_counts
from bench.datasets.base import CheckReport, Dataset
from bench.errors import DataError
from bench.imaging.io import image_size, read_raster
from bench.imaging.masks import polygon_problem, polygons_to_mask
from bench.registry import register_dataset
from bench.types import LOCALIZATION, Finding, Sample

PATHOLOGY = "COVID-19"
LUNG_LABELS = frozenset({"left_lung", "right_lung", "lung", "lungs"})
EMPTY = "empty mask (dropped as AFLoc does)"
NO_MASK = "image without a mask (dropped as AFLoc does)"


def labelme_polygons(path: Path, on_bad) -> tuple[list[list] | None, tuple[int, int] | None]:
    """Opacity polygons of one LabelMe file and its (imageHeight, imageWidth) if given; None
    for the polygons when the file cannot be read whole (`on_bad` called once)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        shapes = data["shapes"]
        if not isinstance(shapes, list):
            raise TypeError("shapes is not a list")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        on_bad(f"not a LabelMe json ({type(exc).__name__})", path, None, "malformed LabelMe json")
        return None, None
    hw = None
    if data.get("imageHeight") and data.get("imageWidth"):
        hw = (int(data["imageHeight"]), int(data["imageWidth"]))
    polys = []
    for k, shape in enumerate(shapes):
        where = f"shapes[{k}]"
        if not isinstance(shape, dict) or "points" not in shape:
            on_bad("malformed shape (needs label and points)", path, where, "malformed shape")
            return None, hw
        if str(shape.get("label", "")).lower() in LUNG_LABELS:
            continue
        if shape.get("shape_type", "polygon") != "polygon":
            on_bad(f"unsupported shape_type {shape.get('shape_type')!r}", path, where,
                   "unsupported shape_type")
            return None, hw
        problem = polygon_problem(shape["points"], hw)
        if problem:
            on_bad(problem, path, where, problem.split(" (")[0])
            return None, hw
        polys.append(shape["points"])
    return polys, hw


def pil_values(path: Path) -> np.ndarray | None:
    """The mask as AFLoc reads it (`np.array(Image.open(png))`): 0/255 stays 0/255, so the
    official float32 letterbox keeps pixels covered by as little as 1e-5 / 255. None for a
    colour PNG (which the official loader cannot pad)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            values = np.array(im)
    except OSError:
        return None
    return values if values.ndim == 2 else None


@register_dataset("covid-rural")
class CovidRural(FileDataset, Dataset):
    """COVID Rural opacity masks (one 'COVID-19' finding per image with a non-empty mask)."""

    tasks = (LOCALIZATION,)
    pathologies = (PATHOLOGY,)
    splits = ("test",)
    default_split = "test"
    description = "COVID Rural (COVID-19-AR JPGs + Tang et al. opacity masks)"
    expected_counts = {"test": {"jpgs": 221, "png_masks": 193}}
    policy_skips = (EMPTY, NO_MASK)  # AFLoc's selection, not bad input

    def prompt(self, finding: Finding, mode: str = "simple") -> str:
        """AFLoc queries COVID-19 opacities with the pneumonia prompt."""
        if mode == "precise" and finding.phrase:
            return finding.phrase
        return "Findings suggesting pneumonia."

    def __init__(self, root=None, split=None, on_error="raise", masks: str = "png",
                 **options: Any):
        super().__init__(root, split, on_error, **options)
        self.require_root()
        if masks not in ("png", "json", "auto"):
            raise DataError(f"masks must be 'png', 'json' or 'auto', got {masks!r}")
        self.mask_source = masks
        base = self.root / "covid_rural_annot"
        self.jpg_dir, self.json_dir, self.png_dir = base / "jpgs", base / "jpgs" / "jsons", \
            base / "pngs_masks"
        if not self.jpg_dir.is_dir():
            raise DataError("missing image folder", self.jpg_dir)
        self.jpgs = sorted(p for p in self.jpg_dir.iterdir()
                           if p.suffix.lower() in (".jpg", ".jpeg"))
        self.n_png = len(list(self.png_dir.glob("*.png"))) if self.png_dir.is_dir() else 0
        self.n_json = len(list(self.json_dir.glob("*.json"))) if self.json_dir.is_dir() else 0
        self.index: list[tuple[Path, str, Any]] = []  # (jpg, "png"|"json", mask or polygons)
        for jpg in self.jpgs:
            entry = self._mask_entry(jpg)
            if entry is None:
                self.skipped[NO_MASK] += 1
            elif entry == "empty":
                self.skipped[EMPTY] += 1
            elif entry != "bad":  # "bad": counted once, under its own reason
                self.index.append((jpg, *entry))

    def config(self) -> dict[str, Any]:
        return {"masks": self.mask_source}

    def input_files(self) -> list[Path]:
        """Every JPG's candidate mask files (absent ones too: adding a mask changes the set)."""
        out = []
        for jpg in self.jpgs:
            if self.mask_source in ("png", "auto"):
                out.append(self.png_dir / (jpg.stem + ".png"))
            if self.mask_source in ("json", "auto"):
                out.append(self.json_dir / (jpg.stem + ".json"))
        return out

    def _mask_entry(self, jpg: Path):
        png = self.png_dir / (jpg.stem + ".png")
        js = self.json_dir / (jpg.stem + ".json")
        if self.mask_source in ("png", "auto") and png.is_file():
            try:
                m = read_raster(png)
            except DataError as exc:
                self.bad(str(exc).split(": ", 1)[-1], png, None, reason="unreadable mask")
                return "bad"
            return ("png", png) if m.any() else "empty"  # re-read in load: keep memory small
        if self.mask_source in ("json", "auto") and js.is_file():
            polys, hw = labelme_polygons(js, self.bad)
            if polys is None:
                return "bad"
            return ("json", (polys, hw)) if polys else "empty"
        return None

    def __len__(self) -> int:
        return len(self.index)

    def load(self, index: int) -> Sample | None:
        jpg, kind, payload = self.index[index]
        pixel_meta: dict = {}  # a DICOM's photometry, for the methods' readers
        image = self.decode(jpg, pixel_meta)
        if image is None:
            return None
        hw = tuple(image.shape[:2])
        meta: dict[str, Any] = {}
        if kind == "png":
            raw = self.decode(payload)
            if raw is None:
                return None
            mask = (raw > 0).astype(np.uint8)
            if mask.shape != hw:
                self.bad(f"mask is {mask.shape[1]}x{mask.shape[0]}, image is {hw[1]}x{hw[0]}",
                         self.png_dir / (jpg.stem + ".png"), reason="mask size differs from image")
                return None
            values = pil_values(payload)
            if values is not None and values.shape == hw:
                meta = {"afloc_mask_values": values}
        else:
            polys, json_hw = payload
            if json_hw is not None and json_hw != hw:
                self.bad(f"LabelMe size {json_hw[1]}x{json_hw[0]} differs from the image "
                         f"{hw[1]}x{hw[0]}", self.json_dir / (jpg.stem + ".json"),
                         reason="mask size differs from image")
                return None
            mask = polygons_to_mask(polys, hw)
        finding = Finding(PATHOLOGY, f"{jpg.stem}:covid-19", mask=mask, meta=meta)
        return Sample(id=jpg.stem, image=image, findings=[finding], labels={PATHOLOGY: 1},
                      meta={**pixel_meta, "split": self.split, "path": str(jpg), "hw": hw,
                            "mask_source": kind})

    def check(self) -> CheckReport:
        report = self.new_report()
        counts = {"jpgs": len(self.jpgs), "png_masks": self.n_png, "label_me_jsons": self.n_json,
                  "samples": len(self.index)}
        report.counts["test"] = counts
        compare_counts(report, "test", counts, self.expected_counts.get("test", {}))
        jpg_stems = {p.stem for p in self.jpgs}
        if self.png_dir.is_dir():
            extra = sorted(p.name for p in self.png_dir.glob("*.png") if p.stem not in jpg_stems)
            if extra:
                report.notes.append(f"{len(extra)} masks without a JPG (e.g. {extra[0]})")
        for jpg, kind, payload in self.index:
            if kind == "png" and jpg.is_file():
                try:
                    jhw, mhw = image_size(jpg), image_size(payload)
                except DataError as exc:
                    report.problems.append(str(exc))
                    continue
                if jhw != mhw:
                    report.problems.append(f"{payload}: mask is {mhw[1]}x{mhw[0]}, image is "
                                           f"{jhw[1]}x{jhw[0]}")
        if not self.index:
            report.missing.append("no image has a usable mask")
        return self.finish_report(report, [j for j, _, _ in self.index])
