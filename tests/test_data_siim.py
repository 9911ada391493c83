"""SIIM adapter: hand-made RLE + DICOM tree, torchxrayvision cross-check, real RLE file."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from bench.datasets.siim import SIIM, parse_rle_csv
from bench.errors import DataError
from bench.imaging.masks import siim_rle_to_mask

try:
    from tests.data_fixtures import blocky, write_dicom, write_lines
except ImportError:  # tests/ is not always a package
    from data_fixtures import blocky, write_dicom, write_lines

XRV_DATA = Path(__import__("torchxrayvision").__file__).parent / "data"
HW = (1024, 1024)


def _hand_mask(runs: list[tuple[int, int]]) -> np.ndarray:
    """Absolute 0-based (start, length) runs in column-major order, painted by hand."""
    m = np.zeros(HW, np.uint8)
    for start, length in runs:
        for p in range(start, start + length):
            m[p % 1024, p // 1024] = 1
    return m


@pytest.fixture
def siim_root(tmp_path):
    root = tmp_path / "siim"
    lines = ["ImageId, EncodedPixels",  # values as in torchxrayvision's copy (no space)
             "img.neg,-1",
             "img.one,1030 3 2045 2",  # runs at 1030..1032 and 3078..3079 (1033 + 2045)
             "img.two,5 1",
             "img.two,2048 4"]
    write_lines(root / "train-rle.csv", lines)
    for i, uid in enumerate(["img.neg", "img.one", "img.two"]):
        write_dicom(root / "dicom-images-train" / f"1.2.{i}" / f"1.3.{i}" / f"{uid}.dcm",
                    blocky(1024, 1024, seed=i), jpeg=True, sop_uid=f"1.2.840.{i}")
    return root


def test_fixture_masks_or_instances(siim_root):
    d = SIIM(siim_root, split="all")
    assert d.index == ["img.neg", "img.one", "img.two"]
    neg, one, two = (d.load(i) for i in range(3))
    assert neg.findings == [] and neg.labels == {"Pneumothorax": 0}
    np.testing.assert_array_equal(neg.image, blocky(1024, 1024, seed=0))
    np.testing.assert_array_equal(one.findings[0].mask, _hand_mask([(1030, 3), (3078, 2)]))
    np.testing.assert_array_equal(two.findings[0].mask, _hand_mask([(5, 1), (2048, 4)]))
    assert one.labels == two.labels == {"Pneumothorax": 1} and two.meta["n_instances"] == 2


def test_stage1_values_with_leading_space_and_gz(tmp_path):
    raw = "ImageId, EncodedPixels\na, -1\nb, 0 2\n"
    with gzip.open(tmp_path / "train-rle.csv.gz", "wt") as fh:
        fh.write(raw)
    rows, images, _, _ = parse_rle_csv(tmp_path / "train-rle.csv.gz", None)
    assert [(r.image_id, r.rle) for r in rows] == [("a", "-1"), ("b", "0 2")]
    assert [i.positive for i in images.values()] == [False, True]


def test_cross_check_torchxrayvision_single_instance(siim_root):
    import torchxrayvision as xrv

    xrv.datasets._cache_dict.pop("siim_file_map", None)  # it caches the tree walk globally
    x = xrv.datasets.SIIM_Pneumothorax_Dataset(
        imgpath=str(siim_root / "dicom-images-train"), csvpath=str(siim_root / "train-rle.csv"),
        pathology_masks=True, unique_patients=False)
    xrv.datasets._cache_dict.pop("siim_file_map", None)
    ours = SIIM(siim_root, split="all")
    by_id = {ours.index[i]: ours.load(i) for i in range(len(ours))}
    for i in range(len(x)):
        item = x[i]
        s = by_id[x.csv["ImageId"].iloc[i]]
        assert item["lab"][0] == s.labels["Pneumothorax"]
        img = np.rint((item["img"][0] / 1024 + 1) * 255 / 2)
        np.testing.assert_array_equal(img, s.image)
        if s.id == "img.one":  # single instance: torchxrayvision decodes it the same way
            np.testing.assert_array_equal(item["pathology_masks"][0][0], s.findings[0].mask)
        if s.id == "img.two":  # it keeps only the last instance; we OR them
            last = item["pathology_masks"][0][0].astype(np.uint8)
            assert (s.findings[0].mask >= last).all() and s.findings[0].mask.sum() > last.sum()


@pytest.mark.parametrize("line, message", [
    ("x, 1 2 3", "odd number of values in EncodedPixels"),
    ("x, 1 a", "non-integer EncodedPixels"),
    ("x, 1048570 9", "EncodedPixels runs past the end"),
    ("x, 1 2, 7", "malformed row (3 fields"),
    (", 1 2", "empty ImageId"),
    ("ok, 1 2", "duplicate row for ImageId ok"),
    ("neg, 4 4", "ImageId neg has both '-1' and encoded rows"),
])
def test_bad_rows(tmp_path, line, message):
    path = write_lines(tmp_path / "train-rle.csv",
                       ["ImageId, EncodedPixels", "ok, 1 2", "neg, -1", line])
    with pytest.raises(DataError) as exc:
        SIIM(tmp_path, split="all")
    msg = str(exc.value)
    assert msg.startswith(f"{path}, row 4: {message}") and "\n" not in msg
    d = SIIM(tmp_path, split="all", on_error="skip")
    assert sum(d.skipped.values()) == 1
    dropped = {"ok"} if "ok" in message else {"neg"} if "neg" in message else set()
    assert set(d.index) == {"ok", "neg"} - dropped


def test_missing_dicom_skip_and_check(siim_root):
    os.remove(next((siim_root / "dicom-images-train").rglob("img.one.dcm")))
    d = SIIM(siim_root, split="all")
    with pytest.raises(DataError, match="img.one.dcm"):
        d.load(1)
    s = SIIM(siim_root, split="all", on_error="skip")
    assert s.load(1) is None and s.skipped["missing file"] == 1
    rep = SIIM(siim_root, split="all").check()
    assert not rep.usable and rep.missing[0].startswith("1 of 3 image files")


def test_real_rle_counts_splits_and_decoding(tmp_path):
    """torchxrayvision's bundled SIIM RLE (stage-1 train + test), images absent."""
    import torchxrayvision as xrv

    os.symlink(XRV_DATA / "siim-pneumothorax-train-rle.csv.gz", tmp_path / "train-rle.csv.gz")
    d = SIIM(tmp_path, split="all")
    assert len(d.rows) == 12954 and len(d.images) == 12047
    assert sum(i.positive for i in d.images.values()) == 2669
    assert sum(r.positive for r in d.rows) == 3576
    per_image = np.bincount([len(i.rles) for i in d.images.values() if i.positive])
    assert per_image[1:4].tolist() == [2045, 447, 112] and per_image[4:].sum() == 65
    # GLoRIA: split the rows (ceil(0.3 * 12954) = 3887, halved -> 1943 test rows), then its
    # dataset iterates `df.ImageId.unique()`: 1903 test images
    import pandas as pd
    from sklearn.model_selection import train_test_split

    df = pd.read_csv(tmp_path / "train-rle.csv.gz")
    _, rest = train_test_split(df, test_size=0.3, random_state=0)
    test_df, val_df = train_test_split(rest, test_size=0.5, random_state=0)
    for split, ref in (("gloria-row-test", test_df), ("gloria-row-val", val_df)):
        ids = SIIM(tmp_path, split=split).index
        assert ids == ref.ImageId.unique().tolist()
    assert len(test_df) == 1943 and len(SIIM(tmp_path, split="gloria-row-test")) == 1903
    assert len(SIIM(tmp_path, split="image-test")) == 1807
    # first positive: offset 557374 -> row 318, col 544
    first = next(r for r in d.rows if r.positive)
    assert first.rle.split()[0] == "557374"
    assert siim_rle_to_mask(first.rle)[318, 544] == 1
    assert siim_rle_to_mask(first.rle)[317, 544] == 0
    # decoded masks against torchxrayvision's own decoding (single-instance images)
    xrv.datasets._cache_dict["siim_file_map"] = {}
    x = xrv.datasets.SIIM_Pneumothorax_Dataset(imgpath=str(tmp_path), pathology_masks=True)
    xrv.datasets._cache_dict.pop("siim_file_map", None)
    singles = [k for k, v in d.images.items() if v.positive and len(v.rles) == 1][:4]
    multi = next(k for k, v in d.images.items() if len(v.rles) == 3)
    for image_id in singles + [multi]:
        theirs = x.get_pathology_mask_dict(image_id, 1024)[0][0].astype(np.uint8)
        ours = d.mask(image_id)
        if image_id == multi:
            assert (ours >= theirs).all() and ours.sum() > theirs.sum()
        else:
            np.testing.assert_array_equal(ours, theirs)
            assert ours.sum() > 0
    rep = d.check()
    assert rep.counts["all"] == {"rows": 12954, "images": 12047, "positive_images": 2669,
                                 "positive_rows": 3576}
    assert not rep.usable and rep.missing[0].startswith("12047 of 12047")


