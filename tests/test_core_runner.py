"""The streaming evaluator, `bench run` and `bench score` end to end on the built-in `shapes`."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.cli.main import main as bench_main
from bench.eval.runner import Evaluator, RunSpec
from bench.imaging.geometry import mask_to_letterbox
from bench.registry import get_dataset
from bench.store import RunDir


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = 0
    try:
        bench_main(args)
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_oracle_scores_one_and_random_scores_chance(tmp_path, capsys):
    code, out, err = run_cli(["run", "--methods", "oracle,random,center", "--datasets",
                              "shapes", "--bootstrap", "200", "--results-dir", str(tmp_path),
                              "--json", "--quiet"], capsys)
    assert code == 0, err
    payload = json.loads(out)
    runs = {(r["method"], r["task"]): r["summary"]["metrics"] for r in payload["runs"]}
    oracle = runs[("oracle", "localization")]
    for metric in ("iou", "dice"):
        assert oracle[metric]["overall"]["dataset_mean"] == pytest.approx(1.0)
        assert oracle[metric]["overall"]["lower"] == pytest.approx(1.0)
    assert runs[("oracle", "classification")]["auroc"]["overall"]["dataset_mean"] == 1.0
    assert runs[("random", "classification")]["auroc"]["overall"]["dataset_mean"] == 0.5
    assert ("center", "classification") not in runs  # center cannot classify
    rand_iou = runs[("random", "localization")]["iou"]["overall"]["dataset_mean"]
    assert 0.0 < rand_iou < 0.5
    pairs = {(c["a"], c["b"], c["metric"]) for c in payload["comparisons"]}
    assert ("oracle", "random", "iou") in pairs and ("oracle", "random", "auroc") in pairs


def test_same_seed_gives_byte_identical_summaries(tmp_path, capsys):
    for d in ("a", "b"):
        code, _, err = run_cli(["run", "--methods", "random", "--datasets", "shapes",
                                "--bootstrap", "100", "--results-dir", str(tmp_path / d),
                                "--quiet", "--chunk-size", "7" if d == "a" else "64"], capsys)
        assert code == 0, err
    for run in (tmp_path / "a").iterdir():
        a = (run / "summary.json").read_bytes()
        b = (tmp_path / "b" / run.name / "summary.json").read_bytes()
        assert a == b


def test_complete_run_is_reused_and_other_options_are_refused(tmp_path):
    ev = Evaluator(tmp_path, progress=False)
    spec = RunSpec(method="center", dataset="shapes", n_boot=50)
    first = ev.run(spec)
    assert not first.reused
    assert ev.run(spec).reused
    changed = RunSpec(method="center", dataset="shapes", n_boot=50, method_options={"sigma": 0.1})
    from bench.errors import UsageError

    with pytest.raises(UsageError, match="holds a different run"):
        ev.run(changed)
    assert not Evaluator(tmp_path, progress=False, force=True).run(changed).reused


def test_resume_deletes_the_temp_file_of_a_chunk_killed_mid_write(tmp_path):
    spec = RunSpec(method="center", dataset="shapes", n_boot=20, chunk_size=16)
    first = Evaluator(tmp_path, progress=False).run(spec)
    run = RunDir(first.path)
    rows = run.read_rows()
    run.chunk_path(1).unlink()  # as if killed while writing chunk 1
    orphan = run.rows_dir / ".part-00001.parquet.k1ll3d_x.tmp"
    orphan.write_bytes(b"PAR1 half a parquet file")
    info = run.read_run()
    info["status"] = "running"
    run.write_run(info)
    keep = run.rows_dir / "notes.tmp"  # not names the atomic writers make: left alone
    keep.write_text("mine")
    keep2 = run.rows_dir / ".notes.tmp"
    keep2.write_text("mine")
    again = Evaluator(tmp_path, progress=False).run(spec)
    assert not again.reused
    assert not orphan.exists() and keep.exists() and keep2.exists()
    pd.testing.assert_frame_equal(run.read_rows(), rows)


def test_keep_maps_stores_first_samples_in_the_224_frame(tmp_path):
    spec = RunSpec(method="oracle", dataset="shapes", n_boot=20, keep_maps=3)
    result = Evaluator(tmp_path, progress=False).run(spec)
    index = json.loads((result.path / "maps" / "index.json").read_text())
    ds = get_dataset("shapes")()
    expected = [(ds.load(i).id, f.query_id) for i in range(3) for f in ds.load(i).findings]
    assert [(e["sample_id"], e["query_id"]) for e in index] == expected
    first = index[0]
    z = np.load(result.path / "maps" / first["file"])
    assert z["image"].shape == (224, 224) and z["image"].dtype == np.uint8
    sample = next(ds.load(i) for i in range(3) if ds.load(i).id == first["sample_id"])
    finding = next(f for f in sample.findings if f.query_id == first["query_id"])
    assert z["boxes"].shape == (0, 4)
    np.testing.assert_array_equal(z["heatmap"] > 0.5, z["gt"] > 0)
    assert first["query"] == f"Findings suggesting {finding.pathology}."


def _rows(path: Path) -> pd.DataFrame:
    return RunDir(path).read_rows()


def test_killed_run_resumes_to_the_same_rows(tmp_path):
    args = ["run", "--methods", "random", "--datasets", "shapes", "--dataset-arg", "n=400",
            "--task", "localization", "--chunk-size", "4", "--batch-size", "2",
            "--bootstrap", "20", "--quiet"]
    full = tmp_path / "full"
    subprocess.run([sys.executable, "-m", "bench.cli.main", *args, "--results-dir", str(full)],
                   check=True, capture_output=True, timeout=600)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli.main", *args, "--results-dir",
                             str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows_dir = None
    deadline = time.time() + 300
    while time.time() < deadline:
        found = list(killed.glob("*/rows/part-*.parquet"))
        if len(found) >= 3:
            rows_dir = found[0].parent
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert rows_dir is not None, "the run finished or never started before it could be killed"
    run = rows_dir.parent
    assert json.loads((run / "run.json").read_text())["status"] == "running"
    n_before = len(list(rows_dir.glob("part-*.parquet")))
    assert n_before < 100
    subprocess.run([sys.executable, "-m", "bench.cli.main", *args, "--results-dir", str(killed)],
                   check=True, capture_output=True, timeout=600)
    pd.testing.assert_frame_equal(_rows(run), _rows(full / run.name))
    assert (run / "summary.json").read_bytes() == (full / run.name / "summary.json").read_bytes()
    assert not list(rows_dir.glob(".*tmp"))


def _npy_maps(tmp_path: Path, make) -> tuple[Path, list[Path]]:
    """One `.npy` map per finding of `shapes`, named as `bench score` reads them; `make(finding)`
    gives its pixels. Returns the folder and the files in order."""
    ds = get_dataset("shapes")()
    maps = tmp_path / "maps"
    maps.mkdir()
    paths = []
    for i in range(len(ds)):
        s = ds.load(i)
        for f in s.findings:
            paths.append(maps / f"{s.id}__{f.query_id}.npy")
            np.save(paths[-1], make(f))
    return maps, paths


def _letterboxed_gt(f) -> np.ndarray:
    return mask_to_letterbox(f.mask).astype(np.float32)


def test_score_reads_npy_maps_and_matches_oracle(tmp_path, capsys):
    maps, _ = _npy_maps(tmp_path, _letterboxed_gt)
    code, out, err = run_cli(["score", "--maps", str(maps), "--dataset", "shapes", "--frame",
                              "letterbox:224", "--bootstrap", "50", "--results-dir",
                              str(tmp_path / "res"), "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)["summary"]
    assert summary["metrics"]["iou"]["overall"]["dataset_mean"] == pytest.approx(1.0)
    code, out, _ = run_cli(["score", "--maps", str(maps), "--dataset", "shapes",
                            "--print-names"], capsys)
    assert code == 0 and out.split()[0].endswith(".npy")


def test_score_reads_chexlocalize_pickles_safely(tmp_path, capsys):
    from bench.eval.external_maps import ExternalMaps
    from bench.types import Query

    ds = get_dataset("shapes")()
    s = next(ds.load(i) for i in range(len(ds)) if ds.load(i).findings)
    f = s.findings[0]
    good = tmp_path / "good"
    good.mkdir()
    with open(good / f"{s.id}_{f.pathology}_map.pkl", "wb") as fh:
        pickle.dump({"map": torch.from_numpy(f.mask[None, None].astype(np.float32)),
                     "prob": torch.tensor([0.25]), "task": f.pathology, "gt": 1,
                     "cxr_dims": (s.hw[1], s.hw[0])}, fh)
    m = ExternalMaps(good)
    out = m.localize([s], [[Query(f.query_id, f.pathology, "x")]])
    np.testing.assert_array_equal(out[0][0], f.mask.astype(np.float32))
    assert m.classify([s], [f.pathology])[0, 0] == pytest.approx(0.25)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    bad = tmp_path / "bad"
    bad.mkdir()
    with open(bad / f"{s.id}_{f.pathology}_map.pkl", "wb") as fh:
        pickle.dump({"map": Evil()}, fh)
    code, _, err = run_cli(["score", "--maps", str(bad), "--dataset", "shapes", "--bootstrap",
                            "10", "--results-dir", str(tmp_path / "res")], capsys)
    assert code == 1
    assert "refusing to load" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "pwned").exists()


def test_usage_errors_are_one_line_with_exit_2(tmp_path, capsys):
    code, _, err = run_cli(["run", "--methods", "nope", "--datasets", "shapes",
                            "--results-dir", str(tmp_path)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "unknown method 'nope'" in err
    code, _, err = run_cli(["run", "--methods", "center", "--datasets", "shapes",
                            "--task", "classification", "--results-dir", str(tmp_path)], capsys)
    assert code == 2 and "nothing to run" in err


def test_skipped_inputs_are_counted_in_run_json_across_a_resume(tmp_path):
    from bench.datasets.base import Dataset
    from bench.registry import DATASETS
    from bench.types import Finding, Sample

    class Flaky(Dataset):
        """Indexing drops one row; image 3 and 7 are 'corrupt' (skipped when asked to)."""

        tasks = ("localization",)
        pathologies = ("Square",)
        needs_root = False

        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.bad("malformed row", "labels.csv", 2, reason="malformed CSV row")

        def __len__(self):
            return 10

        def load(self, i):
            if i in (3, 7):
                self.bad("cannot decode image", f"img{i}.png", reason="corrupt image")
                return None
            m = np.zeros((32, 32), np.uint8)
            m[4:20, 4:20] = 1
            return Sample(id=f"f{i}", image=m * 255, findings=[Finding("Square", "Square", mask=m)])

    DATASETS.add("flaky-test", Flaky)
    spec = RunSpec(method="oracle", dataset="flaky-test", n_boot=10, chunk_size=4,
                   on_error="skip")
    ev = Evaluator(tmp_path, progress=False)
    first = ev.run(spec)
    assert first.info["skipped"] == {"corrupt image": 2, "malformed CSV row": 1}
    assert first.info["n_rows"] == 8
    # drop the last chunk and its run status, as if killed, then resume
    run = RunDir(first.path)
    run.chunk_path(2).unlink()
    info = run.read_run()
    info["status"] = "running"
    run.write_run(info)
    again = Evaluator(tmp_path, progress=False).run(spec)
    assert not again.reused
    assert again.info["skipped"] == {"corrupt image": 2, "malformed CSV row": 1}
    from bench.errors import DataError

    with pytest.raises(DataError, match="labels.csv, row 2: malformed row"):
        Evaluator(tmp_path / "strict", progress=False).run(
            RunSpec(method="oracle", dataset="flaky-test", n_boot=10))


def test_oracle_scores_one_under_the_chexlocalize_protocol(tmp_path):
    spec = RunSpec(method="oracle", dataset="shapes", protocol="chexlocalize", n_boot=50)
    metrics = Evaluator(tmp_path, progress=False).run(spec).summary["metrics"]
    assert metrics["iou"]["overall"]["dataset_mean"] == 1.0
    assert metrics["hit"]["overall"]["dataset_mean"] == 1.0
    # the thresholds were tuned on the val split, which ran first into its own folder
    assert (tmp_path / "oracle__shapes__val__chexlocalize__simple" / "summary.json").is_file()


# -- issue 18, item 3: a run's identity covers the files that produced it ----------------------

def _rsna_copy(root: Path) -> Path:
    try:
        from tests.data_fixtures import blocky, write_csv, write_dicom
    except ImportError:  # tests/ is not always a package
        from data_fixtures import blocky, write_csv, write_dicom
    rows = [["pa", 96.0, 200.0, 400.0, 320.0, 1], ["pb", 512.0, 512.0, 256.0, 256.0, 1],
            ["neg", "", "", "", "", 0]]
    write_csv(root / "stage_2_train_labels.csv",
              ["patientId", "x", "y", "width", "height", "Target"], rows)
    for i, pid in enumerate(["pa", "pb", "neg"]):
        write_dicom(root / "stage_2_train_images" / f"{pid}.dcm", blocky(128, 128, seed=i))
    return root / "stage_2_train_labels.csv"


def test_identities_of_runs_whose_data_did_not_change_are_stable():
    """Fingerprints computed before data fingerprints existed: in-memory and synthetic sets
    (identified by their world stamp) keep them."""
    assert RunSpec(method="center", dataset="shapes", n_boot=50).fingerprint() == \
        "bb71a426779d3a1f"
    stamp = "synthetic small seed 0, anchors txv1.5.7, world version 2"
    assert RunSpec(method="random", dataset="synthetic-rsna", task="classification",
                   data_stamp=stamp).fingerprint() == "085f23c5c2b4f28c"


def test_an_in_memory_run_keeps_its_fingerprint(tmp_path):
    spec = RunSpec(method="center", dataset="shapes", n_boot=50)
    result = Evaluator(tmp_path, progress=False).run(spec)
    assert result.info["fingerprint"] == "4fe0a8ec6ab4fdbe"  # split filled in: "test"


def test_run_is_refused_after_its_labels_change_and_says_when_reused(tmp_path, capsys):
    labels = _rsna_copy(tmp_path / "rsna")
    args = ["run", "--methods", "center", "--datasets", "rsna", "--root", str(tmp_path / "rsna"),
            "--split", "all", "--task", "localization", "--bootstrap", "20", "--results-dir",
            str(tmp_path / "res"), "--quiet"]
    code, first, err = run_cli(args, capsys)
    assert code == 0, err
    assert "Reused" not in first
    code, again, err = run_cli(args, capsys)
    assert code == 0, err
    assert "Reused 1 finished run" in again and "center__rsna__all__afloc__simple" in again
    assert again.splitlines()[:3] == first.splitlines()[:3]  # the same table
    # the labels are edited (a box moved): the old numbers must not come back
    labels.write_text(labels.read_text().replace("512.0,512.0", "768.0,512.0"))
    st = labels.stat()
    os.utime(labels, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    code, _, err = run_cli(args, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "stage_2_train_labels.csv" in err and "--force" in err
    code, forced, err = run_cli(args + ["--force"], capsys)
    assert code == 0, err
    assert "Reused" not in forced and forced.splitlines()[2] != first.splitlines()[2]


def test_score_run_is_refused_after_its_maps_change(tmp_path, capsys):
    maps, _ = _npy_maps(tmp_path, _letterboxed_gt)
    args = ["score", "--maps", str(maps), "--dataset", "shapes", "--frame", "letterbox:224",
            "--bootstrap", "20", "--results-dir", str(tmp_path / "res")]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    code, out, err = run_cli(args, capsys)
    assert code == 0 and "reused the finished run" in (out + err)
    victim = sorted(maps.glob("*.npy"))[0]
    np.save(victim, np.zeros((224, 224), np.float32) + np.eye(224, dtype=np.float32))
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "maps" in err and str(maps) in err and "--force" in err
    code, out, err = run_cli(args + ["--force"], capsys)
    assert code == 0 and "reused" not in (out + err)


# -- issue 18, item 13: maps and disk errors name their file ----------------------------------

def _one_map_folder(tmp_path: Path) -> tuple[Path, Path]:
    maps, paths = _npy_maps(tmp_path, lambda f: f.mask.astype(np.float32))
    return maps, paths[0]


@pytest.mark.parametrize("damage, message", [
    ("corrupt", "unreadable map"),
    ("shape", "map has shape (2, 3, 4); expected one 2-D (H x W) map"),
])
def test_bad_npy_map_names_its_file(tmp_path, capsys, damage, message):
    maps, victim = _one_map_folder(tmp_path)
    if damage == "corrupt":
        victim.write_bytes(victim.read_bytes()[:60])
    else:
        np.save(victim, np.zeros((2, 3, 4), np.float32))
    code, _, err = run_cli(["score", "--maps", str(maps), "--dataset", "shapes", "--bootstrap",
                            "10", "--results-dir", str(tmp_path / "res")], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: {victim}: {message}")


def test_disk_full_names_the_path(tmp_path, capsys, monkeypatch):
    import errno

    import bench.store as store

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.os, "fsync", full)
    code, _, err = run_cli(["run", "--methods", "center", "--datasets", "shapes", "--bootstrap",
                            "10", "--results-dir", str(tmp_path), "--quiet"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    run_json = tmp_path / "center__shapes__test__afloc__simple" / "run.json"
    assert err.strip() == f"error: {run_json}: cannot write (No space left on device)"
    assert not [p for p in tmp_path.rglob("*.tmp")]  # no temp file left behind


# -- issue 18, item 14: missing maps and non-finite pixels in bench score ---------------------

def _score_rows(tmp_path: Path, maps: Path, name: str, capsys, *extra: str):
    res = tmp_path / f"res-{name}"
    code, out, err = run_cli(["score", "--maps", str(maps), "--dataset", "shapes", "--frame",
                              "letterbox:224", "--bootstrap", "0", "--results-dir", str(res),
                              *extra], capsys)
    return code, out, err, res


def _gt_maps(tmp_path: Path) -> Path:
    # a blurred GT: not constant, so every map has a contrast
    return _npy_maps(tmp_path, lambda f: _letterboxed_gt(f) + np.linspace(0, 0.1, 224)[None])[0]


@pytest.mark.parametrize("protocol", ["afloc", "chexlocalize"])
def test_a_missing_map_is_no_prediction_left_out_as_the_protocols_do(tmp_path, capsys,
                                                                      protocol):
    """A missing map is an empty prediction: IoU/Dice NaN under only_pos / true_pos_only (left
    out, as for any empty prediction), and no hit and no CNR (CheXlocalize's `get_hitrates`
    iterates the maps it finds). Every other row is unchanged, and the note says so."""
    maps = _gt_maps(tmp_path)
    extra = ("--protocol", protocol) + (("--protocol-arg", "method=otsu")
                                        if protocol == "chexlocalize" else ())
    code, _, err, full = _score_rows(tmp_path, maps, "full", capsys, *extra)
    assert code == 0, err
    victim = sorted(maps.glob("*.npy"))[3]
    victim.unlink()
    code, out, err, part = _score_rows(tmp_path, maps, "part", capsys, *extra)
    assert code == 0, err
    assert "note: 1 map missing: no prediction" in err
    name = next(p.name for p in part.iterdir() if p.is_dir())
    a, b = _rows(full / name), _rows(part / name)
    sid, qid = victim.stem.split("__")
    gone = (b["sample_id"] == sid) & (b["query_id"] == qid)
    assert gone.sum() == 1
    pd.testing.assert_frame_equal(a[~gone.to_numpy()].drop(columns=["no_map"], errors="ignore"),
                                  b[~gone.to_numpy()].drop(columns=["no_map"], errors="ignore"))
    row = b[gone].iloc[0]
    if protocol == "chexlocalize":
        assert np.isnan(row["hit"]) and row["pred@otsu"] == 0 and row["gt"] > 0
    else:
        assert np.isnan(row["cnr"]) and row["pred@0.1"] == 0 and np.isnan(row["iou@0.1"])
    info = json.loads((part / name / "run.json").read_text())
    assert info["skipped"] == {"missing map (no prediction)": 1}


def test_non_finite_map_pixels_are_an_error_unless_declared_padding(tmp_path, capsys):
    maps = _gt_maps(tmp_path)
    victim = sorted(maps.glob("*.npy"))[0]
    m = np.load(victim)
    m[:5, :] = np.nan
    m[6, 6] = np.inf
    np.save(victim, m)
    code, _, err, _ = _score_rows(tmp_path, maps, "strict", capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: {victim}: map has 1121 non-finite pixels (NaN or inf)")
    assert "--nan-padding" in err
    code, _, err, res = _score_rows(tmp_path, maps, "padding", capsys, "--nan-padding")
    assert code == 0, err


# -- issue 18, item 8: numeric options are checked at the CLI, in one line --------------------

@pytest.mark.parametrize("args, words", [
    (["--chunk-size", "0"], ["--chunk-size", "0"]),
    (["--batch-size", "0"], ["--batch-size", "0"]),
    (["--bootstrap", "-5"], ["--bootstrap", "-5"]),
    (["--seed", "-1"], ["--seed", "-1"]),
    (["--keep-maps", "-2"], ["--keep-maps", "-2"]),
    (["--protocol-arg", "thresholds=0.3"], ["thresholds", "list of numbers"]),
    (["--protocol-arg", "thresholds=[0.1,\"x\"]"], ["thresholds", "list of numbers"]),
    (["--protocol", "chexlocalize", "--protocol-arg", "thresholds=0.3"],
     ["thresholds", "{task: number}"]),
    (["--protocol", "chexlocalize", "--protocol-arg", "prob_cutoff=[1]"], ["prob_cutoff"]),
    (["--protocol", "chexlocalize", "--protocol-arg", "prob_cutoff=1.5"], ["prob_cutoff"]),
])
def test_bad_numeric_options_are_one_line_usage_errors(tmp_path, capsys, args, words):
    code, out, err = run_cli(["run", "--methods", "center", "--datasets", "shapes",
                              "--results-dir", str(tmp_path), "--quiet", *args], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ") and all(w in err for w in words), err
    assert not list(tmp_path.iterdir())  # nothing ran


def test_score_bootstrap_and_seed_are_checked(tmp_path, capsys):
    maps, _ = _one_map_folder(tmp_path)
    for args in (["--bootstrap", "-1"], ["--seed", "-3"]):
        code, _, err = run_cli(["score", "--maps", str(maps), "--dataset", "shapes",
                                "--results-dir", str(tmp_path / "res"), *args], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and args[0] in err


# -- issue 18, item 15 -------------------------------------------------------------------------

def test_skip_counts_live_outside_the_rows_folder(tmp_path):
    """`pd.read_parquet(run/rows)` reads the rows folder as one dataset: nothing else in it."""
    from bench.datasets.base import Dataset
    from bench.registry import DATASETS
    from bench.types import Finding, Sample

    class Holes(Dataset):
        tasks = ("localization",)
        pathologies = ("Square",)
        needs_root = False

        def __len__(self):
            return 6

        def load(self, i):
            if i == 4:
                self.bad("cannot decode image", f"img{i}.png", reason="corrupt image")
                return None
            m = np.zeros((32, 32), np.uint8)
            m[4:20, 4:20] = 1
            return Sample(id=f"h{i}", image=m * 255, findings=[Finding("Square", "Square",
                                                                       mask=m)])

    DATASETS.add("holes-test", Holes)
    spec = RunSpec(method="oracle", dataset="holes-test", n_boot=10, chunk_size=4,
                   on_error="skip")
    result = Evaluator(tmp_path, progress=False).run(spec)
    rows = pd.read_parquet(result.path / "rows")
    assert len(rows) == 5 and sorted(rows["sample_id"]) == [f"h{i}" for i in (0, 1, 2, 3, 5)]
    assert result.info["skipped"] == {"corrupt image": 1}
    run = RunDir(result.path)  # a resume still counts the finished chunk's skip
    run.chunk_path(0).unlink()
    info = run.read_run()
    info["status"] = "running"
    run.write_run(info)
    assert Evaluator(tmp_path, progress=False).run(spec).info["skipped"] == {"corrupt image": 1}


def test_a_failed_precise_prompt_run_is_marked_failed(tmp_path, capsys):
    """RSNA has no phrases: the precise-prompt run stops with a one-line error, and its folder
    says "failed" with the error (not "running", as if it had been killed)."""
    _rsna_copy(tmp_path / "rsna")
    code, _, err = run_cli(["run", "--methods", "random", "--datasets", "rsna", "--root",
                            str(tmp_path / "rsna"), "--split", "all", "--prompt", "precise",
                            "--task", "localization", "--bootstrap", "10", "--results-dir",
                            str(tmp_path / "res"), "--quiet"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "precise" in err
    info = json.loads((tmp_path / "res" / "random__rsna__all__afloc__precise" / "run.json")
                      .read_text())
    assert info["status"] == "failed" and info["error"] in err


def test_a_failing_method_marks_the_run_failed(tmp_path):
    from bench.errors import DataError
    from bench.methods.base import Method
    from bench.types import Capabilities

    class Broken(Method):
        name = "broken"
        capabilities = Capabilities(localize=True)

        def localize(self, samples, queries):
            raise DataError("weights file is corrupt", "w.bin")

    spec = RunSpec(method="broken", dataset="shapes", n_boot=10, dataset_options={"n": 3})
    with pytest.raises(DataError, match="w.bin: weights file is corrupt"):
        Evaluator(tmp_path, progress=False).run(spec, method=Broken())
    info = json.loads((tmp_path / "broken__shapes__test__afloc__simple" / "run.json").read_text())
    assert info["status"] == "failed" and info["error"] == "w.bin: weights file is corrupt"


def test_a_run_folder_is_locked_while_a_process_writes_it(tmp_path):
    from bench.errors import BenchError

    spec = RunSpec(method="center", dataset="shapes", n_boot=10, split="test")
    lock = tmp_path / spec.run_id() / ".lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from filelock import FileLock; "
         "l = FileLock(sys.argv[1]); l.acquire(); print('held', flush=True); time.sleep(60)",
         str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BenchError) as exc:
            Evaluator(tmp_path, progress=False).run(spec)
        assert str(exc.value).startswith("another bench process is writing "
                                         f"{tmp_path / spec.run_id()}")
        assert [p.name for p in lock.parent.iterdir()] == [".lock"]  # it touched nothing
    finally:
        holder.kill()
        holder.wait()
    assert not Evaluator(tmp_path, progress=False).run(spec).reused  # free again


def test_a_run_refused_before_it_starts_leaves_no_folder(tmp_path):
    from bench.errors import UsageError

    spec = RunSpec(method="center", dataset="shapes", task="classification", n_boot=10)
    with pytest.raises(UsageError, match="cannot classify"):
        Evaluator(tmp_path, progress=False).run(spec)
    assert list(tmp_path.iterdir()) == []


def test_bench_alone_still_shows_its_help(capsys):
    code, out, err = run_cli([], capsys)
    assert "Usage: bench" in out + err and "error:" not in out + err
