"""Generate the synthetic world: every dataset in its native layout under one output folder.

Units (each written completely or not at all, with a `.done-<unit>` marker written last):

    mimic         mimic-cxr-jpg/ (pretraining tree + CSVs) and ms-cxr/ (grounding files whose
                  images live in mimic-cxr-jpg/files, subject_id >= 19000000)
    rsna          rsna/          siim          siim/
    chexlocalize  chexlocalize/  covid-rural   covid-rural/
    chestx-det10  chestx-det10/  fundus        fundus/

Every image comes from its own generator, `default_rng(SeedSequence([seed, code, index]))`, so
files are byte-identical for the same seed and scale whatever the number of workers.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench.errors import UsageError
from bench.synth.writers import fundus as wf
from bench.synth.writers import kaggle as wk
from bench.synth.writers import localization as wl
from bench.synth.writers import mimic as wm
from bench.synth.writers.common import NOTICE, write

# image counts and sizes per scale (chest = MIMIC/CheXpert/COVID width; RSNA/SIIM are 1024)
SCALES: dict[str, dict[str, int]] = {
    "tiny": {"chest": 256, "det10_size": 256, "fundus_size": 192,
             "mimic_train": 40, "mimic_validate": 6, "mimic_test": 6, "mscxr": 10,
             "rsna": 12, "siim": 12, "chexlocalize_val": 6, "chexlocalize_test": 8,
             "covid": 8, "det10_train": 6, "det10_test": 8,
             "fundus_train": 32, "fundus_val": 4, "fundus_test": 8},
    "small": {"chest": 512, "det10_size": 512, "fundus_size": 384,
              "mimic_train": 3000, "mimic_validate": 100, "mimic_test": 200, "mscxr": 300,
              "rsna": 300, "siim": 300, "chexlocalize_val": 100, "chexlocalize_test": 300,
              "covid": 200, "det10_train": 200, "det10_test": 300,
              "fundus_train": 1500, "fundus_val": 100, "fundus_test": 300},
    "full": {"chest": 512, "det10_size": 1024, "fundus_size": 512,
             "mimic_train": 20000, "mimic_validate": 500, "mimic_test": 1000, "mscxr": 1162,
             "rsna": 1500, "siim": 1500, "chexlocalize_val": 234, "chexlocalize_test": 668,
             "covid": 221, "det10_train": 1000, "det10_test": 542,
             "fundus_train": 8000, "fundus_val": 500, "fundus_test": 1000},
}
UNITS = ("mimic", "rsna", "siim", "chexlocalize", "covid-rural", "chestx-det10", "fundus")
FOLDERS = {"mimic": ("mimic-cxr-jpg", "ms-cxr"), "rsna": ("rsna",), "siim": ("siim",),
           "chexlocalize": ("chexlocalize",), "covid-rural": ("covid-rural",),
           "chestx-det10": ("chestx-det10",), "fundus": ("fundus",)}
CODES = {"mimic": 1, "ms-cxr": 2, "rsna": 3, "siim": 4, "chexlocalize-val": 5,
         "chexlocalize-test": 6, "covid-rural": 7, "chestx-det10-train": 8,
         "chestx-det10-test": 9, "fundus": 10}


def _map(fn: Callable[..., dict], args: list[tuple], n_jobs: int, desc: str,
         progress: bool) -> list[dict[str, Any]]:
    """fn(*a) for every a, in order; parallel with joblib when n_jobs > 1."""
    if n_jobs <= 1 or len(args) < 2:
        it: Iterable = (fn(*a) for a in args)
    else:
        from joblib import Parallel, delayed

        it = Parallel(n_jobs=n_jobs, backend="loky", return_as="generator",
                      batch_size=8)(delayed(fn)(*a) for a in args)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, total=len(args), desc=f"synth {desc}", unit="img", leave=False)
    return list(it)


def default_jobs(scale: str) -> int:
    return 1 if scale == "tiny" else max(1, min(os.cpu_count() or 1, 8))


# What the generator draws, bumped whenever a unit's files change for the same scale, seed and
# anchors (2: the "suggesting" report templates; 3: fundus/paraphrases.json, and 32 tiny fundus
# training pairs, two batches of the tiny presets), so a world of another version is regenerated
WORLD_VERSION = 3


def world_marker(scale: str, seed: int, anchors_source: str) -> str:
    """The `.done-<unit>` text: what defines the world ("anchors=txv1.5.7" or "procedural")."""
    from bench.synth.anchors import anchor_tag

    return (f"scale={scale} seed={seed} anchors={anchor_tag(anchors_source)} "
            f"version={WORLD_VERSION}\n")


def generate(out: str | Path, scale: str = "small", seed: int = 0,
             units: Iterable[str] | None = None, n_jobs: int | None = None,
             progress: bool = False) -> dict[str, Path]:
    """Write the requested units under `out` (skipping finished ones); returns unit -> folder."""
    if scale not in SCALES:
        raise UsageError(f"unknown scale '{scale}' (tiny, small, full)")
    units = list(units) if units is not None else list(UNITS)
    for u in units:
        if u not in UNITS:
            raise UsageError(f"unknown synthetic unit '{u}' ({', '.join(UNITS)})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = n_jobs if n_jobs is not None else default_jobs(scale)
    from filelock import FileLock

    from bench.synth.anchors import load_anchors

    # build the anchor cache once, before any worker starts; the marker names the anchors, since
    # the procedural fallback and torchxrayvision's anchors give different worlds
    marker = world_marker(scale, seed, load_anchors().source)
    notice = out / "SYNTHETIC.txt"
    if not notice.exists() or "anchors=" not in notice.read_text():
        write(notice, f"{NOTICE}\n{marker}")

    for u in units:
        with FileLock(str(out / f".lock-{u}")):
            done = out / f".done-{u}"
            if done.exists():
                found = done.read_text()
                if found == marker:
                    continue
                if not _outdated(found, marker):
                    raise UsageError(f"{out} already holds a different synthetic world "
                                     f"({found.strip()}; this one is {marker.strip()}); "
                                     f"choose another folder")
                print(f"synth: regenerating {u} in {out} (written by an older generator: "
                      f"{found.strip()})", file=sys.stderr)
            for f in FOLDERS[u]:
                shutil.rmtree(out / f, ignore_errors=True)
            _UNIT_WRITERS[u](out, SCALES[scale], seed, jobs, progress)
            write(out / f".done-{u}", marker)
    return {u: out / FOLDERS[u][0] for u in units}


def _outdated(found: str, marker: str) -> bool:
    """The same world (scale, seed, anchors) from an older generator, or a marker from before
    markers named the anchors (which world it is is unknown): either is regenerated."""
    have = dict(f.split("=", 1) for f in found.strip().split(" ") if "=" in f)
    want = dict(f.split("=", 1) for f in marker.strip().split(" ") if "=" in f)
    same = ("scale", "seed") if "anchors" not in have else ("scale", "seed", "anchors")
    return all(have.get(k) == want[k] for k in same)


def _mimic(out: Path, cfg: dict, seed: int, jobs: int, progress: bool) -> None:
    root = out / "mimic-cxr-jpg"
    args = []
    n = 0
    for split in ("train", "validate", "test"):
        k = cfg[f"mimic_{split}"]
        for _ in range(k):  # two studies per subject; splits never share a subject
            subject = 10000000 + n // 2 + (0 if split == "train" else 1000000 * (
                1 if split == "validate" else 2))
            args.append((str(root), seed, CODES["mimic"], n, cfg["chest"], "mimic", subject,
                         50000000 + n, split))
            n += 1
    items = _map(wm.mimic_item, args, jobs, "mimic-cxr", progress)
    ms_args = [(str(root), seed, CODES["ms-cxr"], i, cfg["chest"], "mscxr", 19000000 + i,
                59000000 + i, "train") for i in range(cfg["mscxr"])]
    ms_items = _map(wm.mimic_item, ms_args, jobs, "ms-cxr", progress)
    ms_items = [it for it in ms_items if it["anns"]]
    wm.write_mimic_tables(root, items + ms_items)
    wm.write_mscxr(out / "ms-cxr", ms_items)


def _rsna(out: Path, cfg: dict, seed: int, jobs: int, progress: bool) -> None:
    root = out / "rsna"
    args = [(str(root), seed, CODES["rsna"], i) for i in range(cfg["rsna"])]
    wk.write_rsna_tables(root, _map(wk.rsna_item, args, jobs, "rsna", progress))


def _siim(out: Path, cfg: dict, seed: int, jobs: int, progress: bool) -> None:
    root = out / "siim"
    args = [(str(root), seed, CODES["siim"], i) for i in range(cfg["siim"])]
    wk.write_siim_tables(root, _map(wk.siim_item, args, jobs, "siim", progress))


def _chexlocalize(out: Path, cfg: dict, seed: int, jobs: int, progress: bool) -> None:
    root = out / "chexlocalize"
    for split, first in (("val", 64541), ("test", 64741)):
        code = CODES[f"chexlocalize-{split}"]
        args = [(str(root), seed, code, i, cfg["chest"], split, first + i)
                for i in range(cfg[f"chexlocalize_{split}"])]
        wl.write_chexlocalize_tables(root, _map(wl.chexlocalize_item, args, jobs,
                                                f"chexlocalize-{split}", progress), split)
    from bench.synth.writers.common import readme

    readme(root, "CheXlocalize (CheXpert/{val,test}/patientX/study1/view1_frontal.jpg, "
           "CheXpert/{val,test}_labels.csv, CheXlocalize/gt_segmentations_*.json COCO RLE "
           "size [h, w], gt_annotations_*.json polygons, hb_*_test.json human benchmark)")


def _covid(out: Path, cfg: dict, seed: int, jobs: int, progress: bool) -> None:
    root = out / "covid-rural"
    args = [(str(root), seed, CODES["covid-rural"], i, cfg["chest"]) for i in range(cfg["covid"])]
    wl.write_covid_tables(root, _map(wl.covid_item, args, jobs, "covid-rural", progress))


def _det10(out: Path, cfg: dict, seed: int, jobs: int, progress: bool) -> None:
    root = out / "chestx-det10"
    for split in ("train", "test"):
        code = CODES[f"chestx-det10-{split}"]
        args = [(str(root), seed, code, i, cfg["det10_size"], split)
                for i in range(cfg[f"det10_{split}"])]
        wl.write_det10_tables(root, _map(wl.det10_item, args, jobs, f"chestx-det10-{split}",
                                         progress), split)
    from bench.synth.writers.common import readme

    readme(root, "ChestX-Det10 (train.json/test.json lists of {file_name, syms, boxes x1,y1,"
           "x2,y2}; train_data/, test_data/ PNGs)")


def _fundus(out: Path, cfg: dict, seed: int, jobs: int, progress: bool) -> None:
    root = out / "fundus"
    args, n = [], 0
    for split in ("train", "val", "test"):
        for _ in range(cfg[f"fundus_{split}"]):
            args.append((str(root), seed, CODES["fundus"], n, cfg["fundus_size"], split))
            n += 1
    wf.write_fundus_tables(root, _map(wf.fundus_item, args, jobs, "fundus", progress))


_UNIT_WRITERS = {"mimic": _mimic, "rsna": _rsna, "siim": _siim, "chexlocalize": _chexlocalize,
                 "covid-rural": _covid, "chestx-det10": _det10, "fundus": _fundus}
