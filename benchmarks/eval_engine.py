"""Evaluation-engine throughput on synthetic data (printed as a table; not a test).

  .venv/bin/python benchmarks/eval_engine.py [--samples 10000] [--boot 1000]

1. Per-sample AFLoc metrics (margin, [-1, 1] normalisation, 5 thresholds, IoU/Dice counts,
   signed CNR) on 224 x 224 maps: samples per second.
2. 1000-replicate bootstrap CIs of IoU, Dice and CNR over those rows (the official three
   threshold-averaged bootstraps), and the full summary with per-threshold CIs.
3. 1000-replicate AUROC CIs for N scores, index drawing included: the engine (AFLoc's
   per-replicate `resample(random_state=i)` indices, counts-based Mann-Whitney; drawn, counted
   and scored block by block on worker threads) against a plain loop calling sklearn
   `resample` + `roc_auc_score` per replicate; max |difference| of the replicates.
All data are SYNTHETIC (random maps, boxes, labels).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from sklearn.metrics import roc_auc_score
    from sklearn.utils import resample

    from bench.eval.bootstrap import seeded_indices, worker_count
    from bench.eval.metrics import auroc_replicates, seeded_auroc_replicates
    from bench.eval.protocols.afloc import AflocProtocol, row_metrics

    rng = np.random.default_rng(args.seed)
    n = args.samples
    table: list[tuple[str, str, str]] = []

    # 1. per-sample metrics ------------------------------------------------------------------
    cats = np.array(["Pneumonia", "Edema", "Atelectasis", "Cardiomegaly", "Pneumothorax"])
    yy, xx = np.mgrid[0:224, 0:224]
    rows, elapsed = [], 0.0
    for i in range(n):
        heat = rng.normal(size=(224, 224)).astype(np.float32)
        y0, x0 = rng.integers(14, 150, 2)
        gt = ((yy >= y0) & (yy < y0 + 50) & (xx >= x0) & (xx < x0 + 60)).astype(np.uint8)
        heat += 1.5 * gt
        t0 = time.perf_counter()
        r = row_metrics(heat, gt)
        elapsed += time.perf_counter() - t0
        r.update(sample_id=f"s{i}", query_id="q0", pathology=str(cats[i % len(cats)]),
                 positive=True)
        rows.append(r)
    rows_df = pd.DataFrame(rows)
    table.append(("per-sample metrics (224x224, 5 thresholds)", f"{n} samples",
                  f"{elapsed:.2f} s  ({n / elapsed:,.0f} samples/s)"))

    # 2. bootstrap CIs -----------------------------------------------------------------------
    proto = AflocProtocol(stream="plain", per_threshold_ci=False)
    t0, c0 = time.perf_counter(), time.process_time()
    proto.summarize(rows_df, n_boot=args.boot, seed=0)
    t_three, c_three = time.perf_counter() - t0, time.process_time() - c0
    table.append((f"{args.boot}-replicate CIs, IoU+Dice+CNR (3 official draws)",
                  f"{n} rows", f"{t_three:.2f} s  (CPU {c_three:.2f} s)"))
    full = AflocProtocol(stream="ms-cxr", per_threshold_ci=True)
    t0, c0 = time.perf_counter(), time.process_time()
    full.summarize(rows_df, n_boot=args.boot, seed=0)
    t_full, c_full = time.perf_counter() - t0, time.process_time() - c0
    table.append(("  + every per-threshold CI (18 draws in all)", f"{n} rows",
                  f"{t_full:.2f} s  (CPU {c_full:.2f} s)"))

    # 3. AUROC CIs ---------------------------------------------------------------------------
    labels = (rng.random(n) < 0.3).astype(int)
    scores = np.round(rng.normal(size=n) + labels, 3)  # some ties
    seeds = np.arange(args.boot)
    t0 = time.perf_counter()
    idx = seeded_indices(seeds, n)
    t_idx = time.perf_counter() - t0
    t0 = time.perf_counter()
    auroc_replicates(labels, scores, idx)
    t_auc = time.perf_counter() - t0
    t0 = time.perf_counter()
    one = seeded_auroc_replicates(labels, scores, seeds, workers=1)[:, 0]
    t_one = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = seeded_auroc_replicates(labels, scores, seeds)[:, 0]
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = np.empty(args.boot)
    base = np.arange(n)
    t_sk_auc = 0.0
    for i in range(args.boot):
        j = resample(base, replace=True, random_state=i)
        t1 = time.perf_counter()
        slow[i] = roc_auc_score(labels[j], scores[j])
        t_sk_auc += time.perf_counter() - t1
    t_slow = time.perf_counter() - t0
    diff = float(max(np.max(np.abs(fast - slow)), np.max(np.abs(one - slow))))
    table.append((f"{args.boot}-replicate AUROCs from drawn indices (AUROC part)", f"{n} scores",
                  f"{t_auc:.3f} s  (drawing the indices: {t_idx:.3f} s)"))
    table.append(("  fused draw + count + AUROC per block, 1 thread", f"{n} scores",
                  f"{t_one:.3f} s"))
    table.append((f"  fused, {worker_count()} threads (what `bench` runs)", f"{n} scores",
                  f"{t_fast:.3f} s"))
    table.append((f"{args.boot}-replicate AUROC CIs, sklearn loop (resample + AUROC)",
                  f"{n} scores", f"{t_slow:.2f} s  ({t_slow - t_sk_auc:.2f} + {t_sk_auc:.2f})"))
    table.append(("  speed-up, AUROC part on the same indices", "",
                  f"{t_sk_auc / t_auc:.1f}x"))
    table.append(("  speed-up, whole CI with index drawing (1 thread)", "",
                  f"{t_slow / t_fast:.1f}x ({t_slow / t_one:.1f}x)  "
                  f"(max |diff| of replicates {diff:.1e})"))

    w = max(len(a) for a, _, _ in table)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"SYNTHETIC data, seed {args.seed}; {os.cpu_count()} CPUs, load average {load:.1f}")
    print(f"{'step':<{w}}  {'size':<14}  time")
    for a, b, c in table:
        print(f"{a:<{w}}  {b:<14}  {c}")


if __name__ == "__main__":
    main()
