"""Each synthetic set, read back through its real adapter (via the registry), gives exactly
the ground truth that was written."""

from __future__ import annotations

import csv
import json

import numpy as np
from PIL import Image
from pycocotools import mask as mask_util
from synth_helpers import tiny_world, truth

from bench.registry import DATASETS, get_dataset
from bench.synth.anchors import decode_relative_rle

SYNTHETIC = ["synthetic-mimic", "synthetic-ms-cxr", "synthetic-rsna", "synthetic-siim",
             "synthetic-chexlocalize", "synthetic-covid-rural", "synthetic-chestx-det10",
             "synthetic-fundus"]


def open_set(name: str, **kw):
    return get_dataset(name)(world=str(tiny_world()), scale="tiny", **kw)


def test_registered_and_marked_synthetic():
    names = DATASETS.names()
    for n in SYNTHETIC:
        assert n in names
        cls = get_dataset(n)
        assert cls.synthetic is True and cls.description.startswith("synthetic")


def test_rsna_boxes_read_back():
    ds = open_set("synthetic-rsna")
    rec = {t["id"]: t for t in truth(tiny_world() / "rsna" / "SYNTHETIC_TRUTH.jsonl")}
    assert len(ds) == len(rec)
    for i in range(len(ds)):
        s = ds.load(i)
        assert s.id.startswith("synthetic-") and s.meta["synthetic"] is True
        pid = s.id[len("synthetic-"):]
        want = sorted(rec[pid]["boxes"])
        got = sorted(b.tolist() for f in s.findings if f.positive and f.boxes is not None
                     for b in f.boxes)
        assert got == want
        assert s.image.shape == (1024, 1024)


def test_siim_masks_read_back():
    ds = get_dataset("synthetic-siim")(world=str(tiny_world()), scale="tiny", split="all")
    rows: dict[str, list[str]] = {}
    for line in (tiny_world() / "siim" / "train-rle.csv").read_text().splitlines()[1:]:
        k, v = line.split(",", 1)
        rows.setdefault(k, []).append(v.strip())
    for i in range(len(ds)):
        s = ds.load(i)
        sop = s.id[len("synthetic-"):]
        want = np.zeros((1024, 1024), np.uint8)
        for r in rows[sop]:
            if r != "-1":
                want |= decode_relative_rle(r, 1024, 1024)
        assert s.labels["Pneumothorax"] == int(want.any())
        got = [f.mask for f in s.findings if f.positive and f.mask is not None]
        assert len(got) == int(want.any())
        if got:
            assert ((got[0] > 0) == (want > 0)).all()


def test_chexlocalize_masks_read_back():
    for split in ("val", "test"):
        ds = open_set("synthetic-chexlocalize", split=split)
        seg = json.loads((tiny_world() / "chexlocalize" / "CheXlocalize" /
                          f"gt_segmentations_{split}.json").read_text())
        assert len(ds) == len(seg)
        for i in range(len(ds)):
            s = ds.load(i)
            cxr = s.meta["cxr_id"]
            for f in s.findings:
                rle = seg[cxr][f.pathology]
                want = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()})
                assert ((f.mask > 0) == (want > 0)).all() and f.positive == bool(want.any())


def test_ms_cxr_phrases_and_boxes_read_back():
    ds = open_set("synthetic-ms-cxr")
    coco = json.loads((tiny_world() / "ms-cxr" /
                       "MS_CXR_Local_Alignment_v1.0.0.json").read_text())
    want: dict[tuple[str, str], list] = {}
    paths = {im["id"]: im["path"] for im in coco["images"]}
    for a in coco["annotations"]:
        did = paths[a["image_id"]].split("/")[-1][:-4]
        want.setdefault((did, a["label_text"].lower()), []).append(a["bbox"])
    got = {}
    for i in range(len(ds)):
        s = ds.load(i)
        for f in s.findings:
            got[(s.id[len("synthetic-"):], f.phrase.lower())] = sorted(f.boxes.tolist())
    assert got == {k: sorted(v) for k, v in want.items()}


def test_covid_rural_masks_read_back():
    ds = open_set("synthetic-covid-rural")
    base = tiny_world() / "covid-rural" / "covid_rural_annot"
    assert len(ds) == len(list((base / "jpgs").glob("*.jpg")))
    for i in range(len(ds)):
        s = ds.load(i)
        name = s.id[len("synthetic-"):]
        want = np.array(Image.open(base / "pngs_masks" / f"{name}.png")) > 0
        assert [f.pathology for f in s.findings] == ["COVID-19"]
        assert ((s.findings[0].mask > 0) == want).all()


def test_chestx_det10_boxes_read_back():
    ds = open_set("synthetic-chestx-det10", split="test")
    entries = {e["file_name"]: e for e in json.loads(
        (tiny_world() / "chestx-det10" / "test.json").read_text())}
    for i in range(len(ds)):
        s = ds.load(i)
        e = entries[s.meta["path"].split("/")[-1]]
        got = sorted((f.pathology, tuple(b)) for f in s.findings for b in f.boxes.tolist())
        want = sorted((c, (x1, y1, x2 - x1, y2 - y1)) for c, (x1, y1, x2, y2) in
                      zip(e["syms"], e["boxes"]))
        assert got == want