# -- issue 18, item 1: split membership is a function of the ids alone ------------------------

ROW_SPLITS = ("gloria-row-train", "gloria-row-val", "gloria-row-test")
IMAGE_SPLITS = ("image-train", "image-val", "image-test")


def _real_siim_lines() -> list[str]:
    with gzip.open(XRV_DATA / "siim-pneumothorax-train-rle.csv.gz", "rt") as fh:
        return fh.read().splitlines()


def test_real_rle_clean_image_splits_are_glorias_rule(tmp_path):
    import pandas as pd
    from sklearn.model_selection import train_test_split

    os.symlink(XRV_DATA / "siim-pneumothorax-train-rle.csv.gz", tmp_path / "train-rle.csv.gz")
    ids = pd.read_csv(tmp_path / "train-rle.csv.gz")["ImageId"].unique().tolist()
    train, rest = train_test_split(ids, test_size=0.3, random_state=0)
    test, val = train_test_split(rest, test_size=0.5, random_state=0)
    for split, want in zip(IMAGE_SPLITS, (train, val, test)):
        assert SIIM(tmp_path, split=split).index == want


@pytest.mark.parametrize("which", ["negative", "second-instance"])
def test_real_rle_one_bad_row_moves_nothing_else(tmp_path, which):
    """One corrupted row of the real RLE file, skipped: its image leaves every split, every other
    image keeps its row and image splits (and its instances)."""
    lines = _real_siim_lines()
    clean_root, bad_root = tmp_path / "clean", tmp_path / "bad"
    write_lines(clean_root / "train-rle.csv", lines)
    splits = ROW_SPLITS + IMAGE_SPLITS
    clean = {s: SIIM(clean_root, split=s) for s in splits}
    images = clean[ROW_SPLITS[2]].images
    if which == "negative":
        victim = next(i for i in clean["gloria-row-test"].index if not images[i].positive)
    else:
        victim = next(i for i in clean["image-test"].index if len(images[i].rles) == 3)
    k = [j for j, line in enumerate(lines) if line.startswith(victim + ",")][-1]
    lines[k] = f"{victim}, 1 2 3"
    path = write_lines(bad_root / "train-rle.csv", lines)
    with pytest.raises(DataError) as exc:
        SIIM(bad_root, split="image-test")
    assert str(exc.value).startswith(f"{path}, row {k + 1}: odd number of values")
    for split in splits:
        got = SIIM(bad_root, split=split, on_error="skip")
        assert sum(got.skipped.values()) == 1
        assert got.index == [i for i in clean[split].index if i != victim]
        assert all(got.images[i].rles == images[i].rles for i in got.index)
