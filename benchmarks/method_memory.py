"""Peak memory of one evaluation over several methods: does the runner hold one model at a time?

Runs, in a fresh process per measurement, `Evaluator.run` on the `shapes` set for N AFLoc
configurations (different seeds, so N different models; `--size paper` is ResNet-50 +
BERT-base with random weights, about 0.5 GB each in float32; no download: the tokenizer is a
WordPiece built here) and, separately, `bench run --methods afloc,center,random` (tiny AFLoc,
random weights). Prints the process's peak RSS and its RSS after each run. With the method
platform (`Evaluator.run_all`, `Method.close`) the peak should not grow with N; before it, every
built method stayed in memory until the process ended.

    python benchmarks/method_memory.py --size paper --n 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap

CHILD = textwrap.dedent("""
    import gc, json, resource, sys, tempfile
    from pathlib import Path

    def rss_mib():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    size, n, results, tok_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    try:
        from bench.methods._shared.encoders import build_wordpiece
    except ImportError:  # before the method platform
        from bench.methods.afloc.presets import build_wordpiece
    build_wordpiece(["findings suggesting opacity nodule effusion"], 200).save_pretrained(tok_dir)
    from bench.eval.runner import Evaluator, RunSpec

    ev = Evaluator(results, progress=False)
    after = []
    for k in range(n):
        opts = {"preset": size} if size == "tiny" else {"preset": size, "text_encoder": tok_dir}
        spec = RunSpec(method="afloc", dataset="shapes", task="localization", seed=k,
                       tag=f"model{k}", n_boot=10, batch_size=8, method_options=opts,
                       dataset_options={"n": 8})
        ev.run(spec)
        gc.collect()
        after.append(round(rss_mib(), 1))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mib": round(peak, 1), "rss_after_each_mib": after}))
""")

CLI = textwrap.dedent("""
    import json, resource, sys
    from bench.cli.main import main
    try:
        main(["run", "--methods", "afloc,center,random", "--datasets", "shapes", "--quiet",
              "--bootstrap", "10", "--dataset-arg", "n=16", "--results-dir", sys.argv[1]])
    except SystemExit:
        pass
    print(json.dumps({"peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                         / 1024, 1)}))
""")


def child(code: str, *args: str) -> dict:
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                       check=False)
    if r.returncode != 0:
        sys.exit(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="paper", choices=["paper", "tiny"])
    ap.add_argument("--n", default="1,3", help="numbers of models, comma-separated")
    args = ap.parse_args()
    print(f"{'run':44} {'peak RSS (MiB)':>15}  RSS after each run (MiB)")
    for n in (int(x) for x in args.n.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            out = child(CHILD, args.size, str(n), f"{tmp}/results", f"{tmp}/tok")
        label = f"Evaluator.run, {n} x {args.size} AFLoc on shapes"
        print(f"{label:44} {out['peak_mib']:>15.1f}  {out['rss_after_each_mib']}")
    with tempfile.TemporaryDirectory() as tmp:
        out = child(CLI, tmp)
    print(f"{'bench run afloc,center,random (tiny, shapes)':44} {out['peak_mib']:>15.1f}")


if __name__ == "__main__":
    main()
