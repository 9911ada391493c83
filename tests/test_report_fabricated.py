"""A small FABRICATED results store for the report tests (numbers invented for the tests, not
measured), written with bench.store exactly as the evaluator writes run folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.store import RunDir, atomic_write_bytes, atomic_write_json, iter_runs, run_id


def stat(mean: float, lower: float, upper: float, n: int = 10) -> dict:
    return {"mean": mean, "lower": lower, "upper": upper, "dataset_mean": mean, "n": n}


def write_fabricated_run(results: Path, *, method: str, dataset: str, metrics: dict,
                         task: str = "localization", protocol: str = "afloc",
                         prompt: str | None = None, split: str = "test",
                         tag: str | None = None, status: str = "complete",
                         finished: str = "2026-01-01T00:00:00Z") -> RunDir:
    """One run folder; `metrics` is the summary's "metrics" object."""
    rd = RunDir(results / run_id(method, dataset, split, protocol, prompt, tag))
    synthetic = dataset.startswith("synthetic-")
    rd.write_run({
        "method": method, "method_tag": tag, "dataset": dataset, "split": split,
        "protocol": protocol, "prompt": prompt, "task": task, "synthetic": synthetic,
        "seed": 0, "n_bootstrap": 1000,
        "method_info": {"checkpoint_sha256": "ab" * 32, "note": "fabricated for tests"},
        "dataset_info": {"root": "/nowhere"}, "versions": {"bench": "0.1.0", "torch": "x"},
        "git_rev": "deadbeef", "started": "2026-01-01T00:00:00Z", "finished": finished,
        "status": status, "skipped": {}, "n_rows": 10,
    })
    rd.write_summary({"schema": 1, "task": task, "protocol": protocol, "n_rows": 10,
                      "n_samples": 10,
                      "bootstrap": {"n": 1000, "seed": 0, "unit": "row", "ci_index": [24, 974]},
                      "metrics": metrics})
    return rd


def loc_metrics(iou: tuple, dice: tuple, cnr: tuple, per_category: dict | None = None,
                per_threshold: dict | None = None) -> dict:
    """IoU/Dice/CNR summary; per_category maps pathology -> IoU triple (Dice/CNR get the same
    categories with the triple scaled, so every metric has every category)."""
    out = {}
    for name, tri, scale in (("iou", iou, 1.0), ("dice", dice, 1.4), ("cnr", cnr, 4.0)):
        node: dict = {"overall": stat(*tri)}
        if per_category:
            node["per_category"] = {k: stat(*(round(x * scale, 4) for x in v))
                                    for k, v in per_category.items()}
        if per_threshold and name == "iou":
            node["per_threshold"] = per_threshold
        out[name] = node
    return out


def write_fabricated_maps(rd: RunDir, entries: list[dict], seed: int = 0) -> None:
    """maps/<k>.npz + maps/index.json in the contract's format; entries: sample_id, pathology,
    query, box (x, y, w, h in the 224 frame)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:224, 0:224]
    index = []
    for k, e in enumerate(entries):
        x, y, w, h = e["box"]
        image = (90 + 60 * np.exp(-((xx - 112) ** 2 + (yy - 112) ** 2) / 8000)
                 + rng.normal(0, 4, (224, 224))).clip(0, 255).astype(np.uint8)
        cx, cy = x + w / 2 + e.get("offset", 0), y + h / 2
        heat = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (w / 2) ** 2)).astype(np.float32)
        gt = np.zeros((224, 224), np.uint8)
        gt[int(y):int(y + h), int(x):int(x + w)] = 1
        boxes = np.array([e["box"]], np.float32) if e.get("boxes", True) else np.zeros((0, 4),
                                                                                       np.float32)
        import io
        buf = io.BytesIO()
        np.savez(buf, image=image, heatmap=heat, gt=gt, boxes=boxes)
        atomic_write_bytes(rd.path / "maps" / f"{k}.npz", buf.getvalue())
        index.append({"file": f"{k}.npz", "sample_id": e["sample_id"],
                      "query_id": e.get("query_id", f"q{k}"), "pathology": e["pathology"],
                      "query": e["query"]})
    atomic_write_json(rd.path / "maps" / "index.json", index)


def test_fabricated_store_is_read_by_iter_runs(tmp_path: Path) -> None:
    write_fabricated_run(tmp_path, method="afloc", dataset="rsna",
                         metrics=loc_metrics((0.3, 0.2, 0.4), (0.4, 0.3, 0.5), (1, 0.9, 1.1)))
    write_fabricated_run(tmp_path, method="gloria", dataset="rsna", status="running",
                         metrics=loc_metrics((0.3, 0.2, 0.4), (0.4, 0.3, 0.5), (1, 0.9, 1.1)))
    runs = list(iter_runs(tmp_path))
    assert [info["method"] for _, info, _ in runs] == ["afloc"]
    assert json.loads((runs[0][0].path / "run.json").read_text())["status"] == "complete"