def test_fundus_masks_and_labels_read_back():
    ds = open_set("synthetic-fundus", split="test")
    root = tiny_world() / "fundus"
    with open(root / "labels.csv", newline="") as f:
        labels = {r["image"]: r for r in csv.DictReader(f)}
    for i in range(len(ds)):
        s = ds.load(i)
        stem = s.id[len("synthetic-"):].split("/")[-1].rsplit(".", 1)[0]
        row = labels[f"images/{stem}.jpg"]
        for k, v in s.labels.items():
            assert int(row[k]) == v
        for f in s.findings:
            p = root / "masks" / stem / f"{f.pathology}.png"
            assert ((f.mask > 0) == (np.array(Image.open(p)) > 0)).all()


def test_mimic_pretraining_excludes_ms_cxr_and_has_reports():
    ds = open_set("synthetic-mimic", split="train")
    rec = {t["id"]: t for t in truth(tiny_world() / "mimic-cxr-jpg" / "SYNTHETIC_TRUTH.jsonl")}
    n_ms = sum(1 for t in rec.values() if t["path"].startswith("files/p19/"))
    assert n_ms > 0
    assert len(ds) == sum(1 for t in rec.values() if not t["path"].startswith("files/p19/")
                          and t["path"].split("/")[3] in _train_studies())
    for i in range(0, len(ds), 7):
        s = ds.load(i)
        t = rec[s.meta["dicom_id"]]
        for sent in t["sentences"]:
            assert " ".join(sent["text"].split()) in " ".join(s.report.split())


def _train_studies() -> set[str]:
    import gzip
    import io

    raw = gzip.decompress((tiny_world() / "mimic-cxr-jpg" /
                           "mimic-cxr-2.0.0-split.csv.gz").read_bytes()).decode()
    return {f"s{r['study_id']}" for r in csv.DictReader(io.StringIO(raw))
            if r["split"] == "train"}


