"""Peak memory of the streaming evaluator as the number of samples grows (prints a table).

Runs `bench run --methods random --datasets shapes` at 224x224 in a fresh subprocess for each N
and reads the child's peak RSS. Heatmaps are never accumulated, so the peak should be flat in N:
the target is under 10% growth from 1k to 10k samples.

    python benchmarks/evaluator_memory.py [--sizes 1000,10000]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time


def peak_rss_mib(n: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "bench.cli.main", "run", "--methods", "random",
               "--datasets", "shapes", "--task", "localization", "--quiet",
               "--dataset-arg", f"n={n}", "--dataset-arg", "height=224",
               "--dataset-arg", "width=224", "--bootstrap", "1000", "--results-dir", tmp]
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the max over all children so far: run sizes in increasing order
    return max(after, before) / 1024.0, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000")
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    rows = [(n, *peak_rss_mib(n)) for n in sizes]
    base = rows[0][1]
    print(f"{'samples':>8}  {'peak RSS (MiB)':>15}  {'growth vs first':>16}  {'wall (s)':>9}")
    for n, rss, wall in rows:
        print(f"{n:>8}  {rss:>15.1f}  {100 * (rss / base - 1):>15.1f}%  {wall:>9.1f}")


if __name__ == "__main__":
    main()
