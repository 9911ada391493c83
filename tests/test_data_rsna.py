"""RSNA adapter: hand-made fixture, bad rows, torchxrayvision cross-check, real label file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from bench.datasets.rsna import RSNA, default_split_list
from bench.errors import DataError

try:
    from tests.data_fixtures import blocky, write_csv, write_dicom, write_lines
except ImportError:  # tests/ is not always a package
    from data_fixtures import blocky, write_csv, write_dicom, write_lines

HEADER = ["patientId", "x", "y", "width", "height", "Target"]
XRV_DATA = Path(__import__("torchxrayvision").__file__).parent / "data"


@pytest.fixture
def rsna_root(tmp_path):
    root = tmp_path / "rsna"
    rows = [["pa", 100.0, 200.0, 50.0, 60.0, 1], ["neg", "", "", "", "", 0],
            ["pa", 600.5, 10.0, 30.0, 40.9, 1], ["pc", 0.0, 0.0, 1024.0, 20.0, 1],
            ["neg2", "", "", "", "", 0]]
    write_csv(root / "stage_2_train_labels.csv", HEADER, rows)
    for i, pid in enumerate(["pa", "neg", "pc", "neg2"]):
        write_dicom(root / "stage_2_train_images" / f"{pid}.dcm", blocky(1024, 1024, seed=i),
                    jpeg=True)
    write_csv(tmp_path / "list.csv", ["patientId", "sop_instance_uid", "boxes_xywh", "label"],
              [["pa", "1.2.3", "100;200;50;60|600.5;10;30;40.9", 1], ["neg", "1.2.4", "", 0]])
    return root


def test_fixture_samples_and_masks(rsna_root, tmp_path):
    d = RSNA(rsna_root, split="all")
    assert [len(d), d.pathologies] == [4, ("Pneumonia",)]
    s = d.load(0)
    assert s.id == "pa" and s.labels == {"Pneumonia": 1} and s.image.shape == (1024, 1024)
    np.testing.assert_array_equal(s.image, blocky(1024, 1024, seed=0))
    (f,) = s.findings
    np.testing.assert_array_equal(f.boxes, [[100, 200, 50, 60], [600.5, 10, 30, 40.9]])
    want = np.zeros((1024, 1024), np.uint8)
    want[200:260, 100:150] = 1
    want[10:50, 600:630] = 1  # floor(600.5)=600, floor(40.9)=40
    np.testing.assert_array_equal(f.mask, want)
    neg = d.load(1)
    assert neg.findings == [] and neg.labels == {"Pneumonia": 0}
    t = RSNA(rsna_root, split="test", split_list=tmp_path / "list.csv")
    assert [r.patient_id for r in t.index] == ["pa", "neg"]
    assert len(RSNA(rsna_root, split="test", split_list=tmp_path / "list.csv",
                    positives_only="true")) == 1


def test_cross_check_torchxrayvision(rsna_root, tmp_path):
    import torchxrayvision as xrv

    headers = write_csv(tmp_path / "hdr.csv", ["PatientID", "ViewPosition"],
                        [["pa", "PA"], ["neg", "AP"], ["pc", "AP"], ["neg2", "PA"]])
    x = xrv.datasets.RSNA_Pneumonia_Dataset(
        imgpath=str(rsna_root / "stage_2_train_images"),
        csvpath=str(rsna_root / "stage_2_train_labels.csv"), dicomcsvpath=str(headers),
        views=["*"], pathology_masks=True, extension=".dcm")
    ours = {s.id: s for s in RSNA(rsna_root, split="all")}
    assert len(x) == len(ours)
    col = x.pathologies.index("Pneumonia")
    for i in range(len(x)):
        pid = x.csv["patientId"].iloc[i]
        assert x.labels[i, col] == ours[pid].labels["Pneumonia"]
        if not ours[pid].labels["Pneumonia"]:
            continue
        item = x[i]
        img = np.rint((item["img"][0] / 1024 + 1) * 255 / 2)
        np.testing.assert_array_equal(img, ours[pid].image)
        np.testing.assert_array_equal(item["pathology_masks"][col][0], ours[pid].findings[0].mask)


@pytest.mark.parametrize("line, message", [
    ("bad,1,2,3", "malformed row (4 fields"),
    ("bad,a,2,3,4,1", "non-numeric box"),
    ("bad,10,10,0,5,1", "zero-area box"),
    ("bad,1030,10,50,5,1", "box outside the image"),
    ("bad,,,,,2", "Target must be 0 or 1"),
    ("bad,5,5,5,5,0", "negative row (Target 0) with box coordinates"),
    ("ok,1,1,5,5,1", "duplicate row for patientId ok"),
    ("ok,,,,,0", "patientId ok is both positive and negative"),
])
def test_bad_rows_raise_one_line_or_skip(tmp_path, line, message):
    root = tmp_path / "r"
    path = write_lines(root / "stage_2_train_labels.csv",
                       [",".join(HEADER), "ok,1,1,5,5,1", "neg,,,,,0", line])
    with pytest.raises(DataError) as exc:
        RSNA(root, split="all")
    msg = str(exc.value)
    assert msg.startswith(f"{path}, row 4: {message}") and "\n" not in msg
    d = RSNA(root, split="all", on_error="skip")
    assert sum(d.skipped.values()) == 1
    expect = {"neg"} if message.startswith(("duplicate", "patientId")) else {"ok", "neg"}
    assert {r.patient_id for r in d.index} == expect  # a bad row drops its whole image


def test_missing_and_corrupt_images(rsna_root):
    (rsna_root / "stage_2_train_images" / "neg.dcm").unlink()
    bad = rsna_root / "stage_2_train_images" / "pc.dcm"
    bad.write_bytes(bad.read_bytes()[:300])
    d = RSNA(rsna_root, split="all")
    with pytest.raises(DataError, match="neg.dcm: missing file"):
        d.load(1)
    with pytest.raises(DataError, match="pc.dcm"):
        d.load(2)
    s = RSNA(rsna_root, split="all", on_error="skip")
    assert s.load(1) is None and s.load(2) is None and s.load(0) is not None
    assert sum(s.skipped.values()) == 2 and s.skipped["missing file"] == 1
    (rsna_root / "stage_2_train_images" / "stray.dcm").write_bytes(b"")
    rep = RSNA(rsna_root, split="all").check()
    assert not rep.usable and "1 of 4 image files" in rep.missing[0]
    assert any("1 files in stage_2_train_images/ have no row" in n for n in rep.notes)


def test_missing_labels_file(tmp_path):
    with pytest.raises(DataError, match="stage_2_train_labels.csv"):
        RSNA(tmp_path, split="all")


def test_real_labels_counts_and_splits(tmp_path):
    """torchxrayvision's bundled stage_2_train_labels (zip), images absent."""
    os.symlink(XRV_DATA / "kaggle_stage_2_train_labels.csv.zip",
               tmp_path / "stage_2_train_labels.csv.zip")
    d = RSNA(tmp_path, split="all")
    assert d.row_counts["rows"] == 30227
    assert d.split_counts(d.index) == {"images": 26684, "positive": 6012, "boxes": 9555}
    per_image = np.bincount([len(r.boxes) for r in d.index if r.target])
    assert per_image[1:].tolist() == [2614, 3266, 119, 13]
    sizes = {s: len(RSNA(tmp_path, split=s)) for s in ("gloria-train", "gloria-val",
                                                         "gloria-test")}
    assert sizes == {"gloria-train": 18678, "gloria-val": 4003, "gloria-test": 4003}
    t = RSNA(tmp_path, split="test")
    assert t.split_counts(t.index) == {"images": 5337, "positive": 1218, "boxes": 1947}
    # the grounding list's boxes are the labels file's boxes, image by image
    assert all(sorted(r.boxes) == sorted(d.images[r.patient_id].boxes) for r in t.index)
    rep = t.check()
    assert rep.counts["all"]["rows"] == 30227 and not rep.usable
    assert rep.missing[0].startswith("5337 of 5337 image files")
    assert default_split_list().is_file()


