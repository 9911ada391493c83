"""MS-CXR adapter: COCO json and csv fixtures give the same phrase groups and masks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.datasets.ms_cxr import MsCXR
from bench.errors import DataError

try:
    from tests.data_fixtures import blocky, write_csv, write_jpg
except ImportError:  # tests/ is not always a package
    from data_fixtures import blocky, write_csv, write_jpg

P1 = "files/p10/p10000032/s50414267/d1.jpg"
P2 = "files/p11/p11000011/s56699142/d2.jpg"
# (dicom, path, category, label_text, x, y, w, h), images 40 x 32 (h x w) and 32 x 48
ANNS = [("d1", P1, "Pneumonia", "Left basal opacity", 2.0, 3.0, 5.0, 4.0),
        ("d1", P1, "Pneumonia", "left basal opacity", 5.5, 5.2, 6.0, 3.9),
        ("d1", P1, "Cardiomegaly", "Enlarged heart", 10.0, 20.0, 10.0, 10.0),
        ("d2", P2, "Pleural Effusion", "Small right effusion", 0.0, 0.0, 48.0, 1.0)]
SIZES = {"d1": (40, 32), "d2": (32, 48)}


def _write_json(root, anns=ANNS, extra_images=()):
    cats = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
                          "Lung Opacity", "Pleural Effusion", "Pneumonia", "Pneumothorax"]
    images = [{"id": i + 1, "file_name": f"{d}.jpg", "path": p, "width": SIZES[d][1],
               "height": SIZES[d][0]} for i, (d, p) in enumerate([("d1", P1), ("d2", P2)])]
    images += list(extra_images)
    img_id = {"d1": 1, "d2": 2}
    annotations = [{"id": k + 1, "image_id": img_id[d], "category_id": cats.index(c) + 1,
                    "bbox": [x, y, w, h], "area": w * h, "width": SIZES[d][1],
                    "height": SIZES[d][0], "label_text": t}
                   for k, (d, _, c, t, x, y, w, h) in enumerate(anns)]
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(cats)]}
    path = root / "MS_CXR_Local_Alignment_v1.0.0.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def ms_root(tmp_path):
    root = tmp_path / "ms"
    root.mkdir()
    for i, (d, p) in enumerate([("d1", P1), ("d2", P2)]):
        write_jpg(tmp_path / "mimic" / p, blocky(*SIZES[d], seed=i))
    return root


def _expected_d1():
    m = np.zeros((40, 32), np.uint8)
    m[3:7, 2:7] = 1
    m[5:8, 5:11] = 1  # floor(5.5)=5, floor(5.2)=5, w 6, h floor(3.9)=3
    heart = np.zeros((40, 32), np.uint8)
    heart[20:30, 10:20] = 1
    return m, heart


def test_json_grouping_union_and_boxes(ms_root, tmp_path):
    _write_json(ms_root)
    d = MsCXR(ms_root, image_root=str(tmp_path / "mimic"))
    assert len(d) == 2
    s = d.load(0)
    assert s.id == "d1" and [f.phrase for f in s.findings] == ["Left basal opacity",
                                                               "Enlarged heart"]
    opacity, heart = _expected_d1()
    np.testing.assert_array_equal(s.findings[0].mask, opacity)
    np.testing.assert_array_equal(s.findings[1].mask, heart)
    np.testing.assert_array_equal(s.findings[0].boxes, [[2, 3, 5, 4], [5.5, 5.2, 6, 3.9]])
    assert [f.pathology for f in s.findings] == ["Pneumonia", "Cardiomegaly"]
    assert d.prompt(s.findings[0], "precise") == "left basal opacity"  # AFLoc lower-cases
    assert d.prompt(s.findings[0], "simple") == "Findings suggesting Pneumonia."
    np.testing.assert_array_equal(s.image, blocky(40, 32, seed=0))
    rep = d.check()
    assert rep.usable and rep.counts["test"]["pairs"] == 3 and rep.counts["test"]["boxes"] == 4


def test_csv_reads_the_same(ms_root, tmp_path):
    write_csv(ms_root / "MS_CXR_Local_Alignment_v1.1.0.csv",
              ["dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h",
               "image_width", "image_height", "split"],
              [[d, c, t, p, x, y, w, h, SIZES[d][1], SIZES[d][0], "test"]
               for d, p, c, t, x, y, w, h in ANNS])
    d = MsCXR(ms_root, image_root=str(tmp_path / "mimic" / "files"))  # image_root = .../files
    s = d.load(0)
    opacity, heart = _expected_d1()
    np.testing.assert_array_equal(s.findings[0].mask, opacity)
    np.testing.assert_array_equal(d.load(1).findings[0].mask[0], np.ones(48))


@pytest.mark.parametrize("change, message, where", [
    ("category", "unknown pathology 'Flu'", "annotations[3]"),
    ("zero", "zero-area box", "annotations[0]"),
    ("outside", "box outside the image", "annotations[0]"),
    ("dup_ann", "duplicate annotation id 1", "annotations[1]"),
    ("dup_img", "duplicate image id 1", "images[2]"),
    ("text", "empty label_text", "annotations[0]"),
])
def test_bad_entries(ms_root, change, message, where):
    anns = list(ANNS)
    extra = ()
    if change == "zero":
        anns[0] = anns[0][:6] + (0.0, 4.0)
    elif change == "outside":
        anns[0] = anns[0][:4] + (60.0, 3.0, 5.0, 4.0)
    elif change == "dup_img":
        extra = ({"id": 1, "path": P1, "width": 32, "height": 40},)
    elif change == "text":
        anns[0] = anns[0][:3] + ("",) + anns[0][4:]
    path = _write_json(ms_root, anns, extra)
    data = json.loads(path.read_text())
    if change == "dup_ann":
        data["annotations"][1]["id"] = 1
    if change == "category":  # "Pleural Effusion" (used by annotation 3) renamed
        data["categories"][5]["name"] = "Flu"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as exc:
        MsCXR(ms_root)
    assert str(exc.value).startswith(f"{path}, row {where}: {message}")
    d = MsCXR(ms_root, on_error="skip")
    assert sum(d.skipped.values()) == 1


def test_missing_file_and_image(ms_root, tmp_path):
    with pytest.raises(DataError, match="MS_CXR_Local_Alignment_v1.0.0.json: missing file"):
        MsCXR(ms_root)
    _write_json(ms_root)
    d = MsCXR(ms_root)  # image_root defaults to root: no images there
    with pytest.raises(DataError, match="d1.jpg: missing file"):
        d.load(0)
    assert not d.check().usable


def test_one_sample_per_phrase(ms_root, tmp_path):
    _write_json(ms_root)
    d = MsCXR(ms_root, image_root=str(tmp_path / "mimic"), per="phrase")
    assert len(d) == 3
    ids = [d.load(i).id for i in range(3)]
    assert ids == ["d1:0", "d1:1", "d2:0"]
    s = d.load(1)
    assert [f.phrase for f in s.findings] == ["Enlarged heart"]
    np.testing.assert_array_equal(s.findings[0].mask, _expected_d1()[1])


def test_a_box_over_the_edge_is_clipped_not_refused():
    """The official loaders fill boxes by array slicing, which clips an overhang."""
    from bench.imaging.masks import box_problem, boxes_to_mask

    assert box_problem((28.0, 3.0, 5.5, 4.0), (40, 32)) is None  # 1.5 px past the right edge
    assert box_problem((-0.5, 3.0, 5.0, 4.0), (40, 32)) is None
    assert box_problem((32.0, 3.0, 5.0, 4.0), (40, 32)).startswith("box outside the image")
    assert box_problem((-5.0, 3.0, 5.0, 4.0), (40, 32)).startswith("box outside the image")
    m = boxes_to_mask([(28.0, 3.0, 5.5, 4.0)], (40, 32))
    want = np.zeros((40, 32), np.uint8)
    want[3:7, 28:32] = 1
    np.testing.assert_array_equal(m, want)


# -- issue 18, item 4: ground truth is all or nothing -----------------------------------------

def _snapshot(d) -> dict:
    out = {}
    for i in range(len(d)):
        s = d.load(i)
        out[s.id] = [(f.pathology, f.phrase, f.boxes.tolist(), f.mask.tobytes())
                     for f in s.findings]
    return out


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_one_bad_box_of_a_phrase_drops_its_image_whole(ms_root, tmp_path, fmt):
    """The second box of d1's 'left basal opacity' is bad: the phrase must not be scored with
    half its ground truth. The image goes whole (the simple prompt merges its phrases by
    category), counted once; d2 is untouched."""
    anns = list(ANNS)
    anns[1] = anns[1][:6] + (0.0, 3.9)  # zero width
    if fmt == "json":
        _write_json(ms_root)
        clean = _snapshot(MsCXR(ms_root, image_root=str(tmp_path / "mimic")))
        path, where = _write_json(ms_root, anns), "annotations[1]"
    else:
        header = ["dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h",
                  "image_width", "image_height"]
        rows = [[d, c, t, p, x, y, w, h, SIZES[d][1], SIZES[d][0]]
                for d, p, c, t, x, y, w, h in ANNS]
        write_csv(ms_root / "MS_CXR_Local_Alignment_v1.0.0.csv", header, rows)
        clean = _snapshot(MsCXR(ms_root, image_root=str(tmp_path / "mimic")))
        rows[1][6] = 0.0
        path = write_csv(ms_root / "MS_CXR_Local_Alignment_v1.0.0.csv", header, rows)
        where = "3"
    with pytest.raises(DataError) as exc:
        MsCXR(ms_root)
    assert str(exc.value).startswith(f"{path}, row {where}: zero-area box")
    d = MsCXR(ms_root, image_root=str(tmp_path / "mimic"), on_error="skip")
    assert sum(d.skipped.values()) == 1 and len(d) == 1
    assert _snapshot(d) == {"d2": clean["d2"]}
    assert len(MsCXR(ms_root, image_root=str(tmp_path / "mimic"), on_error="skip",
                     per="phrase")) == 1


def test_annotation_of_an_unknown_image_says_so(ms_root):
    """A dangling image_id is named, not reported as "KeyError: 999"."""
    path = _write_json(ms_root)
    data = json.loads(path.read_text())
    data["annotations"][3]["image_id"] = 999
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as exc:
        MsCXR(ms_root)
    assert str(exc.value) == f"{path}, row annotations[3]: image_id 999 is not in images[]"
    d = MsCXR(ms_root, on_error="skip")
    assert d.skipped == {"annotation of an unknown image": 1} and len(d) == 1


def test_image_of_another_size_is_an_error_or_a_counted_skip(ms_root, tmp_path):
    _write_json(ms_root)
    write_jpg(tmp_path / "mimic" / P1, blocky(48, 32, seed=0))  # annotations say 40 x 32
    d = MsCXR(ms_root, image_root=str(tmp_path / "mimic"))
    with pytest.raises(DataError, match="image is 32x48, annotations say 32x40"):
        d.load(0)
    s = MsCXR(ms_root, image_root=str(tmp_path / "mimic"), on_error="skip")
    assert s.load(0) is None and s.skipped == {"image size differs from the annotations": 1}
    assert s.load(1).id == "d2"
