"""COVID Rural, ChestX-Det10 and paired-folder adapters on hand-made fixtures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.datasets.chestx_det10 import ChestXDet10
from bench.datasets.covid_rural import EMPTY, NO_MASK, CovidRural
from bench.datasets.paired_folder import PairedFolder
from bench.errors import DataError

try:
    from tests.data_fixtures import blocky, write_csv, write_jpg, write_png
except ImportError:  # tests/ is not always a package
    from data_fixtures import blocky, write_csv, write_jpg, write_png

# -- COVID Rural -----------------------------------------------------------------------------


def _labelme(points_by_label, hw):
    return {"version": "4.5.6", "flags": {}, "imagePath": "../x.jpg", "imageData": None,
            "imageHeight": hw[0], "imageWidth": hw[1],
            "shapes": [{"label": lab, "points": pts, "group_id": None, "shape_type": "polygon",
                        "flags": {}} for lab, pts in points_by_label]}


@pytest.fixture
def covid_root(tmp_path):
    base = tmp_path / "covid" / "covid_rural_annot"
    hw = (24, 32)
    for i, name in enumerate(["COVID-19-AR-1_a-XR", "COVID-19-AR-2_b-XR", "COVID-19-AR-3_c-XR"]):
        write_jpg(base / "jpgs" / f"{name}.jpg", blocky(*hw, seed=i))
    m = np.zeros(hw, np.uint8)
    m[2:5, 3:9] = 255
    write_png(base / "pngs_masks" / "COVID-19-AR-1_a-XR.png", m)
    write_png(base / "pngs_masks" / "COVID-19-AR-2_b-XR.png", np.zeros(hw, np.uint8))
    jsons = base / "jpgs" / "jsons"
    jsons.mkdir(parents=True)
    (jsons / "COVID-19-AR-3_c-XR.json").write_text(json.dumps(_labelme(
        [("left_lung", [[0, 0], [20, 0], [20, 20]]),
         ("subtle_hazy", [[1, 1], [4, 1], [4, 3], [1, 3]])], hw)))
    return tmp_path / "covid"


def test_covid_png_masks_empty_dropped_and_prompt(covid_root):
    d = CovidRural(covid_root)
    assert len(d) == 1 and d.skipped == {EMPTY: 1, NO_MASK: 1}
    s = d.load(0)
    want = np.zeros((24, 32), np.uint8)
    want[2:5, 3:9] = 1
    (f,) = s.findings
    np.testing.assert_array_equal(f.mask, want)
    assert f.pathology == "COVID-19" and d.prompt(f) == "Findings suggesting pneumonia."
    np.testing.assert_array_equal(s.image, blocky(24, 32, seed=0))
    assert d.check().usable


def test_covid_json_polygons_skip_lungs(covid_root):
    d = CovidRural(covid_root, masks="auto")
    assert len(d) == 2 and [s for s, _, _ in d.index][1].stem == "COVID-19-AR-3_c-XR"
    want = np.zeros((24, 32), np.uint8)
    want[1:4, 1:5] = 1  # the opacity polygon only; the lung field is not a finding
    np.testing.assert_array_equal(d.load(1).findings[0].mask, want)


def test_covid_bad_labelme(covid_root):
    js = covid_root / "covid_rural_annot" / "jpgs" / "jsons" / "COVID-19-AR-3_c-XR.json"
    js.write_text(json.dumps(_labelme([("subtle_hazy", [])], (24, 32))))
    with pytest.raises(DataError) as exc:
        CovidRural(covid_root, masks="json")
    assert str(exc.value) == f"{js}, row shapes[0]: empty polygon (0 vertices)"
    d = CovidRural(covid_root, masks="json", on_error="skip")
    assert d.skipped["empty polygon"] == 1 and len(d) == 0
    js.write_text("{not json")
    with pytest.raises(DataError, match="not a LabelMe json"):
        CovidRural(covid_root, masks="json")


# -- ChestX-Det10 ----------------------------------------------------------------------------

DET = [{"file_name": "1.png", "syms": ["Nodule", "Effusion", "Nodule"],
        "boxes": [[10, 20, 15, 26], [100, 100, 300, 200], [0, 0, 2, 3]]},
       {"file_name": "2.png", "syms": [], "boxes": []}]


@pytest.fixture
def det_root(tmp_path):
    root = tmp_path / "det"
    root.mkdir()
    (root / "test.json").write_text(json.dumps(DET))
    for i, e in enumerate(DET):
        write_png(root / "test_data" / e["file_name"], blocky(1024, 1024, seed=i))
    return root


def test_det10_boxes_xyxy(det_root):
    d = ChestXDet10(det_root, split="test")
    s = d.load(0)
    assert [f.pathology for f in s.findings] == ["Effusion", "Nodule"]
    nodule = s.findings[1]
    np.testing.assert_array_equal(nodule.boxes, [[10, 20, 5, 6], [0, 0, 2, 3]])
    want = np.zeros((1024, 1024), np.uint8)
    want[20:26, 10:15] = 1
    want[0:3, 0:2] = 1
    np.testing.assert_array_equal(nodule.mask, want)
    assert s.labels["Nodule"] == 1 and s.labels["Mass"] == 0
    empty = d.load(1)
    assert empty.findings == [] and sum(empty.labels.values()) == 0
    rep = d.check()
    assert rep.usable and rep.counts["test"] == {"images": 2, "no_finding": 1, "boxes": 3}


def test_det10_polygons_from_chestx_det(det_root):
    poly = [{"file_name": "1.png", "syms": ["Nodule", "Cardiomegaly", "Effusion", "Nodule"],
             "boxes": [[10, 20, 15, 26], [400, 400, 600, 600], [100, 100, 300, 200],
                       [0, 0, 2, 3]],
             "polygons": [[[10, 20], [14, 20], [14, 25]], [[400, 400], [600, 400], [600, 600]],
                          [[100, 100], [300, 100], [300, 200]], [[0, 0], [1, 0], [1, 2]]]}]
    (det_root / "ChestX_Det_test.json").write_text(json.dumps(poly))
    d = ChestXDet10(det_root, split="test")
    assert d.use_polygons
    nodule = d.load(0).findings[1]
    from PIL import Image, ImageDraw

    canvas = Image.new("1", (1024, 1024))
    for p in ([(10, 20), (14, 20), (14, 25)], [(0, 0), (1, 0), (1, 2)]):
        ImageDraw.Draw(canvas).polygon(p, outline=1, fill=1)
    np.testing.assert_array_equal(nodule.mask, np.array(canvas, dtype=np.uint8))
    assert nodule.meta["mask_from"] == "polygons"
    assert len(ChestXDet10(det_root, split="test", polygons="no").polys) == 0
    # a class with boxes but no polygon in the image's entry keeps its boxes (not an empty mask)
    poly[0]["syms"], poly[0]["boxes"] = poly[0]["syms"][1:3], poly[0]["boxes"][1:3]
    poly[0]["polygons"] = poly[0]["polygons"][1:3]  # Cardiomegaly, Effusion: no Nodule
    (det_root / "ChestX_Det_test.json").write_text(json.dumps(poly))
    d = ChestXDet10(det_root, split="test")
    effusion, nodule = d.load(0).findings
    assert effusion.meta["mask_from"] == "polygons"
    assert nodule.meta["mask_from"] == "boxes"
    want = np.zeros((1024, 1024), np.uint8)
    want[20:26, 10:15] = 1
    want[0:3, 0:2] = 1
    np.testing.assert_array_equal(nodule.mask, want)
    assert "1 (image, class) pairs with boxes have no polygon" in " ".join(d.check().notes)


@pytest.mark.parametrize("entry, message", [
    ({"file_name": "3.png", "syms": ["Flu"], "boxes": [[1, 1, 5, 5]]}, "unknown pathology 'Flu'"),
    ({"file_name": "3.png", "syms": ["Mass"], "boxes": []}, "malformed entry (1 syms, 0 boxes)"),
    ({"file_name": "3.png", "syms": ["Mass"], "boxes": [[5, 5, 5, 9]]}, "zero-area box"),
    ({"file_name": "3.png", "syms": ["Mass"], "boxes": [[1025, 5, 1030, 9]]}, "box outside"),
    ({"file_name": "1.png", "syms": [], "boxes": []}, "duplicate file_name 1.png"),
    ({"syms": [], "boxes": []}, "malformed entry (missing 'file_name')"),
])
def test_det10_bad_entries(det_root, entry, message):
    path = det_root / "test.json"
    path.write_text(json.dumps(DET + [entry]))
    with pytest.raises(DataError) as exc:
        ChestXDet10(det_root, split="test")
    assert str(exc.value).startswith(f"{path}, row [2]") and message in str(exc.value)
    d = ChestXDet10(det_root, split="test", on_error="skip")
    assert len(d) == 2 and sum(d.skipped.values()) == 1


# -- paired folder ---------------------------------------------------------------------------


@pytest.fixture
def paired_root(tmp_path):
    root = tmp_path / "fundus"
    write_csv(root / "pairs.csv", ["image", "report", "split"],
              [["img/a.png", "Drusen near the macula.", "test"],
               ["img/b.jpg", "Normal fundus.", "train"],
               ["img/c.png", "Haemorrhage.", ""]])
    write_png(root / "img" / "a.png", blocky(16, 24, seed=0))
    write_jpg(root / "img" / "b.jpg", blocky(16, 24, seed=1))
    write_png(root / "img" / "c.png", (blocky(16, 24, seed=2).astype(np.uint16) * 200))
    write_csv(root / "labels.csv", ["image", "Drusen", "Haemorrhage"],
              [["img/a.png", 1, 0], ["img/c.png", 0, ""]])
    m = np.zeros((16, 24), np.uint8)
    m[3:6, 4:10] = 1
    write_png(root / "masks" / "a" / "Drusen.png", m)
    write_png(root / "masks" / "a" / "Haemorrhage.png", np.zeros((16, 24), np.uint8))
    return root


def test_paired_folder(paired_root):
    d = PairedFolder(paired_root, split="test")
    assert [r["image"] for r in d.records] == ["img/a.png", "img/c.png"]  # blank split = test
    assert d.pathologies == ("Drusen", "Haemorrhage")
    assert set(d.tasks) == {"localization", "classification", "pretraining"}
    a = d.load(0)
    assert a.report == "Drusen near the macula." and a.labels == {"Drusen": 1, "Haemorrhage": 0}
    drusen, haem = a.findings
    want = np.zeros((16, 24), np.uint8)
    want[3:6, 4:10] = 1
    np.testing.assert_array_equal(drusen.mask, want)
    assert drusen.positive and not haem.positive
    c = d.load(1)
    assert c.image.dtype == np.uint16 and c.labels == {"Drusen": 0} and c.findings == []
    assert len(PairedFolder(paired_root, split="all")) == 3
    assert d.check().usable


@pytest.mark.parametrize("row, message", [
    (["img/a.png", "again", "test"], "duplicate image img/a.png"),
    (["img/d.png", "x", "holdout"], "unknown split 'holdout'"),
    (["img/d.gif", "x", "test"], "unsupported image type"),
    (["", "x", "test"], "empty image path"),
])
def test_paired_folder_bad_rows(paired_root, row, message):
    path = paired_root / "pairs.csv"
    with open(path, "a") as fh:
        fh.write(",".join(row) + "\n")
    with pytest.raises(DataError) as exc:
        PairedFolder(paired_root, split="all")
    assert str(exc.value).startswith(f"{path}, row 5: {message}")
    assert sum(PairedFolder(paired_root, split="all", on_error="skip").skipped.values()) == 1


def test_paired_folder_bad_label_and_missing_image(paired_root):
    (paired_root / "img" / "a.png").unlink()
    d = PairedFolder(paired_root, split="test")
    assert not d.check().usable
    with pytest.raises(DataError, match="a.png: missing file"):
        d.load(0)
    with open(paired_root / "labels.csv", "a") as fh:
        fh.write("img/b.jpg,maybe,1\n")
    with pytest.raises(DataError, match="labels.csv, row 4: label Drusen must be"):
        PairedFolder(paired_root)


# -- issue 18, items 4 and 15: all-or-nothing masks, one count per bad file -------------------

def _covid_snapshot(d) -> dict:
    out = {}
    for i in range(len(d)):
        s = d.load(i)
        out[s.id] = s.findings[0].mask.tobytes()
    return out


def test_covid_one_bad_polygon_skips_the_finding_whole(covid_root):
    jsons = covid_root / "covid_rural_annot" / "jpgs" / "jsons"
    hw = (24, 32)
    (jsons / "COVID-19-AR-1_a-XR.json").write_text(json.dumps(_labelme(
        [("hazy", [[2, 2], [8, 2], [8, 4]])], hw)))
    clean = _covid_snapshot(CovidRural(covid_root, masks="json"))
    js = jsons / "COVID-19-AR-3_c-XR.json"
    js.write_text(json.dumps(_labelme([("subtle_hazy", [[1, 1], [4, 1], [4, 3], [1, 3]]),
                                       ("dense", [[1, 1], [2, 2]])], hw)))
    with pytest.raises(DataError) as exc:
        CovidRural(covid_root, masks="json")
    assert str(exc.value) == f"{js}, row shapes[1]: empty polygon (2 vertices)"
    d = CovidRural(covid_root, masks="json", on_error="skip")
    assert [j.stem for j, _, _ in d.index] == ["COVID-19-AR-1_a-XR"]
    assert d.skipped == {"empty polygon": 1, NO_MASK: 1}  # b has no json: AFLoc's selection
    assert _covid_snapshot(d) == {k: v for k, v in clean.items() if k == "COVID-19-AR-1_a-XR"}


def test_covid_bad_file_counts_once(covid_root):
    js = covid_root / "covid_rural_annot" / "jpgs" / "jsons" / "COVID-19-AR-3_c-XR.json"
    js.write_text("{not json")
    d = CovidRural(covid_root, masks="json", on_error="skip")
    assert d.skipped == {"malformed LabelMe json": 1, NO_MASK: 2} and len(d) == 0
    png = covid_root / "covid_rural_annot" / "pngs_masks" / "COVID-19-AR-1_a-XR.png"
    png.write_bytes(png.read_bytes()[:40])
    d = CovidRural(covid_root, on_error="skip")
    assert d.skipped == {"unreadable mask": 1, EMPTY: 1, NO_MASK: 1} and len(d) == 0


def test_det10_box_outside_the_decoded_image(tmp_path):
    """Boxes are in the PNG's own frame: one that misses a 512-px image is refused at load
    (it would otherwise be an empty ground truth, IoU NaN, silently dropped)."""
    root = tmp_path / "det"
    root.mkdir()
    entries = [{"file_name": "1.png", "syms": ["Nodule"], "boxes": [[10, 20, 15, 26]]},
               {"file_name": "2.png", "syms": ["Mass", "Nodule"],
                "boxes": [[600, 600, 700, 650], [5, 5, 9, 9]]}]
    path = root / "test.json"
    path.write_text(json.dumps(entries))
    for i, e in enumerate(entries):
        write_png(root / "test_data" / e["file_name"], blocky(512, 512, seed=i))
    d = ChestXDet10(root, split="test")
    with pytest.raises(DataError) as exc:
        d.load(1)
    assert str(exc.value).startswith(f"{root / 'test_data' / '2.png'}: box [600.0, 600.0, "
                                     f"100.0, 50.0] of {path.name} row [1] fills no pixel of "
                                     f"the decoded 512x512 image (box outside the image")
    s = ChestXDet10(root, split="test", on_error="skip")
    assert s.load(1) is None and s.skipped == {"box fills no pixel of the decoded image": 1}
    want = np.zeros((512, 512), np.uint8)
    want[20:26, 10:15] = 1
    np.testing.assert_array_equal(s.load(0).findings[0].mask, want)