def test_gloria_split_matches_sklearn_on_sorted_ids(tmp_path):
    from sklearn.model_selection import train_test_split

    ids = [f"id{i:03d}" for i in range(40)]
    rows = [[i, "", "", "", "", 0] for i in reversed(ids)]
    write_csv(tmp_path / "stage_2_train_labels.csv", HEADER, rows)
    train, rest = train_test_split(sorted(ids), test_size=0.3, random_state=0)
    test, val = train_test_split(rest, test_size=0.5, random_state=0)
    for split, want in (("gloria-train", train), ("gloria-val", val), ("gloria-test", test)):
        assert [r.patient_id for r in RSNA(tmp_path, split=split).index] == want


# -- issue 18, item 1: split membership is a function of the ids alone ------------------------

def _real_rsna_lines() -> list[str]:
    import zipfile

    with zipfile.ZipFile(XRV_DATA / "kaggle_stage_2_train_labels.csv.zip") as z:
        return z.read("stage_2_train_labels.csv").decode().splitlines()


def _gloria_reference(ids: list[str]) -> dict[str, list[str]]:
    """GLoRIA's `preprocess_pneumonia_data` split, computed here with sklearn directly."""
    from sklearn.model_selection import train_test_split

    train, rest = train_test_split(ids, test_size=0.3, random_state=0)
    test, val = train_test_split(rest, test_size=0.5, random_state=0)
    return {"gloria-train": train, "gloria-val": val, "gloria-test": test}


GLORIA = ("gloria-train", "gloria-val", "gloria-test")


