"""MIMIC-CXR adapter on a hand-made PhysioNet-style tree; labels against torchxrayvision."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bench.datasets.mimic_cxr import CHEXPERT_LABELS, MimicCXR
from bench.errors import DataError

try:
    from tests.data_fixtures import blocky, write_csv, write_jpg
except ImportError:  # tests/ is not always a package
    from data_fixtures import blocky, write_csv, write_jpg

# dicom_id, subject, study, view, split
IMAGES = [("d1", "10000032", "50414267", "PA", "train"),
          ("d2", "10000032", "50414267", "LATERAL", "train"),
          ("d3", "10000032", "53189527", "AP", "test"),
          ("d4", "11000011", "56699142", "PA", "train"),
          ("d5", "11000011", "56699142", "", "validate")]
REPORT = (" FINAL REPORT\n EXAMINATION:  CHEST\n \n FINDINGS: \n \n Lungs are clear.\n \n"
          " IMPRESSION: \n \n No acute process.\n")


def _labels_row(subject, study, **values):
    return [subject, study] + [values.get(name.replace(" ", "_"), "") for name in CHEXPERT_LABELS]


@pytest.fixture
def mimic_root(tmp_path):
    root = tmp_path / "mimic"
    write_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz",
              ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription",
               "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime"],
              [[d, s, st, "CHEST", v, 16, 24, 21800506, 213014.531]
               for d, s, st, v, _ in IMAGES], gz=True)
    write_csv(root / "mimic-cxr-2.0.0-split.csv",
              ["dicom_id", "study_id", "subject_id", "split"],
              [[d, st, s, sp] for d, s, st, _, sp in IMAGES])
    write_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", ["subject_id", "study_id",
                                                         *CHEXPERT_LABELS],
              [_labels_row("10000032", "50414267", Atelectasis="1.0", Edema="-1.0",
                           Cardiomegaly="0.0", Pleural_Effusion="1.0"),
               _labels_row("10000032", "53189527", No_Finding="1.0", Support_Devices="1.0"),
               _labels_row("11000011", "56699142", Pneumonia="-1.0", Pneumothorax="0.0")],
              gz=True)
    for i, (d, s, st, _, _) in enumerate(IMAGES):
        write_jpg(root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{st}" / f"{d}.jpg",
                  blocky(16, 24, seed=i))
    (root / "files" / "p10" / "p10000032" / "s50414267.txt").write_text(REPORT)
    other = root / "mimic-cxr-reports" / "files" / "p11" / "p11000011" / "s56699142.txt"
    other.parent.mkdir(parents=True)
    other.write_text(" FINAL REPORT\n CONCLUSION: Mild pneumonia.\n")
    return root


def test_frontal_filter_splits_labels_reports(mimic_root):
    d = MimicCXR(mimic_root, split="all")
    assert [r["dicom_id"] for r in d.records] == ["d1", "d3", "d4"]  # PA/AP only
    assert d.counts == {"images": 5, "excluded_view": 2, "excluded_ms_cxr": 0, "no_split": 0}
    assert [r["dicom_id"] for r in MimicCXR(mimic_root, split="train").records] == ["d1", "d4"]
    assert len(MimicCXR(mimic_root, split="all", views="*")) == 5
    s = d.load(0)
    np.testing.assert_array_equal(s.image, blocky(16, 24, seed=0))  # never re-inverted
    assert s.labels == {"Atelectasis": 1, "Cardiomegaly": 0, "Pleural Effusion": 1}
    assert math.isnan(s.meta["chexpert"]["Fracture"]) and s.meta["chexpert"]["Edema"] == -1
    assert s.report == "Lungs are clear. No acute process."
    assert (s.meta["findings"], s.meta["impression"]) == ("Lungs are clear.",
                                                          "No acute process.")
    assert d.load(1).report is None  # no report file for study 53189527
    assert d.load(2).report == "Mild pneumonia."  # mimic-cxr-reports/ layout, conclusion
    assert d.load(2).labels == {"Pneumothorax": 0}


def test_sectioned_csv_and_ms_cxr_exclusion(mimic_root, tmp_path):
    write_csv(mimic_root / "mimic_cxr_sectioned.csv",
              ["study", "impression", "findings", "last_paragraph", "comparison"],
              [["s53189527", "Tubes in place.", "Heart normal.\nLungs clear.", "", ""]])
    ms = tmp_path / "ms.json"
    ms.write_text(json.dumps({"images": [{"id": 1, "path": "files/p11/p11000011/s56699142/d4.jpg"}],
                              "annotations": [], "categories": []}))
    d = MimicCXR(mimic_root, split="all", exclude_ms_cxr=str(ms))
    assert [r["dicom_id"] for r in d.records] == ["d1", "d3"]
    assert d.counts["excluded_ms_cxr"] == 1  # d5, the same study's other image, has no view
    assert d.load(1).report == "Heart normal. Lungs clear. Tubes in place."
    csv_ms = write_csv(tmp_path / "ms.csv", ["dicom_id", "label_text"], [["d1", "x"]])
    assert [r["dicom_id"] for r in MimicCXR(mimic_root, split="all",
                                            exclude_ms_cxr=str(csv_ms)).records] == ["d3", "d4"]
    # by study (default): d1's study-mate d2 goes too (same report); by image: only d1
    d = MimicCXR(mimic_root, split="all", views="*", exclude_ms_cxr=str(csv_ms))
    assert [r["dicom_id"] for r in d.records] == ["d3", "d4", "d5"]
    assert d.counts["excluded_ms_cxr"] == 2
    d = MimicCXR(mimic_root, split="all", views="*", exclude_ms_cxr=str(csv_ms),
                 exclude_ms_cxr_by="image")
    assert [r["dicom_id"] for r in d.records] == ["d2", "d3", "d4", "d5"]
    assert len(MimicCXR(mimic_root, split="all", views="*", exclude_ms_cxr="none")) == 5


def test_labels_match_torchxrayvision(mimic_root):
    import torchxrayvision as xrv

    x = xrv.datasets.MIMIC_Dataset(
        imgpath=str(mimic_root / "files"),
        csvpath=str(mimic_root / "mimic-cxr-2.0.0-chexpert.csv.gz"),
        metacsvpath=str(mimic_root / "mimic-cxr-2.0.0-metadata.csv.gz"),
        views=["*"], unique_patients=False)
    ours = MimicCXR(mimic_root, split="all", views="*")
    by_id = {r["dicom_id"]: i for i, r in enumerate(ours.records)}
    assert sorted(by_id) == sorted(x.csv["dicom_id"])
    for i in range(len(x)):
        s = ours.load(by_id[x.csv["dicom_id"].iloc[i]])
        np.testing.assert_array_equal(np.rint((x[i]["img"][0] / 1024 + 1) * 255 / 2), s.image)
        no_finding = s.meta["chexpert"]["No Finding"] == 1
        for j, name in enumerate(x.pathologies):
            ours_name = "Pleural Effusion" if name == "Effusion" else name
            theirs = x.labels[i, j]
            if no_finding:  # torchxrayvision zeroes every label; we keep them as reported
                assert theirs == 0 or math.isnan(theirs)
                continue
            if math.isnan(theirs):
                assert ours_name not in s.labels
            else:
                assert s.labels[ours_name] == theirs


@pytest.mark.parametrize("which, rows, message", [
    ("metadata", [["d9", "x1", "5", "PA"]], "malformed ids"),
    ("metadata", [["d1", "10000032", "50414267", "PA"]], "duplicate dicom_id d1"),
    ("split", [["d1", "50414267", "10000032", "holdout"]], "unknown split 'holdout'"),
    ("chexpert", [["10000032", "50414267"] + ["2.0"] * 14], "label Atelectasis must be"),
])
def test_bad_rows(mimic_root, which, rows, message):
    import gzip

    name = {"metadata": "mimic-cxr-2.0.0-metadata.csv.gz", "split": "mimic-cxr-2.0.0-split.csv",
            "chexpert": "mimic-cxr-2.0.0-chexpert.csv.gz"}[which]
    path = mimic_root / name
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt") as fh:
        lines = fh.read().splitlines()
    width = len(lines[0].split(","))
    extra = [",".join(r + [""] * (width - len(r))) for r in rows]
    with opener(path, "wt") as fh:
        fh.write("\n".join(lines + extra) + "\n")
    with pytest.raises(DataError) as exc:
        MimicCXR(mimic_root, split="all")
    assert str(exc.value).startswith(f"{path}, row {len(lines) + 1}: {message}")
    d = MimicCXR(mimic_root, split="all", on_error="skip")
    assert sum(d.skipped.values()) == 1


def test_unknown_label_column_and_missing_files(mimic_root, tmp_path):
    write_csv(mimic_root / "mimic-cxr-2.0.0-chexpert.csv.gz", ["subject_id", "study_id", "Flu"],
              [["10000032", "50414267", "1.0"]], gz=True)
    with pytest.raises(DataError, match="unknown pathology column"):
        MimicCXR(mimic_root)
    with pytest.raises(DataError, match="metadata.csv: missing file"):
        MimicCXR(tmp_path)


def test_training_holds_ms_cxr_out_by_default(mimic_root, tmp_path, monkeypatch):
    from bench.errors import UsageError
    from bench.train.data import with_ms_cxr_held_out

    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("BENCH_DATA_TOML", str(tmp_path / "none.toml"))
    # no MS-CXR anywhere: a clear error that names both ways out
    with pytest.raises(UsageError, match="exclude_ms_cxr=/path/to/MS_CXR.*exclude_ms_cxr=none"):
        with_ms_cxr_held_out(MimicCXR, {})
    ms = tmp_path / "data" / "ms-cxr" / "MS_CXR_Local_Alignment_v1.0.0.csv"
    ms.parent.mkdir(parents=True)
    write_csv(ms, ["dicom_id", "label_text"], [["d1", "x"]])
    opts = with_ms_cxr_held_out(MimicCXR, {"views": "*"})
    assert opts == {"views": "*", "exclude_ms_cxr": str(ms)}
    assert [r["dicom_id"] for r in MimicCXR(mimic_root, split="all", **opts).records] == [
        "d3", "d4", "d5"]
    # the user's choice stands; datasets without MS-CXR images are left alone
    assert with_ms_cxr_held_out(MimicCXR, {"exclude_ms_cxr": "none"}) == {
        "exclude_ms_cxr": "none"}

    class Other:
        pass

    assert with_ms_cxr_held_out(Other, {"a": 1}) == {"a": 1}


def test_non_utf8_report_is_an_error_or_a_counted_skip(mimic_root):
    """A report that is not UTF-8 is not decoded with replacement characters silently."""
    report = mimic_root / "files" / "p10" / "p10000032" / "s50414267.txt"
    report.write_bytes(REPORT.encode().replace(b"clear", b"cl\xe9ar"))
    d = MimicCXR(mimic_root, split="all")
    with pytest.raises(DataError) as exc:
        d.load(0)
    assert str(exc.value).startswith(f"{report}: report is not UTF-8 (byte 0xe9 at ")
    s = MimicCXR(mimic_root, split="all", on_error="skip")
    assert s.load(0) is None and s.skipped == {"report is not UTF-8": 1}
    assert s.load(2).report == "Mild pneumonia."  # the others are untouched
