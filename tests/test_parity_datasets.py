"""Adapter parity with AFLoc `localization/datasets.py` (merge_annotation, load_covid_rural,
load_rsna_grounding), transcribed below as oracles and run on small generated files.

Every comparison goes through the `afloc` protocol's GT (`gt_mask`), i.e. the 224 mask the
official loader would hand to the metrics, plus the query text and category of each row.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from bench.datasets.covid_rural import CovidRural
from bench.datasets.ms_cxr import MsCXR
from bench.datasets.rsna import RSNA
from bench.eval.protocols import get_protocol

try:
    from tests.data_fixtures import blocky, write_csv, write_dicom, write_jpg
    from tests.test_eval_protocols import o_box2mask, o_box_mapping, o_resize_img
except ImportError:  # tests/ is not always a package
    from data_fixtures import blocky, write_csv, write_dicom, write_jpg
    from test_eval_protocols import o_box2mask, o_box_mapping, o_resize_img


# ------------------------------------------------------------------------------ oracles
def o_merge_annotation(data: dict, use_cxr_text: bool = True):
    """`merge_annotation`: images in pycocotools `imgToAnns` order (first annotation), one
    entry per lower-cased phrase (or per category prompt), masks summed, last category wins."""
    cats = {c["id"]: c for c in data["categories"]}
    imgs = {i["id"]: i for i in data["images"]}
    img_to_anns: dict = {}
    for ann in data["annotations"]:
        img_to_anns.setdefault(ann["image_id"], []).append(ann)
    out = []
    for img_id, anns in img_to_anns.items():
        masks, texts, categories = {}, [], {}
        for ann in anns:
            tbox = o_box_mapping(ann["bbox"], ann["width"], ann["height"], 224)
            mask = o_box2mask(tbox, 224, 224)
            category = cats[ann["category_id"]]["name"]
            key = ann["label_text"].lower() if use_cxr_text else \
                f"Findings suggesting {category}."
            if key not in masks:
                masks[key] = mask
                texts.append(key)
            else:
                masks[key] = masks[key] + mask
            categories[key] = category
        for k in texts:
            out.append((imgs[img_id]["path"], k, categories[k], masks[k]))
    return out


# -------------------------------------------------------------------------------- MS-CXR
CATS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Lung Opacity",
        "Pleural Effusion", "Pneumonia", "Pneumothorax"]
PATHS = {"d1": "files/p10/p10000032/s50414267/d1.jpg", "d2": "files/p11/p11000011/s56699142/d2.jpg"}
SIZES = {"d1": (40, 32), "d2": (32, 48)}
# d2 is annotated first, so it comes first (imgToAnns order); the d1 phrase "Left basal
# opacity" is labelled Pneumonia once and Consolidation once (the official keeps the last);
# two overlapping boxes sum to 2 in the official mask.
ANNS = [("d2", "Pleural Effusion", "Small right effusion", [0.0, 0.0, 48.0, 9.0]),
        ("d1", "Pneumonia", "Left basal opacity", [2.0, 3.0, 15.0, 14.0]),
        ("d1", "Cardiomegaly", "Enlarged heart", [10.0, 20.0, 10.0, 10.0]),
        ("d1", "Consolidation", "left basal OPACITY", [5.5, 5.2, 16.0, 13.9]),
        ("d2", "Pleural Effusion", "Left effusion", [30.0, 1.0, 15.0, 20.0])]


def build_ms(tmp_path, anns=ANNS):
    root = tmp_path / "ms"
    root.mkdir()
    for i, d in enumerate(("d1", "d2")):
        write_jpg(tmp_path / "mimic" / PATHS[d], blocky(*SIZES[d], seed=i))
    data = {"images": [{"id": k + 1, "path": PATHS[d], "width": SIZES[d][1],
                        "height": SIZES[d][0]} for k, d in enumerate(("d1", "d2"))],
            "annotations": [{"id": k + 1, "image_id": 1 if d == "d1" else 2,
                             "category_id": CATS.index(c) + 1, "bbox": b,
                             "width": SIZES[d][1], "height": SIZES[d][0], "label_text": t}
                            for k, (d, c, t, b) in enumerate(anns)],
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(CATS)]}
    (root / "MS_CXR_Local_Alignment_v1.0.0.json").write_text(json.dumps(data))
    return MsCXR(root, image_root=str(tmp_path / "mimic")), data


@pytest.fixture
def ms(tmp_path):
    return build_ms(tmp_path)


def test_ms_cxr_phrase_rows_equal_merge_annotation(ms):
    d, data = ms
    want = o_merge_annotation(data)
    proto = get_protocol("afloc", dataset="ms-cxr")
    got = []
    for k in range(len(d)):
        s = d.load(k)
        for f in s.findings:
            got.append((s.meta["path"].split("mimic/")[1], d.prompt(f, "precise"), f.pathology,
                        proto.gt_mask(s, f)))
    assert [g[:3] for g in got] == [w[:3] for w in want]
    assert [w[2] for w in want] == ["Pleural Effusion", "Pleural Effusion", "Consolidation",
                                    "Cardiomegaly"]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g[3], w[3])
    assert max(int(w[3].max()) for w in want) == 2  # the summed overlap is kept


def test_ms_cxr_simple_prompt_rows_equal_ms_cxr_cls(tmp_path):
    """MS_CXR_CLS: one row per (image, category); every box of the category summed.

    (A phrase whose boxes carry two categories is grouped under its last one here; the
    official would split it. Such a phrase is assumed absent from MS-CXR.)"""
    anns = [a if a[1] != "Consolidation" else (a[0], "Pneumonia", *a[2:]) for a in ANNS]
    d, data = build_ms(tmp_path, anns)
    want = o_merge_annotation(data, use_cxr_text=False)
    proto = get_protocol("afloc", dataset="ms-cxr", prompt="simple")
    assert proto.stream == "plain" and proto.group == "category"
    grids = []
    got = []
    for k in range(len(d)):
        s = d.load(k)
        maps = [np.full((19, 19), float(j), np.float32) + np.eye(19, dtype=np.float32)
                for j in range(len(s.findings))]
        grids.append(maps)
        merged, _ = proto.merged_by_category(s.findings, maps)
        got += [(s.meta["path"].split("mimic/")[1], d.prompt(f, "simple"), f.pathology,
                 proto.gt_mask(s, f)) for f in merged]
        rows = proto.localization_rows(s, s.findings, maps, __import__(
            "bench.imaging.geometry", fromlist=["Frame"]).Frame(), None)
        assert [r["pathology"] for r in rows] == [g[2] for g in got[-len(rows):]]
    assert [g[:3] for g in got] == [w[:3] for w in want]
    assert len(want) == 3  # d2's two effusion phrases are one MS_CXR_CLS row
    assert max(int(w[3].max()) for w in want) == 2
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g[3], w[3])
    # the precise prompt keeps one row per phrase and the MS_CXR bootstrap order
    precise = get_protocol("afloc", dataset="ms-cxr", prompt="precise")
    assert precise.stream == "ms-cxr" and precise.group == "query"


# --------------------------------------------------------------------------- COVID Rural
def o_covid_mask(png_path):
    """`load_covid_rural`: PIL values as float32, letterboxed with INTER_AREA, >= 1e-5."""
    mask = np.array(Image.open(png_path)).astype("float32")
    if mask.sum() == 0:
        return None
    return (o_resize_img(mask, 224) >= 1e-5).astype("uint8")


def test_covid_mask_uses_the_png_values_as_the_official_loader(tmp_path):
    # 2241 x 2000: the row and column bands of the source pixel (10, 10) overlap the output
    # pixel (0, 0) by slivers (0.0045 and 0.05 px), an area fraction of ~2e-6: below 1e-5 for
    # a 0/1 mask, above it for the 0/255 PNG the official loader reads
    h, w = 2241, 2000
    base = tmp_path / "covid_rural_annot"
    write_jpg(base / "jpgs" / "case1.jpg", np.full((h, w), 90, np.uint8))
    m = np.zeros((h, w), np.uint8)
    m[10, 10] = 255
    m[600:900, 700:1000] = 255
    (base / "pngs_masks").mkdir(parents=True)
    Image.fromarray(m).save(base / "pngs_masks" / "case1.png")
    want = o_covid_mask(base / "pngs_masks" / "case1.png")
    binary = (o_resize_img((m > 0).astype(np.float32), 224) >= 1e-5).astype(np.uint8)
    assert (want != binary).any()  # the case discriminates between the two readings
    d = CovidRural(tmp_path)
    s = d.load(0)
    got = get_protocol("afloc", dataset="covid-rural").gt_mask(s, s.findings[0])
    np.testing.assert_array_equal(got, want)
    assert d.prompt(s.findings[0]) == "Findings suggesting pneumonia."
    np.testing.assert_array_equal(s.findings[0].mask, (m > 0).astype(np.uint8))


# ---------------------------------------------------------------------------------- RSNA
def o_rsna_grounding_mask(boxes_field: str):
    """`load_rsna_grounding`: int(float(v)) per coordinate, box_mapping(1024 -> 224), summed."""
    mask = None
    for box_str in boxes_field.split("|"):
        bbox = list(map(int, map(float, box_str.split(";"))))
        m = o_box2mask(o_box_mapping(bbox, 1024, 1024, 224), 224, 224)
        mask = m if mask is None else mask + m
    return mask


def test_rsna_grounding_boxes_truncated_before_mapping(tmp_path):
    root = tmp_path / "rsna"
    # 100.9 * 0.21875 = 22.07 but int(100.9) * 0.21875 = 21.875: the truncation moves the edge
    boxes = "100.9;200.9;50.9;60.9|120.0;210.0;40.0;30.0"
    write_csv(root / "stage_2_train_labels.csv", ["patientId", "x", "y", "width", "height",
                                                  "Target"],
              [["p1", 100.9, 200.9, 50.9, 60.9, 1], ["p1", 120.0, 210.0, 40.0, 30.0, 1],
               ["p2", "", "", "", "", 0]])
    write_dicom(root / "stage_2_train_images" / "p1.dcm", blocky(1024, 1024, seed=1))
    write_dicom(root / "stage_2_train_images" / "p2.dcm", blocky(1024, 1024, seed=2))
    write_csv(tmp_path / "list.csv", ["patientId", "sop_instance_uid", "boxes_xywh", "label"],
              [["p1", "1.2.3", boxes, 1], ["p2", "1.2.4", "", 0]])
    d = RSNA(root, split="test", split_list=tmp_path / "list.csv")
    s = d.load(0)
    got = get_protocol("afloc", dataset="rsna").gt_mask(s, s.findings[0])
    want = o_rsna_grounding_mask(boxes)
    np.testing.assert_array_equal(got, want)
    assert int(want.max()) == 2
    float_boxes = [[100.9, 200.9, 50.9, 60.9], [120.0, 210.0, 40.0, 30.0]]
    untruncated = sum(o_box2mask(o_box_mapping(b, 1024, 1024, 224), 224, 224)
                      for b in float_boxes)
    assert (untruncated != want).any()  # the case discriminates
    assert [len(d.load(k).findings) for k in range(len(d))] == [1, 0]


# ---------------------------------------------------------------------------------- SIIM
def test_siim_afloc_test_list_keeps_every_line(tmp_path):
    """AFLoc `classification/datasets.py:SIIM` appends one sample per line of its
    `SIIM_Pneumothorax/test_list.txt` ("<study>/<series>/<sop>.jpg <label>"), repeated lines
    included, with the line's label. (The official list is not GLoRIA's row split: its first
    image is in GLoRIA's train part, and its repeated lines are adjacent.)"""
    from bench.datasets.siim import SIIM

    root = tmp_path / "siim"
    (root).mkdir()
    (root / "train-rle.csv").write_text(
        "ImageId, EncodedPixels\nimg.neg,-1\nimg.one,1030 3 2045 2\nimg.two,5 1\n"
        "img.two,2048 4\n")
    for i, uid in enumerate(["img.neg", "img.one", "img.two"]):
        write_dicom(root / "dicom-images-train" / f"1.2.{i}" / f"1.3.{i}" / f"{uid}.dcm",
                    blocky(1024, 1024, seed=i))
    listing = ["1.2.2/1.3.2/img.two.jpg 1", "1.2.2/1.3.2/img.two.jpg 1",
               "1.2.0/1.3.0/img.neg.jpg 0", "1.2.1/1.3.1/img.one.jpg 1"]
    (tmp_path / "test_list.txt").write_text("\n".join(listing) + "\n")
    d = SIIM(root, split="afloc-test", split_list=str(tmp_path / "test_list.txt"))
    want = [(ln.split(" ")[0].split("/")[-1][:-4], int(ln.split(" ")[1])) for ln in listing]
    got = [(d.load(k).id, d.load(k).labels["Pneumothorax"]) for k in range(len(d))]
    assert got == want
    with pytest.raises(Exception, match="split_list"):
        SIIM(root, split="afloc-test")
