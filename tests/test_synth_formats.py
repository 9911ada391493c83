"""Every synthetic file is read by an independent reader and matches the documented format."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as mask_util
from synth_helpers import tiny_world, truth

from bench.synth.anchors import decode_relative_rle, encode_relative_rle


def brute_rle_decode(rle: str, h: int, w: int) -> np.ndarray:
    """Independent, loop-based decoder of the official relative column-major scheme."""
    flat = [0] * (h * w)
    vals = [int(v) for v in rle.split()]
    cur = 0
    for k in range(0, len(vals), 2):
        cur += vals[k]
        for p in range(cur, cur + vals[k + 1]):
            flat[p] = 1
        cur += vals[k + 1]
    out = np.zeros((h, w), np.uint8)
    for p, v in enumerate(flat):
        if v:
            out[p % h, p // h] = 1
    return out


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**32 - 1))
def test_relative_rle_round_trip(h, w, seed):
    m = (np.random.default_rng(seed).random((h, w)) < 0.4).astype(np.uint8)
    rle = encode_relative_rle(m)
    if not m.any():
        assert rle == "-1"
        return
    assert (brute_rle_decode(rle, h, w) == m).all()
    assert (decode_relative_rle(rle, h, w) == m).all()


def test_relative_rle_hand_example():
    # 3 x 2 image, column-major flat order: (0,0),(1,0),(2,0),(0,1),(1,1),(2,1)
    m = np.array([[0, 1], [1, 1], [1, 0]], np.uint8)
    assert encode_relative_rle(m) == "1 4"  # start 1, run of 4: (1,0),(2,0),(0,1),(1,1)
    m2 = np.array([[1, 0], [0, 0], [0, 1]], np.uint8)
    assert encode_relative_rle(m2) == "0 1 4 1"  # second run starts 4 after the first ends


def test_siim_csv_rle_and_dicoms():
    root = tiny_world() / "siim"
    lines = (root / "train-rle.csv").read_text().splitlines()
    assert lines[0] == "ImageId, EncodedPixels"
    rows: dict[str, list[str]] = {}
    for line in lines[1:]:
        image_id, rle = line.split(",", 1)
        rows.setdefault(image_id, []).append(rle.strip())
    dcm = {p.stem: p for p in (root / "dicom-images-train").rglob("*.dcm")}
    assert set(rows) == set(dcm)
    rec = {t["id"]: t for t in truth(root / "SYNTHETIC_TRUTH.jsonl")}
    n_pos = 0
    for image_id, rles in rows.items():
        ds = pydicom.dcmread(dcm[image_id])
        assert (ds.Rows, ds.Columns, ds.BitsStored) == (1024, 1024, 8)
        assert ds.PhotometricInterpretation == "MONOCHROME2"
        assert "SYNTHETIC" in str(ds.PatientName) and "SYNTHETIC" in ds.ImageComments
        assert ds.SOPInstanceUID == image_id
        assert dcm[image_id].parent.name == ds.SeriesInstanceUID
        assert dcm[image_id].parent.parent.name == ds.StudyInstanceUID
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
        assert ds.pixel_array.shape == (1024, 1024)
        ptx = [f for f in rec[image_id]["findings"] if f["name"] == "Pneumothorax"]
        if rles == ["-1"]:
            assert not ptx
            continue
        n_pos += 1
        union = np.zeros((1024, 1024), np.uint8)
        for r in rles:  # decode at a reduced cost: only the bounding region is checked below
            union |= decode_relative_rle(r, 1024, 1024)
        ys, xs = np.nonzero(union)
        x, y, w, h = ptx[0]["bbox"]
        assert (xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()) == (
            x, y, w, h)
        assert int(union.sum()) == ptx[0]["area"]
        # the pneumothorax is lucent: darker than the lung rim just medial to it
        img = ds.pixel_array.astype(float)
        assert img[union > 0].mean() < 200
    assert n_pos >= 1


def test_siim_brute_decoder_agrees_on_a_real_row():
    root = tiny_world() / "siim"
    rle = next(line.split(",", 1)[1].strip() for line in
               (root / "train-rle.csv").read_text().splitlines()[1:] if "-1" not in line)
    # compare a 64-row crop: decode at full height, then slice (brute force is O(pixels))
    fast = decode_relative_rle(rle, 1024, 1024)
    cols = np.nonzero(fast.any(0))[0]
    lo, hi = cols.min(), cols.min() + 8
    vals = [int(v) for v in rle.split()]
    cur, ref = 0, np.zeros(1024 * 1024, np.uint8)
    for k in range(0, len(vals), 2):
        cur += vals[k]
        ref[cur:cur + vals[k + 1]] = 1
        cur += vals[k + 1]
    ref2 = ref.reshape(1024, 1024).T  # column-major
    assert (fast[:, lo:hi] == ref2[:, lo:hi]).all()


def test_rsna_boxes_in_dicom_pixel_space():
    root = tiny_world() / "rsna"
    with open(root / "stage_2_train_labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["patientId", "x", "y", "width", "height", "Target"]
    rec = {t["id"]: t for t in truth(root / "SYNTHETIC_TRUTH.jsonl")}
    boxes: dict[str, list] = {}
    for r in rows:
        if r["Target"] == "1":
            b = [float(r[k]) for k in ("x", "y", "width", "height")]
            assert re.fullmatch(r"\d+\.0", r["x"])
            assert 0 <= b[0] and b[0] + b[2] <= 1024 and 0 <= b[1] and b[1] + b[3] <= 1024
            boxes.setdefault(r["patientId"], []).append(b)
        else:
            assert r["x"] == "" and r["Target"] == "0"
    assert boxes, "tiny RSNA has positives"
    for pid, t in rec.items():
        ds = pydicom.dcmread(root / "stage_2_train_images" / f"{pid}.dcm")
        assert ds.pixel_array.shape == (1024, 1024)
        assert sorted(boxes.get(pid, [])) == sorted(t["boxes"])
    with open(root / "grounding_test.csv", newline="") as f:
        split = list(csv.DictReader(f))
    assert list(split[0]) == ["patientId", "sop_instance_uid", "boxes_xywh", "label"]
    for r in split:
        got = [[float(v) for v in b.split(";")] for b in r["boxes_xywh"].split("|") if b]
        assert sorted(got) == sorted(boxes.get(r["patientId"], []))
        assert r["label"] == ("1" if got else "0")


def test_chexlocalize_coco_rle_and_labels():
    root = tiny_world() / "chexlocalize"
    for split in ("val", "test"):
        seg = json.loads((root / "CheXlocalize" / f"gt_segmentations_{split}.json").read_text())
        ann = json.loads((root / "CheXlocalize" / f"gt_annotations_{split}.json").read_text())
        with open(root / "CheXpert" / f"{split}_labels.csv", newline="") as f:
            labels = {"_".join(r["Path"][:-4].split("/")[-3:]): r for r in csv.DictReader(f)}
        assert set(seg) == set(labels) == set(ann)
        for cxr_id, tasks in seg.items():
            patient, study, view = cxr_id.split("_", 2)
            img = Image.open(root / "CheXpert" / split / patient / study / f"{view}.jpg")
            w, h = img.size
            assert len(tasks) == 10 and "Airspace Opacity" in tasks
            assert ann[cxr_id]["img_size"] == [h, w]
            for task, rle in tasks.items():
                assert isinstance(rle["counts"], str) and rle["size"] == [h, w]
                m = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()})
                col = "Lung Opacity" if task == "Airspace Opacity" else task
                assert labels[cxr_id][col] == ("1.0" if m.any() else "0.0")
                assert (task in ann[cxr_id]) == bool(m.any())
        if split == "test":
            hb = json.loads((root / "CheXlocalize" / "hb_segmentations_test.json").read_text())
            pts = json.loads((root / "CheXlocalize" / "hb_salient_pt_test.json").read_text())
            assert set(hb) == set(seg) == set(pts)


def test_ms_cxr_coco_and_csv():
    world = tiny_world()
    coco = json.loads((world / "ms-cxr" / "MS_CXR_Local_Alignment_v1.0.0.json").read_text())
    with open(world / "ms-cxr" / "MS_CXR_Local_Alignment_v1.0.0.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["dicom_id", "category_name", "label_text", "path", "x", "y", "w",
                             "h", "image_width", "image_height"]
    assert len(rows) == len(coco["annotations"]) > 0
    imgs = {i["id"]: i for i in coco["images"]}
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    for a, r in zip(coco["annotations"], rows):
        im = imgs[a["image_id"]]
        assert im["path"].startswith("files/p19/")
        w, h = Image.open(world / "mimic-cxr-jpg" / im["path"]).size
        assert (im["width"], im["height"]) == (w, h)
        x, y, bw, bh = a["bbox"]
        assert 0 <= x and x + bw <= w and 0 <= y and y + bh <= h
        assert cats[a["category_id"]] == r["category_name"] and a["label_text"] == r["label_text"]
        assert [float(r[k]) for k in "xywh"] == a["bbox"]


def test_mimic_tree_and_csvs():
    root = tiny_world() / "mimic-cxr-jpg"
    tables = {}
    for name in ("metadata", "split", "chexpert"):
        raw = (root / f"mimic-cxr-2.0.0-{name}.csv.gz").read_bytes()
        assert raw[4:8] == b"\0\0\0\0"  # gzip mtime 0
        tables[name] = list(csv.DictReader(io.StringIO(gzip.decompress(raw).decode())))
    meta = tables["metadata"]
    assert list(meta[0])[:5] == ["dicom_id", "subject_id", "study_id",
                                 "PerformedProcedureStepDescription", "ViewPosition"]
    subjects_by_split: dict[str, set] = {}
    for r in tables["split"]:
        subjects_by_split.setdefault(r["split"], set()).add(r["subject_id"])
    assert set(subjects_by_split) == {"train", "validate", "test"}
    a, b, c = subjects_by_split.values()
    assert not (a & b) and not (a & c) and not (b & c)
    for r in meta:
        assert re.fullmatch(r"([0-9a-f]{8}-){4}[0-9a-f]{8}", r["dicom_id"])
        assert re.fullmatch(r"1\d{7}", r["subject_id"]) and re.fullmatch(r"5\d{7}",
                                                                           r["study_id"])
        sub = r["subject_id"]
        folder = root / "files" / f"p{sub[:2]}" / f"p{sub}"
        img = Image.open(folder / f"s{r['study_id']}" / f"{r['dicom_id']}.jpg")
        assert img.size == (int(r["Columns"]), int(r["Rows"])) and img.mode == "L"
        text = (folder / f"s{r['study_id']}.txt").read_text()
        assert "FINDINGS:" in text and "IMPRESSION:" in text
    assert len(tables["chexpert"]) == len(meta)


def test_covid_rural_labelme_and_png():
    base = tiny_world() / "covid-rural" / "covid_rural_annot"
    jpgs = sorted((base / "jpgs").glob("*.jpg"))
    assert jpgs and all(p.name.startswith("synthetic_") for p in jpgs)
    from PIL import ImageDraw

    for p in jpgs:
        lm = json.loads((base / "jpgs" / "jsons" / f"{p.stem}.json").read_text())
        w, h = Image.open(p).size
        assert lm["version"] == "4.5.6" and (lm["imageWidth"], lm["imageHeight"]) == (w, h)
        m = np.array(Image.open(base / "pngs_masks" / f"{p.stem}.png")) > 0
        assert m.shape == (h, w) and m.any()
        poly = Image.new("L", (w, h))
        for s in lm["shapes"]:
            assert s["shape_type"] == "polygon" and s["label"] == "opacity"
            ImageDraw.Draw(poly).polygon([tuple(pt) for pt in s["points"]], fill=1)
        pm = np.array(poly) > 0
        assert (pm & m).sum() / (pm | m).sum() > 0.8  # polygons trace the mask


def test_chestx_det10_json_and_pngs():
    root = tiny_world() / "chestx-det10"
    classes = {"Atelectasis", "Calcification", "Consolidation", "Effusion", "Emphysema",
               "Fibrosis", "Fracture", "Mass", "Nodule", "Pneumothorax"}
    for split in ("train", "test"):
        entries = json.loads((root / f"{split}.json").read_text())
        assert entries
        for e in entries:
            assert set(e) == {"file_name", "syms", "boxes"} and len(e["syms"]) == len(e["boxes"])
            w, h = Image.open(root / f"{split}_data" / e["file_name"]).size
            for s, (x1, y1, x2, y2) in zip(e["syms"], e["boxes"]):
                assert s in classes and 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h


def test_fundus_paired_folder():
    root = tiny_world() / "fundus"
    with open(root / "pairs.csv", newline="") as f:
        pairs = list(csv.DictReader(f))
    with open(root / "labels.csv", newline="") as f:
        labels = {r["image"]: r for r in csv.DictReader(f)}
    assert {r["split"] for r in pairs} == {"train", "val", "test"}
    rec = {t["id"]: t for t in truth(root / "SYNTHETIC_TRUTH.jsonl")}
    assert len(next(iter(labels.values()))) == 10
    for r in pairs:
        stem = r["image"].split("/")[-1][:-4]
        assert Image.open(root / r["image"]).mode == "RGB"
        positive = {k for k, v in labels[r["image"]].items() if k != "image" and v == "1"}
        assert positive == set(rec[stem]["diseases"])
        masks = {p.stem for p in (root / "masks" / stem).glob("*.png")}
        assert masks == set(rec[stem]["lesions"])
        if "Drusen" in masks:
            assert "Macular Degeneration" in positive and "drusen" in r["report"].lower()
        if "Retinal Hemorrhage" in masks:
            assert "hemorrhage" in r["report"].lower()


def test_every_folder_says_synthetic():
    world = tiny_world()
    for folder in ("mimic-cxr-jpg", "ms-cxr", "rsna", "siim", "chexlocalize", "covid-rural",
                   "chestx-det10", "fundus"):
        assert "SYNTHETIC" in (world / folder / "SYNTHETIC.txt").read_text()


def _digest(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and ".lock" not in p.name}


@pytest.mark.slow
def test_deterministic_and_seed_dependent(tmp_path):
    from bench.synth.world import generate

    world = tiny_world()
    generate(tmp_path / "again", "tiny", 0, units=["mimic"], n_jobs=2)  # parallel == serial
    for folder in ("mimic-cxr-jpg", "ms-cxr"):
        assert _digest(world / folder) == _digest(tmp_path / "again" / folder)
    generate(tmp_path / "other", "tiny", 1, units=["siim"])
    a, b = _digest(world / "siim"), _digest(tmp_path / "other" / "siim")
    assert a["train-rle.csv"] != b["train-rle.csv"]
    assert set(a.values()) & set(b.values()) <= {a["SYNTHETIC.txt"]}