def test_concurrent_first_use_generates_once(tmp_path, monkeypatch):
    import threading

    from bench.datasets.synthetic import world_dir
    from bench.synth.anchors import load_anchors

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    source = load_anchors().source  # "torchxrayvision 1.5.7" when the wheel is installed
    tag = "procedural" if source == "procedural" else "txv" + source.split(" ")[1]
    assert world_dir("tiny", 3) == tmp_path / "synthetic" / f"tiny-seed3-{tag}"
    out: list = []
    threads = [threading.Thread(target=lambda: out.append(len(get_dataset(
        "synthetic-covid-rural")(scale="tiny", seed=3)))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == [8, 8]
    world = world_dir("tiny", 3)
    assert (world / ".done-covid-rural").exists()
    assert not (world / "rsna").exists()  # only the unit that was asked for


def test_worlds_from_other_anchors_get_their_own_folder(tmp_path, monkeypatch):
    from bench.datasets.synthetic import world_dir
    from bench.synth import anchors as A

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(A, "txv_data_dir", lambda: None)
    assert world_dir("small", 0) == tmp_path / "synthetic" / "small-seed0-procedural"
    monkeypatch.setattr(A, "txv_data_dir", lambda: tmp_path)
    monkeypatch.setattr(A, "_txv_version", lambda: "9.9.1")
    assert world_dir("small", 0) == tmp_path / "synthetic" / "small-seed0-txv9.9.1"


def test_world_marker_names_its_anchors_and_version(tmp_path):
    import pytest

    from bench.errors import UsageError
    from bench.synth.anchors import anchor_tag, load_anchors
    from bench.synth.world import WORLD_VERSION, generate

    tag = anchor_tag(load_anchors().source)
    want = f"scale=tiny seed=3 anchors={tag} version={WORLD_VERSION}\n"
    generate(tmp_path, "tiny", 3, units=["covid-rural"])
    marker = tmp_path / ".done-covid-rural"
    assert marker.read_text() == want
    assert want in (tmp_path / "SYNTHETIC.txt").read_text()
    stale = tmp_path / "covid-rural" / "stale.txt"
    # the same world from an older generator, or from before markers named the anchors, is
    # regenerated in place
    for old in (f"scale=tiny seed=3 anchors={tag} version=1\n", "scale=tiny seed=3\n"):
        marker.write_text(old)
        stale.write_text("x")
        generate(tmp_path, "tiny", 3, units=["covid-rural"])
        assert marker.read_text() == want and not stale.exists()
    # a world drawn from other anchors, or of another scale or seed, is refused
    for other in (f"scale=tiny seed=3 anchors=txv0.0.1 version={WORLD_VERSION}\n",
                  "scale=tiny seed=4\n", f"scale=small seed=3 anchors={tag} version=1\n"):
        marker.write_text(other)
        with pytest.raises(UsageError, match="different synthetic world"):
            generate(tmp_path, "tiny", 3, units=["covid-rural"])


def test_results_on_another_world_are_not_reused(tmp_path):
    import pytest

    from bench.errors import UsageError
    from bench.eval.runner import Evaluator, RunSpec
    from bench.synth.world import WORLD_VERSION

    ds = get_dataset("synthetic-covid-rural")(world=str(tiny_world()), scale="tiny")
    assert ds.data_stamp.startswith("synthetic tiny seed 0, anchors ")
    assert ds.data_stamp.endswith(f", world version {WORLD_VERSION}")
    spec = RunSpec(method="center", dataset="synthetic-covid-rural", n_boot=10,
                   dataset_options={"scale": "tiny"})
    ev = Evaluator(tmp_path, progress=False)
    first = ev.run(spec, dataset=ds)
    assert first.info["data_stamp"] == ds.data_stamp
    assert ev.run(spec, dataset=ds).reused
    ds.data_stamp = "synthetic tiny seed 0, anchors procedural"
    with pytest.raises(UsageError, match="holds a different run"):
        ev.run(spec, dataset=ds)


def test_real_adapter_on_a_synthetic_copy_is_labelled_synthetic(tmp_path, capsys):
    """`--datasets rsna --root <copy of the synthetic rsna folder>` (as `bench synth --help`
    suggests): the world's SYNTHETIC.txt marks the run, its summary and the printed table."""
    import shutil

    from bench.cli.main import main as bench_main

    copy = tmp_path / "my-rsna"
    shutil.copytree(tiny_world() / "rsna", copy)
    ds = get_dataset("rsna")(copy, split="all")
    assert ds.synthetic is True and ds.describe()["synthetic"] is True
    assert "SYNTHETIC DATA" in ds.describe()["synthetic_marker"]
    res = tmp_path / "res"
    try:
        bench_main(["run", "--methods", "center", "--datasets", "rsna", "--root", str(copy),
                    "--split", "all", "--task", "localization", "--bootstrap", "10",
                    "--results-dir", str(res), "--quiet"])
    except SystemExit as exc:
        assert not exc.code
    out = capsys.readouterr().out
    run = res / "center__rsna__all__afloc__simple"
    assert json.loads((run / "run.json").read_text())["synthetic"] is True
    assert json.loads((run / "summary.json").read_text())["synthetic"] is True
    assert "rsna (synthetic)" in out and "Synthetic data: these numbers" in out
    from bench.datasets._util import SYNTHETIC_NOTICE
    from bench.synth.writers.common import NOTICE

    assert NOTICE.startswith(SYNTHETIC_NOTICE)  # the marker the adapters look for
    # a real copy (no marker) stays real
    (copy / "SYNTHETIC.txt").unlink()
    assert get_dataset("rsna")(copy, split="all").synthetic is False


def test_a_synthetic_set_is_identified_by_its_world_not_its_files(tmp_path):
    """Its run identity is what it was before data fingerprints (the world stamp), so a
    regenerated cache (new mtimes, same world) does not refuse earlier results."""
    from dataclasses import replace

    from bench.eval.runner import Evaluator, RunSpec

    spec = RunSpec(method="random", dataset="synthetic-rsna", task="classification", n_boot=0,
                   dataset_options={"world": str(tiny_world()), "scale": "tiny"})
    result = Evaluator(tmp_path, progress=False).run(spec)
    ds = open_set("synthetic-rsna")
    want = replace(spec, split=ds.split, data_stamp=ds.data_stamp)
    assert "inputs" not in result.info["identity"]
    assert result.info["fingerprint"] == want.fingerprint()


def test_human_benchmark_reads_the_synthetic_worlds_files():
    """The synthetic samples' ids carry a prefix; the benchmark is keyed by cxr_id."""
    from bench.registry import get_method
    from bench.types import Query

    ds = open_set("synthetic-chexlocalize", split="test")
    hb = json.loads((tiny_world() / "chexlocalize" / "CheXlocalize" /
                     "hb_segmentations_test.json").read_text())
    pts = json.loads((tiny_world() / "chexlocalize" / "CheXlocalize" /
                      "hb_salient_pt_test.json").read_text())
    human = get_method("human")()
    human.bind(ds, "chexlocalize")
    s = ds.load(0)
    tasks = sorted(hb[s.meta["cxr_id"]])
    maps = human.localize([s], [[Query(t, t, t) for t in tasks]])[0]
    for task, m in zip(tasks, maps):
        rle = hb[s.meta["cxr_id"]][task]
        want = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        assert ((m > 0) == (want > 0)).all()
    got = human.points([s], [[Query(t, t, t) for t in tasks]])[0]
    assert got == [[list(map(float, p)) for p in pts[s.meta["cxr_id"]].get(t, [])]
                   for t in tasks]
