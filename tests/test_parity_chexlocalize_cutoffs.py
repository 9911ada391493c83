"""Probability cutoffs tuned from CheXlocalize `*_map.pkl` files exactly as the official
`tune_probability_threshold.py` tunes them (rajpurkarlab/cheXlocalize): the pkl's `prob` keeps
its own type (a Python float is compared as a float, a float32 tensor in float32, as torch
compares a tensor with a numpy float64 cutoff), end to end through `bench score`.

The official comparison is transcribed below and run on the very same pkl files.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from bench.cli.main import main as bench_main
from bench.datasets.chexlocalize import TASKS
from bench.eval.external_maps import CHEXPERT_TASKS

try:
    from tests.data_fixtures import blocky, write_jpg
    from tests.test_eval_protocols import o_calc_iou, o_otsu
except ImportError:  # tests/ is not always a package
    from data_fixtures import blocky, write_jpg
    from test_eval_protocols import o_calc_iou, o_otsu

HW = (40, 48)
IDS = [f"patient{n}_study1_view1_frontal" for n in range(64541, 64547)]
IN_GT = IDS[:4]  # the last two CXRs have no ground truth at all (not in the GT file)


# -- the official comparison, transcribed (tune_probability_threshold.py) -------------------

def o_compute_miou(cutoff, pkl_paths, gt):
    ious = []
    for pkl_path in pkl_paths:
        with open(pkl_path, "rb") as fh:
            info = pickle.load(fh)  # test-made files
        img_dims = info["cxr_dims"]
        map_resized = F.interpolate(info["map"], size=(img_dims[1], img_dims[0]),
                                    mode="bilinear", align_corners=False)
        if torch.is_tensor(info["prob"]) and info["prob"].size()[0] == 14:
            prob_idx = CHEXPERT_TASKS.index(info["task"])
            pred_prob = info["prob"][prob_idx]
        else:
            pred_prob = info["prob"]
        if pred_prob > cutoff:
            pred_mask = np.array(o_otsu(map_resized))
        else:
            pred_mask = np.zeros((img_dims[1], img_dims[0]))
        path = str(pkl_path).split("/")
        task = path[-1].split("_")[-2]
        img_id = "_".join(path[-1].split("_")[:-2])
        if img_id in gt:
            gt_mask = mask_utils.decode(gt[img_id][task])
        else:
            gt_mask = np.zeros((img_dims[1], img_dims[0]))
        ious.append(o_calc_iou(pred_mask, gt_mask, False))
    return round(np.nanmean(np.array(ious)), 3)


def o_find_threshold(task, gt, cam_dir):
    cam_pkl = sorted(Path(cam_dir).rglob(f"*{task}_map.pkl"))
    cutoffs = np.arange(0, .9, .1)
    if task == "Lung Lesion":
        cutoffs = np.arange(0.1, .9, .1)
    mious = [o_compute_miou(cutoff, cam_pkl, gt) for cutoff in cutoffs]
    return round(cutoffs[mious.index(max(mious))], 1)  # the CSV's prob_threshold, idxmax


# -- a CheXlocalize val split and its pkls ----------------------------------------------------

def _rle(m):
    r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode()}


def _blob(k: int) -> np.ndarray:
    g = np.zeros(HW, np.uint8)
    y, x = 5 + 6 * (k % 4), 6 + 8 * (k % 4)
    g[y:y + 12, x:x + 14] = 1
    return g


def _grid_at(mask: np.ndarray, rng) -> np.ndarray:
    """An 8 x 8 map that peaks on the mask (or anywhere, for an empty one)."""
    grid = rng.normal(0, 0.05, size=(8, 8)).astype(np.float32)
    ys, xs = np.nonzero(mask) if mask.any() else ([20], [24])
    grid[int(np.mean(ys)) * 8 // HW[0], int(np.mean(xs)) * 8 // HW[1]] += 1.0
    return grid


# Edema (Python floats) and Cardiomegaly (14-element float32 tensors): a CXR without GT at
# prob 0.2 and a positive at 0.25 make 0.2 the best cutoff only if `0.2 > 0.2` is False; two
# empty-GT CXRs at 0.05 are gated from 0.1 on.
FOCUS_PROBS = {IDS[0]: 0.9, IDS[1]: 0.25, IDS[2]: 0.05, IDS[3]: 0.05, IDS[4]: 0.2, IDS[5]: 0.05}
FOCUS_GT = {IDS[0], IDS[1]}


def _write_split(tmp_path: Path) -> tuple[Path, Path, dict]:
    root, maps = tmp_path / "chx", tmp_path / "maps"
    maps.mkdir()
    rng = np.random.default_rng(7)
    gt_json: dict = {}
    for i, cxr in enumerate(IDS):
        p, s, v, f = cxr.split("_")
        write_jpg(root / "CheXpert" / "val" / p / s / f"{v}_{f}.jpg", blocky(*HW, seed=i))
    for i, cxr in enumerate(IDS):
        masks = {}
        for k, task in enumerate(TASKS):
            if task in ("Edema", "Cardiomegaly"):
                m = _blob(i) if cxr in FOCUS_GT else np.zeros(HW, np.uint8)
                prob = FOCUS_PROBS[cxr]
            else:
                m = _blob(i + k) if (cxr in IN_GT and rng.random() < 0.5) else \
                    np.zeros(HW, np.uint8)
                prob = float(rng.choice([0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.7, 0.9]))
            masks[task] = m
            if task == "Cardiomegaly" or task == "Pleural Effusion":
                vec = torch.full((14,), 0.5, dtype=torch.float32)
                vec[CHEXPERT_TASKS.index(task)] = prob
                prob_obj = vec
            elif task == "Lung Lesion":
                prob_obj = torch.tensor([prob], dtype=torch.float32)
            else:
                prob_obj = prob  # a Python float, as the official pipeline may store it
            grid = _grid_at(m, rng)
            with open(maps / f"{cxr}_{task}_map.pkl", "wb") as fh:
                pickle.dump({"map": torch.from_numpy(grid)[None, None], "prob": prob_obj,
                             "task": task, "gt": int(m.any()), "cxr_dims": (HW[1], HW[0])}, fh)
        if cxr in IN_GT:
            gt_json[cxr] = {t: _rle(m) for t, m in masks.items()}
    (root / "CheXlocalize").mkdir(parents=True)
    (root / "CheXlocalize" / "gt_segmentations_val.json").write_text(json.dumps(gt_json))
    return root, maps, gt_json


def test_cutoffs_tuned_from_pkls_equal_the_official_script(tmp_path, capsys):
    root, maps, gt = _write_split(tmp_path)
    want = {task: o_find_threshold(task, gt, maps) for task in TASKS}
    assert want["Edema"] == 0.2 and want["Cardiomegaly"] == 0.2  # the cases that matter
    try:
        bench_main(["score", "--maps", str(maps), "--dataset", "chexlocalize", "--root",
                    str(root), "--split", "val", "--protocol", "chexlocalize",
                    "--protocol-arg", "method=otsu", "--protocol-arg", "prob_cutoff=tune",
                    "--bootstrap", "0", "--results-dir", str(tmp_path / "res"), "--json"])
    except SystemExit as exc:
        assert not exc.code
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary["prob_cutoffs"] == want


def _pkl_prob(tmp_path: Path, prob, task: str = "Edema") -> tuple[float, bool, bool]:
    """What the harness reads from a pkl holding `prob`: (value, tuning in float32, gate in
    float32)."""
    from bench.eval.external_maps import ExternalMaps
    from bench.types import Sample

    folder = tmp_path / f"m{abs(hash(repr(prob))) % 10**8}"
    folder.mkdir(exist_ok=True)
    with open(folder / f"cxr_{task}_map.pkl", "wb") as fh:
        pickle.dump({"map": torch.zeros(1, 1, 4, 4), "prob": prob, "task": task,
                     "cxr_dims": (4, 4)}, fh)
    m = ExternalMaps(folder)
    s = Sample(id="cxr", image=None, meta={"hw": (4, 4)})
    value = float(m.classify([s], [task])[0, 0])
    return (value, *m.prob_precision(s, task))


EDGES = [float(v) for c in np.arange(0, .9, .1)
         for v in (np.float32(c), np.nextafter(np.float32(c), np.float32(1)),
                   np.nextafter(np.float32(c), np.float32(0)), c)]


@pytest.mark.parametrize("kind", ["python-float", "tensor-14", "tensor-1"])
def test_cutoff_comparison_equals_the_official_one(tmp_path, kind):
    """Every probability at or next to a cutoff, compared with every cutoff of the search, as
    the official `pred_prob > cutoff` compares it, and as `pkl_to_mask`'s gate compares it."""
    from bench.eval.protocols.chexlocalize import prob_above, prob_below

    for v in EDGES:
        if kind == "python-float":
            prob, official = v, v
        elif kind == "tensor-14":
            prob = torch.full((14,), 0.5)
            prob[CHEXPERT_TASKS.index("Edema")] = v
            official = prob[CHEXPERT_TASKS.index("Edema")]  # tuning: a 0-d float32 tensor
        else:
            prob = official = torch.tensor([v])
        value, tune32, gate32 = _pkl_prob(tmp_path, prob)
        gate_official = official.item() if kind == "tensor-14" else official  # `.item()`
        for c in np.arange(0, .9, .1):
            assert bool(prob_above(np.array([value]), np.array([tune32]), c)[0]) == \
                bool(official > c), (kind, v, c)
            cut = round(c, 1)  # the CSV's prob_threshold, as `pkl_to_mask` gets it
            assert bool(prob_below(np.array([value]), np.array([gate32]), cut)[0]) == \
                bool(gate_official < np.float64(cut)), (kind, v, cut)
