"""Synthetic chest X-ray generation speed at 512 x 512 (target: >= 50 images/s on 2 cores).

Usage: python benchmarks/synth_speed.py [--n 200] [--jobs 2]
Prints images/s for: drawing only (1 process), drawing with N joblib workers, and the full
MIMIC writer path (drawing + report + JPEG + .txt) with N workers, all in one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np


def _draw(i: int) -> int:
    from bench.synth.anchors import load_anchors
    from bench.synth.chest import make_chest, sample_findings

    rng = np.random.default_rng(np.random.SeedSequence([0, 77, i]))
    ph = make_chest(rng, 512, 512, load_anchors(), sample_findings(rng, "mimic"))
    return int(ph.image[0, 0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    a = ap.parse_args()
    from joblib import Parallel, delayed

    from bench.synth.anchors import load_anchors
    from bench.synth.writers.mimic import mimic_item

    load_anchors()
    _draw(0)  # warm caches
    rows = []
    t = time.perf_counter()
    for i in range(a.n):
        _draw(i)
    rows.append(("draw, 1 process", a.n / (time.perf_counter() - t)))
    with Parallel(n_jobs=a.jobs, backend="loky") as par:
        par(delayed(_draw)(i) for i in range(2 * a.jobs))  # start workers
        t = time.perf_counter()
        par(delayed(_draw)(i) for i in range(a.n))
        rows.append((f"draw, {a.jobs} workers", a.n / (time.perf_counter() - t)))
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            par(delayed(mimic_item)(d, 0, 1, i, 512, "mimic", 10000000 + i, 50000000 + i,
                                    "train") for i in range(a.n))
            rows.append((f"MIMIC writer (draw+report+JPEG), {a.jobs} workers",
                         a.n / (time.perf_counter() - t)))
    print(f"synthetic chest X-rays, 512 px wide, n={a.n}, cpus={os.cpu_count()}, "
          f"python {sys.version.split()[0]}")
    print(f"{'path':48s} {'images/s':>9s}")
    for name, v in rows:
        print(f"{name:48s} {v:9.1f}")


if __name__ == "__main__":
    main()
