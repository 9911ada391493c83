"""Does a method learn to localize from reports? Pretrain its tiny preset on the synthetic MIMIC
set (`--method`, default afloc), evaluate it against the `center` and `random` baselines, print a
table (SYNTHETIC data).
MS-CXR is scored twice: with "Findings suggesting {category}." (simple, the official MS_CXR_CLS
run) and with its own phrases (precise, the official MS_CXR run behind the paper's headline
MS-CXR figures). Each table ends with `check` lines: PASS where AFLoc's IoU or CNR CI lies
wholly above those of `center` and `random`, or its AUROC CI wholly above 0.5.

    python benchmarks/learning_check.py --device cpu --train-seconds 600       # the issue's check
    python benchmarks/learning_check.py --skip-train --eval-scale full         # real test sizes
    python benchmarks/learning_check.py --scale full                           # 20,000 pairs
    python benchmarks/learning_check.py --epochs 20 --train-seconds 1200       # twice the budget
    python benchmarks/learning_check.py --device cuda --train-seconds 300 --epochs 60

Everything goes through the real commands (`bench train`, `bench run`); the synthetic world is
generated on first use into --cache (default: a private cache under --out).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.methods.catalog import display_name


def bench(args: list[str], env: dict[str, str]) -> str:
    cmd = [sys.executable, "-m", "bench.cli.main", *args]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(args[:3])}...\n{r.stderr[-3000:]}")
    return r.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="afloc", help="Trainable method (bench list methods)")
    ap.add_argument("--out", default="learning_check")
    ap.add_argument("--cache", default=None,
                    help="Harness cache holding the synthetic world (default: OUT/cache)")
    ap.add_argument("--scale", default="small", choices=["tiny", "small", "full"],
                    help="Synthetic world the tiny AFLoc trains on")
    ap.add_argument("--eval-scale", default=None, choices=["tiny", "small", "full"],
                    help="World whose test sets are scored (default: --scale). 'full' has "
                         "MS-CXR at its real size (1,162 pairs, so CIs as wide as the paper's) "
                         "and 1,500 RSNA images (small: 300 each); no test image is in the "
                         "training set of any scale")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--train-seconds", type=float, default=600)
    ap.add_argument("--epochs", type=int, default=None,
                    help="Default: the tiny preset's (10); --train-seconds caps the time")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None,
                    help="Learning rate (default: the tiny preset's)")
    ap.add_argument("--gamma", type=float, default=None,
                    help="StepLR decay per epoch (default: bench train's, the official 0.9)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--datasets", default="synthetic-rsna,synthetic-ms-cxr")
    ap.add_argument("--text-mode", default=None, choices=["faithful", "corrected"],
                    help="afloc's text mode (default: its own, faithful)")
    ap.add_argument("--seed", type=int, default=1, help="Training seed")
    ap.add_argument("--precise", default="synthetic-ms-cxr",
                    help="Datasets also evaluated with their own phrases (--prompt precise, the "
                         "paper's headline MS-CXR protocol); '' for none")
    ap.add_argument("--skip-train", action="store_true",
                    help="Evaluate the checkpoint already in OUT/ckpt")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    cache = Path(args.cache).expanduser() if args.cache else out / "cache"
    env = dict(os.environ, BENCH_CACHE=str(cache), PYTHONUNBUFFERED="1")
    scale = ["--dataset-arg", f"scale={args.scale}"]
    eval_scale = args.eval_scale or args.scale

    t0 = time.time()
    method = args.method
    train = ["train", method, "--dataset", "synthetic-mimic", *scale, "--preset", "tiny",
             "--device", args.device, "--time-budget", str(args.train_seconds),
             "--seed", str(args.seed), "--out", str(out / "ckpt"), "--quiet"]
    if args.text_mode:
        train += ["--text-mode", args.text_mode]
    if args.epochs:
        train += ["--epochs", str(args.epochs)]
    if args.batch_size:
        train += ["--batch-size", str(args.batch_size)]
    if args.lr:
        train += ["--lr", str(args.lr)]
    if args.gamma:
        train += ["--gamma", str(args.gamma)]
    wall = ""
    if not args.skip_train:
        print(bench(train, env).strip().splitlines()[-1])
        wall = f", {time.time() - t0:.0f} s with data preparation"
    # the budget caps the training loop (epochs with their BN recalibration and validation)
    hist = json.loads((out / "ckpt" / "history.json").read_text())
    t_train = sum(e["seconds"] for e in hist["epochs"])
    runs = [("simple", args.datasets)]
    precise = [d for d in args.precise.split(",") if d and d in args.datasets.split(",")]
    if precise:
        runs.append(("precise", ",".join(precise)))
    # the header describes the checkpoint as trained (with --skip-train, not this command line)
    info = json.loads((out / "ckpt" / "train.json").read_text())
    req = info["request"]
    # train.json of the method platform keeps method options apart (older files: flat)
    own = {**req, **req.get("method_options", {}), **info.get("settings", {})}
    lr, gamma, budget = req.get("lr"), own.get("gamma"), req.get("time_budget")
    trained_scale = req["dataset_options"].get("scale", "small")
    label = display_name(method)
    text = f"{own['text_mode']} text" if own.get("text_mode") else ""
    rest = [x for x in (f"lr {lr:g}" if lr else "",
                        f"StepLR gamma {gamma}" if gamma not in (None, 0.9) else "") if x]
    print(f"\nSYNTHETIC data, trained on scale {trained_scale}, "
          f"scored on scale {eval_scale}; tiny {label} trained "
          f"{len(hist['epochs'])} epochs in {t_train:.0f} s{wall} on {req['device']} ("
          f"{f'budget {budget:.0f} s, ' if budget else ''}seed {req['seed']}"
          + "".join(f", {x}" for x in [text] + rest if x) + ")")
    # results of another scale than the checkpoint's training scale get folders of their own
    suffix = f"-{eval_scale}" if eval_scale != trained_scale else ""
    for prompt, datasets in runs:
        run = ["run", "--methods", f"{method},center,random", "--datasets", datasets,
               "--dataset-arg", f"scale={eval_scale}",
               "--method-arg", f"{method}.checkpoint={out / 'ckpt' / 'best.safetensors'}",
               "--prompt", prompt, "--device", args.device, "--bootstrap",
               str(args.bootstrap), "--results-dir",
               str(out / f"results-{prompt}{suffix}"), "--json",
               "--quiet", "--force"]
        report(json.loads(bench(run, env)), prompt, method)


def report(payload: dict, prompt: str, method: str = "afloc") -> None:
    def ci(stat: dict) -> str:
        return f"{stat['mean']:.3f} ({stat['lower']:.3f}, {stat['upper']:.3f})"

    print(f"\n{prompt} prompts")
    print(f"{'method':8} {'dataset':18} {'task':14} {'IoU':22} {'CNR':24} {'AUROC':22}")
    for r in payload["runs"]:
        m = r["summary"]["metrics"]
        print(f"{r['method']:8} {r['dataset']:18} {r['task']:14} "
              f"{ci(m['iou']['overall']) if 'iou' in m else '':22} "
              f"{ci(m['cnr']['overall']) if 'cnr' in m else '':24} "
              f"{ci(m['auroc']['overall']) if 'auroc' in m else '':22}")
    # per category (bootstrap means): where AFLoc and the center prior part ways
    loc = [r for r in payload["runs"] if r["task"] == "localization"]
    for ds in dict.fromkeys(r["dataset"] for r in loc):
        runs = {r["method"]: r["summary"]["metrics"] for r in loc if r["dataset"] == ds}
        cats = list(runs.get(method, next(iter(runs.values())))["iou"]["per_category"])
        if len(cats) < 2:
            continue
        print(f"per category on {ds}: IoU / CNR")
        for meth, m in runs.items():
            cells = [f"{c[:12]} {m['iou']['per_category'][c]['mean']:.3f}/"
                     f"{m['cnr']['per_category'][c]['mean']:.2f}" for c in cats]
            print(f"  {meth:7} " + "  ".join(cells))
    for line in verdicts(payload, method):
        print(line)
    for c in payload["comparisons"]:
        if method in (c["a"], c["b"]):
            print(f"paired {c['metric']} {c['a']} - {c['b']} on {c['dataset']}: "
                  f"{c['diff']:+.3f} ({c['lower']:+.3f}, {c['upper']:+.3f}) p={c['p_value']:.4f}")


def verdicts(payload: dict, method: str = "afloc") -> list[str]:
    """The rule, per dataset: the method's IoU and CNR CIs lie wholly above those of `center`
    and `random` (no overlap), and its zero-shot AUROC CI lies wholly above 0.5."""
    runs = {(r["method"], r["dataset"], r["task"]): r["summary"]["metrics"]
            for r in payload["runs"]}
    lines = []
    for (meth, ds, task), m in runs.items():
        if meth != method:
            continue
        if task == "classification":
            a = m["auroc"]["overall"]
            ok = a["lower"] > 0.5
            lines.append(f"check {ds} AUROC: {'PASS' if ok else 'FAIL'} "
                         f"(lower {a['lower']:.3f} vs 0.5)")
            continue
        for metric in ("iou", "cnr"):
            a = m[metric]["overall"]
            rivals = {b: runs[(b, ds, task)][metric]["overall"]["upper"]
                      for b in ("center", "random") if (b, ds, task) in runs}
            ok = bool(rivals) and all(a["lower"] > u for u in rivals.values())
            against = ", ".join(f"{b} upper {u:.3f}" for b, u in rivals.items())
            lines.append(f"check {ds} {metric.upper()}: {'PASS' if ok else 'FAIL'} "
                         f"(lower {a['lower']:.3f} vs {against})")
    return lines


if __name__ == "__main__":
    main()
