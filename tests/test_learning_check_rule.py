"""The learning check's pass rule (benchmarks/learning_check.py), on hand-made summaries."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_path = Path(__file__).resolve().parents[1] / "benchmarks" / "learning_check.py"
_spec = importlib.util.spec_from_file_location("learning_check", _path)
learning_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(learning_check)


def _ci(lower: float, upper: float) -> dict:
    return {"overall": {"mean": (lower + upper) / 2, "lower": lower, "upper": upper}}


def _run(method: str, task: str, **metrics) -> dict:
    return {"method": method, "dataset": "synthetic-rsna", "task": task,
            "summary": {"metrics": metrics}}


def test_cis_must_not_touch_and_auroc_must_clear_one_half():
    payload = {"runs": [
        _run("afloc", "localization", iou=_ci(0.124, 0.2), cnr=_ci(0.892, 1.3)),
        _run("center", "localization", iou=_ci(0.095, 0.123), cnr=_ci(0.734, 0.892)),
        _run("random", "localization", iou=_ci(0.047, 0.059), cnr=_ci(-0.002, 0.005)),
        _run("afloc", "classification", auroc=_ci(0.5, 0.9)),
    ], "comparisons": []}
    assert learning_check.verdicts(payload) == [
        "check synthetic-rsna IOU: PASS (lower 0.124 vs center upper 0.123, random upper 0.059)",
        # a lower bound equal to center's upper bound is an overlap
        "check synthetic-rsna CNR: FAIL (lower 0.892 vs center upper 0.892, random upper 0.005)",
        "check synthetic-rsna AUROC: FAIL (lower 0.500 vs 0.5)",
    ]


def test_no_baseline_run_is_no_pass():
    payload = {"runs": [_run("afloc", "localization", iou=_ci(0.5, 0.6), cnr=_ci(2.0, 3.0))]}
    assert [line.split(" (")[0] for line in learning_check.verdicts(payload)] == [
        "check synthetic-rsna IOU: FAIL", "check synthetic-rsna CNR: FAIL"]


def test_skip_train_scores_on_another_scale_and_describes_the_checkpoint(tmp_path, monkeypatch,
                                                                        capsys):
    """--eval-scale full scores the small-trained checkpoint on the full world's test sets, into
    results folders of their own; the header reads the checkpoint's train.json, not the flags."""
    import json
    import sys

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "history.json").write_text(json.dumps({"epochs": [{"seconds": 50.25},
                                                              {"seconds": 49.5}]}))
    (ckpt / "train.json").write_text(json.dumps({"request": {
        "dataset_options": {"scale": "small"}, "device": "cpu", "time_budget": 600.0,
        "seed": 3, "text_mode": "faithful", "lr": None, "gamma": 0.9}}))
    calls = []
    monkeypatch.setattr(learning_check, "bench", lambda args, env: (
        calls.append(args), json.dumps({"runs": [], "comparisons": []}))[1])
    monkeypatch.setattr(learning_check, "report", lambda payload, prompt, method: None)
    monkeypatch.setattr(sys, "argv", ["learning_check.py", "--skip-train", "--out", str(tmp_path),
                                      "--eval-scale", "full", "--seed", "9"])
    learning_check.main()
    assert capsys.readouterr().out.strip() == (
        "SYNTHETIC data, trained on scale small, scored on scale full; tiny AFLoc trained "
        "2 epochs in 100 s on cpu (budget 600 s, seed 3, faithful text)")
    assert [c[0] for c in calls] == ["run", "run"]  # no training
    for call, prompt in zip(calls, ("simple", "precise")):
        assert call[call.index("--dataset-arg") + 1] == "scale=full"
        assert call[call.index("--results-dir") + 1] == str(tmp_path / f"results-{prompt}-full")
        assert call[call.index("--prompt") + 1] == prompt
