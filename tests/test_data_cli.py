"""`bench data check`: counts, missing/malformed listing, exit codes, data-folder lookup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

try:
    from tests.data_fixtures import blocky, write_csv, write_dicom, write_png
    from tests.test_core_runner import run_cli as _run
except ImportError:  # tests/ is not always a package
    from data_fixtures import blocky, write_csv, write_dicom, write_png
    from test_core_runner import run_cli as _run

XRV_DATA = Path(__import__("torchxrayvision").__file__).parent / "data"




@pytest.fixture
def paired(tmp_path):
    root = tmp_path / "paired-folder"
    write_csv(root / "pairs.csv", ["image", "report"], [["a.png", "r1"], ["b.png", "r2"]])
    write_png(root / "a.png", blocky(16, 16, seed=0))
    write_png(root / "b.png", blocky(16, 16, seed=1))
    return root


def test_usable_copy_exits_zero(paired, capsys):
    code, out, _ = _run(["data", "check", "paired-folder", "--root", str(paired)], capsys)
    assert code == 0 and "usable: yes" in out and "images 2" in out


def test_bench_data_folder_lookup(paired, capsys, monkeypatch):
    monkeypatch.setenv("BENCH_DATA", str(paired.parent))
    code, out, _ = _run(["data", "check", "paired-folder"], capsys)
    assert code == 0 and str(paired) in out


def test_missing_corrupt_and_malformed_listed(paired, capsys):
    (paired / "b.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with open(paired / "pairs.csv", "a") as fh:
        fh.write("c.png,r3,holdout\n")  # one field too many for the header
        fh.write("d.png,r4\n")
    code, out, err = _run(["data", "check", "paired-folder", "--root", str(paired)], capsys)
    assert code == 1 and "usable: NO" in out
    assert "1 of 3 image files of split 'test' are missing" in out
    assert f"{paired / 'd.png'}" in out
    assert f"{paired / 'b.png'}: truncated PNG" in out
    # every skipped problem with its file and row, as `bench run --on-error raise` says it
    assert f"  {paired / 'pairs.csv'}, row 4: malformed row (3 fields, header has 2)\n" in out
    assert "1 skipped: malformed row" not in out
    assert err.startswith("error: dataset 'paired-folder'")
    code, out, err = _run(["data", "check", "paired-folder", "--root", str(paired),
                           "--on-error", "raise"], capsys)
    assert code == 1 and err.strip() == (
        f"error: {paired / 'pairs.csv'}, row 4: malformed row (3 fields, header has 2)")


def test_unknown_dataset_and_split(paired, capsys):
    code, _, err = _run(["data", "check", "rsn", "--root", str(paired)], capsys)
    assert code == 2 and "Did you mean: rsna" in err
    code, _, err = _run(["data", "check", "paired-folder", "--root", str(paired),
                         "--split", "nope"], capsys)
    assert code == 2 and "no split 'nope'" in err


def test_real_rsna_and_siim_labels_only(tmp_path, capsys):
    rsna, siim = tmp_path / "rsna", tmp_path / "siim"
    rsna.mkdir()
    siim.mkdir()
    os.symlink(XRV_DATA / "kaggle_stage_2_train_labels.csv.zip",
               rsna / "stage_2_train_labels.csv.zip")
    os.symlink(XRV_DATA / "siim-pneumothorax-train-rle.csv.gz", siim / "train-rle.csv.gz")
    code, out, _ = _run(["data", "check", "rsna", "--root", str(rsna)], capsys)
    assert code == 1
    assert "all: rows 30227, images 26684, positive 6012, boxes 9555" in out
    assert "test: images 5337, positive 1218, boxes 1947" in out
    assert "5337 of 5337 image files of split 'test' are missing" in out
    code, out, _ = _run(["data", "check", "siim", "--root", str(siim), "--split", "all"], capsys)
    assert code == 1
    assert "all: rows 12954, images 12047, positive_images 2669, positive_rows 3576" in out
    assert "12047 of 12047 image files of split 'all' are missing" in out


def test_option_passthrough_and_usable_rsna(tmp_path, capsys):
    root = tmp_path / "rsna"
    write_csv(root / "stage_2_train_labels.csv", ["patientId", "x", "y", "width", "height",
                                                  "Target"],
              [["p1", 1, 1, 4, 4, 1], ["p2", "", "", "", "", 0]])
    for i, pid in enumerate(["p1", "p2"]):
        write_dicom(root / "stage_2_train_images" / f"{pid}.dcm", blocky(64, 64, seed=i),
                    jpeg=True)
    write_csv(tmp_path / "list.csv", ["patientId", "sop_instance_uid", "boxes_xywh", "label"],
              [["p1", "1.2", "1;1;4;4", 1]])
    code, out, _ = _run(["data", "check", "rsna", "--root", str(root),
                         "-o", f"split_list={tmp_path / 'list.csv'}"], capsys)
    assert code == 0 and "test: images 1, positive 1, boxes 1" in out
    assert "usable: yes" in out


def test_many_skipped_rows_are_listed_with_file_and_row(tmp_path, capsys):
    """Up to 20 lines per reason, then how many more."""
    root = tmp_path / "rsna"
    lines = ["patientId,x,y,width,height,Target"] + [f"ok{i},,,,,0" for i in range(30)]
    lines += [f"bad{i},,,,,7" for i in range(23)] + ["neg9,1,2,3"]
    (root).mkdir()
    labels = root / "stage_2_train_labels.csv"
    labels.write_text("\n".join(lines) + "\n")
    code, out, _ = _run(["data", "check", "rsna", "--root", str(root), "--split", "all"], capsys)
    assert code == 1
    assert f"  {labels}, row 32: Target must be 0 or 1, got '7'\n" in out
    assert f"  {labels}, row 51: Target must be 0 or 1, got '7'\n" in out
    assert f"{labels}, row 52:" not in out
    assert "  ... and 3 more: Target must be 0 or 1, got '7'\n" in out
    assert f"  {labels}, row 55: malformed row (4 fields, header has 6)\n" in out


def test_an_rsna_folder_with_its_own_grounding_list_checks_against_it(tmp_path, capsys):
    """A synthetic RSNA copy read by the real adapter uses the folder's grounding_test.csv
    (AFLoc's name for the list), not the packaged MedKLIP list of other ids."""
    try:
        from tests.synth_helpers import tiny_world
    except ImportError:
        from synth_helpers import tiny_world

    root = tiny_world() / "rsna"
    assert (root / "grounding_test.csv").is_file()
    code, out, _ = _run(["data", "check", "rsna", "--root", str(root)], capsys)
    assert code == 0 and "usable: yes" in out
    from bench.datasets.rsna import RSNA, default_split_list

    assert RSNA(root).split_list == root / "grounding_test.csv"
    plain = tmp_path / "plain"
    write_csv(plain / "stage_2_train_labels.csv", ["patientId", "x", "y", "width", "height",
                                                   "Target"], [["p2", "", "", "", "", 0]])
    assert RSNA(plain, split="all").split_list == default_split_list()
