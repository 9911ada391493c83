"""Turn a finished `bench reproduce` run into the plan's `[timings.<scale>]` table.

    bench reproduce --scale micro --out /tmp/micro          # on the machine to describe
    python benchmarks/reproduce_timings.py /tmp/micro/reproduce.json \
        --measured "2-core AMD EPYC, 24 GiB, no GPU; bench reproduce --scale micro, 2026-12-06"

prints the TOML to paste into `bench/data/paper_plan.toml`: per training entry the seconds of
its first seed's job, per evaluation entry the median seconds of its jobs (an entry with
several checkpoints has one job each), and `eval_run`, the median seconds per run over every
evaluation job, for entries the run did not include. Also prints the wall time per job kind.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def entry_of(job_id: str, kind: str, labels: set[str]) -> str:
    """"train/afloc-word-s2" -> "afloc-word"; "eval/ablation-chest-word-s1" -> the eval entry
    name it was made from (the longest known prefix)."""
    name = job_id.split("/", 1)[1]
    if kind == "train":
        return name.rsplit("-s", 1)[0]
    best = max((x for x in labels if name == x or name.startswith(x + "-")), key=len,
               default=name)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("summary", type=Path, help="OUT/reproduce.json of a finished run")
    ap.add_argument("--measured", required=True, help="machine, command and date")
    ap.add_argument("--plan", type=Path, default=None, help="plan file (default: the package's)")
    args = ap.parse_args()

    from bench.reproduce.plan import load_plan

    plan = load_plan(args.plan)
    evals = {e.name: e for e in plan.evals}
    data = json.loads(args.summary.read_text(encoding="utf-8"))
    jobs = [j for j in data["jobs"] if j.get("status") == "ok"]
    train: dict[str, float] = {}
    ev: dict[str, list[float]] = {}
    per_run: list[float] = []
    for j in jobs:
        if j["kind"] == "train":
            train.setdefault(entry_of(j["id"], "train", set()), j["seconds"])
        else:
            name = entry_of(j["id"], "eval", set(evals))
            ev.setdefault(name, []).append(j["seconds"])
            n_runs = max(1, len(evals[name].methods) * len(evals[name].datasets)) \
                if name in evals else 1
            per_run.append(j["seconds"] / n_runs)
    scale = data.get("scale", "SCALE")
    print(f"[timings.{scale}]")
    print(f"measured = {json.dumps(args.measured)}")
    print(f"eval_run = {statistics.median(per_run):.0f}" if per_run else "")
    print("[timings." + scale + ".train]")
    for k, v in train.items():
        print(f"{json.dumps(k)} = {v:.0f}")
    print("[timings." + scale + ".eval]")
    for k, v in ev.items():
        print(f"{json.dumps(k)} = {statistics.median(v):.0f}")
    kinds: dict[str, float] = {}
    for j in jobs:
        kinds[j["kind"]] = kinds.get(j["kind"], 0.0) + j["seconds"]
    print(f"\n# wall time: {data.get('seconds', 0):.0f} s in all; "
          + ", ".join(f"{k} {v:.0f} s over {sum(x['kind'] == k for x in jobs)} jobs"
                      for k, v in kinds.items()))


if __name__ == "__main__":
    main()
