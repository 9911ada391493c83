"""CheXlocalize adapter: RLE and polygon ground truth, absent CXRs, alias, human benchmark."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from bench.datasets.chexlocalize import TASKS, CheXlocalize, cxr_id_of
from bench.errors import DataError

try:
    from tests.data_fixtures import blocky, write_csv, write_jpg
except ImportError:  # tests/ is not always a package
    from data_fixtures import blocky, write_csv, write_jpg

P1, P2, P3 = "patient1_study1_view1_frontal", "patient2_study1_view1_frontal", \
    "patient3_study1_view2_lateral"


def _rle(mask):
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode()}


def _hand_masks():
    opacity = np.zeros((32, 48), np.uint8)
    opacity[1:4, 1:5] = 1  # the rectangle polygon (1,1)-(4,3) filled with its outline
    edema = np.zeros((40, 32), np.uint8)
    edema[5:8, 0:3] = 1
    edema[8, 0] = 1  # polygon (0,5) (2,5) (2,7) (0,8): rows 5-7, cols 0-2, and its tip
    return opacity, edema


@pytest.fixture
def chx_root(tmp_path):
    root = tmp_path / "chx"
    for i, (pid, hw) in enumerate([(P1, (32, 48)), (P2, (40, 32)), (P3, (24, 24))]):
        a, b, c, d = pid.split("_")
        write_jpg(root / "CheXpert" / "test" / a / b / f"{c}_{d}.jpg", blocky(*hw, seed=i))
    opacity, edema = _hand_masks()
    seg = {P1: {t: _rle(opacity if t == "Airspace Opacity" else np.zeros((32, 48), np.uint8))
                for t in TASKS},
           P2: {"Edema": _rle(edema), "Cardiomegaly": _rle(np.zeros((40, 32), np.uint8))}}
    gt = root / "CheXlocalize"
    gt.mkdir(parents=True)
    (gt / "gt_segmentations_test.json").write_text(json.dumps(seg))
    ann = {P1: {"img_size": [32, 48], "Airspace Opacity": [[[1, 1], [4, 1], [4, 3], [1, 3]]]},
           P2: {"img_size": [40, 32], "Edema": [[[0, 5], [2, 5], [2, 7], [0, 8]]]}}
    (gt / "gt_annotations_test.json").write_text(json.dumps(ann))
    hb = {P1: {"Airspace Opacity": _rle(opacity[::-1].copy())}}
    (gt / "hb_segmentations_test.json").write_text(json.dumps(hb))
    (gt / "hb_salient_pt_test.json").write_text(json.dumps({P1: {"Airspace Opacity": [[2, 2]]}}))
    write_csv(root / "CheXpert" / "test_labels.csv",
              ["Path", "Lung Opacity", "Edema", "Cardiomegaly"],
              [["test/patient1/study1/view1_frontal.jpg", "1", "0", "0"],
               ["test/patient2/study1/view1_frontal.jpg", "0", "1", ""]])
    return root


def test_samples_masks_and_negatives(chx_root):
    d = CheXlocalize(chx_root, split="test")
    assert d.ids == [P1, P2, P3] and len(d) == 3
    opacity, edema = _hand_masks()
    s1, s2, s3 = (d.load(i) for i in range(3))
    assert [f.pathology for f in s1.findings] == list(TASKS)
    pos = {f.pathology: f for f in s1.findings if f.positive}
    assert list(pos) == ["Airspace Opacity"]
    np.testing.assert_array_equal(pos["Airspace Opacity"].mask, opacity)
    assert all(f.mask.shape == (32, 48) and not f.mask.any() for f in s1.findings
               if not f.positive)
    np.testing.assert_array_equal(next(f for f in s2.findings if f.positive).mask, edema)
    assert len(s3.findings) == 10 and not any(f.positive for f in s3.findings)
    assert s3.findings[0].mask.shape == (24, 24) and not s3.meta["in_gt"]
    # AFLoc's labels: mask.sum() > 0 per task
    assert s1.labels == {t: int(t == "Airspace Opacity") for t in TASKS}
    assert s2.labels == {t: int(t == "Edema") for t in TASKS}
    assert s3.labels == {t: 0 for t in TASKS}
    # labels=csv: CheXpert's, with the alias; blank left out; a CXR absent from the CSV is
    # labelled from its (empty) masks
    c1, c2, c3 = (CheXlocalize(chx_root, split="test", labels="csv").load(i) for i in range(3))
    assert c1.labels == {"Airspace Opacity": 1, "Edema": 0, "Cardiomegaly": 0}
    assert c2.labels == {"Airspace Opacity": 0, "Edema": 1}
    assert c3.labels == {t: 0 for t in TASKS}
    assert d.prompt(s1.findings[3]) == "Findings suggesting Airspace Opacity."
    rep = d.check()
    assert rep.usable and rep.counts["test"]["positives"] == 2
    assert rep.counts["test"]["images_with_positive"] == 2


def test_polygons_give_the_same_masks(chx_root):
    seg = CheXlocalize(chx_root, split="test")
    poly = CheXlocalize(chx_root, split="test", masks="annotations")
    for i in range(2):
        a, b = seg.load(i), poly.load(i)
        for fa, fb in zip(a.findings, b.findings):
            np.testing.assert_array_equal(fa.mask, fb.mask)


def test_human_benchmark(chx_root):
    d = CheXlocalize(chx_root, split="test")
    opacity, _ = _hand_masks()
    hb = d.hb_masks(P1)
    np.testing.assert_array_equal(hb["Airspace Opacity"], opacity[::-1])
    assert d.hb_points(P1) == {"Airspace Opacity": [[2, 2]]} and d.hb_masks(P3) == {}


def test_cxr_id():
    from pathlib import Path

    assert cxr_id_of(Path("/x/CheXpert/test/patient64541/study1/view1_frontal.jpg")) == \
        "patient64541_study1_view1_frontal"


def test_bad_entries(chx_root):
    path = chx_root / "CheXlocalize" / "gt_segmentations_test.json"
    data = json.loads(path.read_text())
    data[P2]["Pneumonia"] = data[P2]["Edema"]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as exc:
        CheXlocalize(chx_root, split="test")
    assert str(exc.value) == f"{path}, row {P2}/Pneumonia: unknown pathology 'Pneumonia'"
    d = CheXlocalize(chx_root, split="test", on_error="skip")
    assert d.skipped == {"unknown pathology": 1}
    data[P2].pop("Pneumonia")
    data[P2]["Edema"] = {"counts": "abc"}
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="malformed RLE"):
        CheXlocalize(chx_root, split="test")
    data[P2]["Edema"] = {"size": [40, 32], "counts": "not-an-rle-@@"}
    path.write_text(json.dumps(data))
    d = CheXlocalize(chx_root, split="test")
    with pytest.raises(DataError, match="Edema"):
        d.load(1)
    assert CheXlocalize(chx_root, split="test", on_error="skip").load(1) is None
    ann = chx_root / "CheXlocalize" / "gt_annotations_test.json"
    a = json.loads(ann.read_text())
    a[P1]["Airspace Opacity"] = [[[1, 1], [2, 2]]]
    ann.write_text(json.dumps(a))
    with pytest.raises(DataError, match="empty polygon"):
        CheXlocalize(chx_root, split="test", masks="annotations")


def test_missing_json_and_image_mismatch(chx_root):
    with pytest.raises(DataError, match="gt_segmentations_val.json: missing file"):
        CheXlocalize(chx_root, split="val")
    (chx_root / "CheXpert" / "test" / "patient2" / "study1" / "view1_frontal.jpg").unlink()
    rep = CheXlocalize(chx_root, split="test").check()
    assert not rep.usable and "1 CXRs in gt_segmentations_test.json have no image" in \
        rep.missing[0]


# -- issue 18, item 2: a malformed entry is an error or a counted skip of its CXR, never a label

def _snapshot(d) -> dict:
    out = {}
    for i in range(len(d)):
        s = d.load(i)
        out[s.id] = (s.labels, [(f.pathology, f.positive, f.mask.tobytes()) for f in s.findings])
    return out


@pytest.mark.parametrize("corrupt, message", [
    ("rle", "malformed RLE (needs size and counts)"),
    ("entry", "entry is not an object"),
    ("task", "unknown pathology 'Edemaa'"),
])
def test_malformed_entry_skips_its_cxr_whole(chx_root, corrupt, message):
    clean = _snapshot(CheXlocalize(chx_root, split="test"))
    path = chx_root / "CheXlocalize" / "gt_segmentations_test.json"
    data = json.loads(path.read_text())
    if corrupt == "rle":
        data[P2]["Edema"] = {"counts": "abc"}
        where = f"{P2}/Edema"
    elif corrupt == "entry":
        data[P2] = [1, 2]
        where = P2
    else:
        data[P2]["Edemaa"] = data[P2].pop("Edema")
        where = f"{P2}/Edemaa"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as exc:
        CheXlocalize(chx_root, split="test")
    assert str(exc.value) == f"{path}, row {where}: {message}"
    d = CheXlocalize(chx_root, split="test", on_error="skip")
    assert sum(d.skipped.values()) == 1 and d.ids == [P1, P3]
    got = _snapshot(d)
    assert got == {k: v for k, v in clean.items() if k != P2}  # the others untouched


def test_malformed_polygons_skip_their_cxr(chx_root):
    clean = _snapshot(CheXlocalize(chx_root, split="test", masks="annotations"))
    ann = chx_root / "CheXlocalize" / "gt_annotations_test.json"
    a = json.loads(ann.read_text())
    a[P1]["Airspace Opacity"].append([[1, 1], [2, 2]])  # one of two contours is bad
    ann.write_text(json.dumps(a))
    d = CheXlocalize(chx_root, split="test", masks="annotations", on_error="skip")
    assert d.ids == [P2, P3] and d.skipped == {"empty polygon": 1}
    assert _snapshot(d) == {k: v for k, v in clean.items() if k != P1}


def test_malformed_csv_label_row_skips_its_cxr(chx_root):
    """labels=csv: a bad row must not let its CXR fall back to mask labels."""
    clean = _snapshot(CheXlocalize(chx_root, split="test", labels="csv"))
    csv_path = chx_root / "CheXpert" / "test_labels.csv"
    lines = csv_path.read_text().splitlines()
    lines[2] = "test/patient2/study1/view1_frontal.jpg,0,maybe,"
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as exc:
        CheXlocalize(chx_root, split="test", labels="csv")
    assert str(exc.value).startswith(f"{csv_path}, row 3: label Edema must be")
    d = CheXlocalize(chx_root, split="test", labels="csv", on_error="skip")
    assert d.ids == [P1, P3] and sum(d.skipped.values()) == 1
    assert _snapshot(d) == {k: v for k, v in clean.items() if k != P2}