def test_real_labels_clean_gloria_splits_are_glorias(tmp_path):
    """On the clean file the splits are exactly GLoRIA's (sorted unique patientIds)."""
    import pandas as pd

    os.symlink(XRV_DATA / "kaggle_stage_2_train_labels.csv.zip",
               tmp_path / "stage_2_train_labels.csv.zip")
    df = pd.read_csv(XRV_DATA / "kaggle_stage_2_train_labels.csv.zip")
    want = _gloria_reference(sorted(df["patientId"].unique()))
    for split in GLORIA:
        assert [r.patient_id for r in RSNA(tmp_path, split=split).index] == want[split]


@pytest.mark.parametrize("corrupt", ["target", "width", "box"])
def test_real_labels_one_bad_row_moves_nothing_else(tmp_path, corrupt):
    """One corrupted row of the real labels file, skipped: its image leaves every split and every
    other patientId keeps its split (and its boxes)."""
    lines = _real_rsna_lines()
    clean_root, bad_root = tmp_path / "clean", tmp_path / "bad"
    write_lines(clean_root / "stage_2_train_labels.csv", lines)
    clean = {s: RSNA(clean_root, split=s) for s in GLORIA}
    # a positive image with two boxes, in gloria-test: corrupt its second row
    victim = next(r for r in clean["gloria-test"].index if len(r.boxes) == 2)
    k = [i for i, line in enumerate(lines) if line.startswith(victim.patient_id + ",")][1]
    pid, *_ = lines[k].split(",")
    lines[k] = {"target": f"{pid},,,,,7", "width": f"{pid},1,2,3",
                "box": f"{pid},abc,152.0,213.0,379.0,1"}[corrupt]
    path = write_lines(bad_root / "stage_2_train_labels.csv", lines)
    with pytest.raises(DataError) as exc:
        RSNA(bad_root, split="gloria-test")
    assert str(exc.value).startswith(f"{path}, row {k + 1}: ") and "\n" not in str(exc.value)
    for split in GLORIA:
        got = RSNA(bad_root, split=split, on_error="skip")
        assert sum(got.skipped.values()) == 1
        want = [r for r in clean[split].index if r.patient_id != victim.patient_id]
        assert [(r.patient_id, r.target, r.boxes) for r in got.index] == \
            [(r.patient_id, r.target, r.boxes) for r in want]
    assert len(RSNA(bad_root, split="gloria-test", on_error="skip")) == 4002


def test_row_without_patient_id_stops_the_gloria_splits(tmp_path):
    """A row whose patientId is empty cannot be placed, so a gloria-* split would move other ids:
    an error naming the row even when skipping; the splits that do not draw stay usable."""
    ids = [f"id{i:03d}" for i in range(40)]
    lines = [",".join(HEADER)] + [f"{i},,,,,0" for i in ids] + [",,,,,0"]
    path = write_lines(tmp_path / "stage_2_train_labels.csv", lines)
    with pytest.raises(DataError) as exc:
        RSNA(tmp_path, split="gloria-val", on_error="skip")
    assert str(exc.value).startswith(f"{path}, row 42: ") and "patientId" in str(exc.value)
    d = RSNA(tmp_path, split="all", on_error="skip")
    assert len(d) == 40 and sum(d.skipped.values()) == 1


# -- issue 18, item 6: boxes are checked against the decoded image ----------------------------

def test_box_that_fills_no_pixel_of_a_resized_copy(tmp_path):
    """A resized (256 x 256) copy: a 3-px box at the right edge of the 1024 frame is 0.75 px
    wide there, which fills nothing. That is an error naming the image and the row, or a
    counted skip; the other images keep their exact masks."""
    root = tmp_path / "r"
    rows = [["pa", 100.0, 200.0, 48.0, 60.0, 1], ["edge", 1020.0, 10.0, 3.0, 40.0, 1],
            ["neg", "", "", "", "", 0]]
    write_csv(root / "stage_2_train_labels.csv", HEADER, rows)
    for i, pid in enumerate(["pa", "edge", "neg"]):
        write_dicom(root / "stage_2_train_images" / f"{pid}.dcm", blocky(256, 256, seed=i))
    d = RSNA(root, split="all")
    with pytest.raises(DataError) as exc:
        d.load(1)
    msg = str(exc.value)
    assert msg.startswith(f"{root / 'stage_2_train_images' / 'edge.dcm'}: ") and "\n" not in msg
    assert "stage_2_train_labels.csv row 3" in msg and "256x256" in msg
    s = RSNA(root, split="all", on_error="skip")
    assert s.load(1) is None and s.skipped == {"box fills no pixel of the decoded image": 1}
    (f,) = s.load(0).findings
    want = np.zeros((256, 256), np.uint8)
    want[50:65, 25:37] = 1  # 100/4, 200/4, 48/4, 60/4
    np.testing.assert_array_equal(f.mask, want)
    assert s.load(2).findings == []
