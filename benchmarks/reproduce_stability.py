"""Are the orderings of a reproduction stable across training seeds and CPU thread counts?

    bench reproduce --scale tiny --only table-1 --seeds 1,2 --out runs/t2
    bench reproduce --scale tiny --only table-1 --seeds 1,2 --threads 1 --out runs/t1
    python benchmarks/reproduce_stability.py runs/t2 runs/t1 --tables table-1

CPU training is deterministic for one seed and one thread count, but another thread count
splits the kernels' sums differently, and the rounding sends training elsewhere: in effect
another draw of the seed. This script puts several `bench reproduce --out` folders side by side
(each holding one or more seeds; a label per folder, by default its `--threads` from
reproduce.json) and prints

* every trained cell of the tables: its value for each (folder, seed), their mean and range;
* every comparison of the plan's claims (`bench reproduce --check`) on those tables: the
  difference a - b for each (folder, seed), and whether its sign is the same in all of them
  ("stable") or not ("flips k/n": k of the n runs have a > b);
* every comparison's check verdict in each folder (holds, fails or unresolved, over that
  folder's seeds), and whether the folders agree: "contradicts" when one folder's verdict holds
  and another's fails, the instability the check must not report.

The last lines count the stable comparisons and the contradicting verdicts. Synthetic results
stay synthetic: the header says which datasets were measured.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any


def run_info(out: Path) -> dict:
    try:
        return json.loads((out / "reproduce.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def label_of(out: Path) -> str:
    threads = run_info(out).get("threads")
    return f"{out.name} ({f'{threads} thread(s)' if threads else 'default threads'})"


def seed_name(out: Path, folder: str, plan, scale_name: str | None = None) -> str:
    """"results" is the scale's first seed (reproduce.json names the scale, else `scale_name`);
    "seed-<n>" is n."""
    if folder != "results":
        return folder.replace("seed-", "s")
    scale = plan.scales.get(run_info(out).get("scale") or scale_name or "")
    return f"s{scale.seeds[0]}" if scale else "first seed"


def sign_of(values: list[float]) -> str:
    """"stable a > b" / "stable a <= b" when every run agrees, else "flips k/n"."""
    have = [v for v in values if v is not None and not math.isnan(v)]
    pos = sum(v > 0 for v in have)
    if have and pos in (0, len(have)):
        return f"stable {'a > b' if pos else 'a <= b'} ({len(have)} runs)"
    return f"flips {pos}/{len(have)}"


def seed_values(cell: dict) -> dict[str, float]:
    """The cell's value per seed folder ("results" = the scale's first seed)."""
    m = cell.get("measured") or {}
    if not m:
        return {}
    seeds = (m.get("seeds") or {}).get("values")
    return dict(seeds) if seeds else {"results": m["mean"]}


def trained_cells(tables: list[str], out: Path) -> dict[tuple[str, str, str, str], dict]:
    from bench.report.build import build_table
    from bench.report.render import render
    from bench.report.specs import TABLES
    from bench.report.store_view import StoreView

    view = StoreView(out / "results")
    cells = {}
    for name in tables:
        table = json.loads(render(build_table(TABLES[name], view), "json"))
        for row in table["rows"]:
            if row.get("reference"):
                continue
            for col, cell in row["cells"].items():
                values = seed_values(cell)
                if values:
                    cells[(name, row["section"], row["row"], col)] = values
    return cells


def folder_comparisons(out: Path, tables: list[str], plan) -> dict[tuple[str, str, str, str], Any]:
    """Per claim comparison measured in the folder: the check's own `Comparison` (its pairing,
    its difference a - b per seed folder, its verdict over the folder's seeds)."""
    from bench.reproduce.check import check_claims

    found = {}
    for res in check_claims(plan, out / "results", tables):
        for c in res.comparisons:
            if c.per_seed:
                found[(res.claim.id, c.section, c.a, c.b)] = c
    return found


def agreement(verdicts: list[str | None]) -> str:
    """"same" when every folder gives one verdict, "contradicts" when one holds and another
    fails, else "differs" (one decided, another unresolved)."""
    have = {v for v in verdicts if v is not None}
    if len(have) <= 1:
        return "same"
    return "contradicts" if {"holds", "fails"} <= have else "differs"


def fmt(x: float) -> str:
    return "nan" if x is None or math.isnan(x) else f"{x:.3f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outs", nargs="+", type=Path, help="bench reproduce --out folders")
    ap.add_argument("--label", action="append", default=None,
                    help="a label per folder (default: its name and --threads)")
    ap.add_argument("--tables", default="table-1", help="comma-separated table names")
    ap.add_argument("--plan", type=Path, default=None, help="plan file (default: the package's)")
    ap.add_argument("--scale", default=None, help="the scale, for a folder whose run was cut "
                    "off before it wrote reproduce.json (names its first seed)")
    args = ap.parse_args(argv)
    tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    labels = args.label or [label_of(o) for o in args.outs]
    if len(labels) != len(args.outs):
        ap.error("give one --label per folder")

    from bench.cli.reproduce_cmd import synthetic_results
    from bench.reproduce.plan import load_plan

    plan = load_plan(args.plan)
    synthetic = sorted({d for o in args.outs for d in synthetic_results(o / "results")})
    if synthetic:
        print(f"SYNTHETIC DATA ({', '.join(synthetic)}): this tests the harness and the "
              "methods on the synthetic world, not the paper's result.\n")
    cells: dict = {}
    diffs: dict = {}
    verdicts: dict = {}
    for lab, out in zip(labels, args.outs):
        for key, values in trained_cells(tables, out).items():
            for folder, v in values.items():
                cells.setdefault(key, {})[(lab, seed_name(out, folder, plan, args.scale))] = v
        for key, comp in folder_comparisons(out, tables, plan).items():
            verdicts.setdefault(key, {})[lab] = comp.verdict
            for folder, d in comp.per_seed.items():
                diffs.setdefault(key, {})[(lab, seed_name(out, folder, plan, args.scale))] = d

    def columns(found: dict) -> list[tuple[str, str]]:
        return sorted({k for c in found.values() for k in c},
                      key=lambda k: (labels.index(k[0]), k[1]))

    heads = columns(cells)
    print("## Trained cells per (folder, seed)\n")
    print("| table | section | row | column | " + " | ".join(f"{lab} {s}" for lab, s in heads)
          + " | mean | range |")
    print("|" + "---|" * (4 + len(heads) + 2))
    for (table, sec, row, col), by in cells.items():
        vals = [by.get(h) for h in heads]
        have = [v for v in vals if v is not None]
        print(f"| {table} | {sec} | {row} | {col} | "
              + " | ".join(fmt(v) if v is not None else "" for v in vals)
              + f" | {fmt(sum(have) / len(have))} | {fmt(max(have) - min(have))} |")

    dheads = columns(diffs)
    print("\n## Claim comparisons: a - b per (folder, seed)\n")
    print("| claim | section | a | b | " + " | ".join(f"{lab} {s}" for lab, s in dheads)
          + " | sign |")
    print("|" + "---|" * (4 + len(dheads) + 1))
    stable = 0
    for (claim, sec, a, b), by in diffs.items():
        vals = [by.get(h) for h in dheads]
        sign = sign_of(vals)
        stable += sign.startswith("stable")
        print(f"| {claim} | {sec} | {a} | {b} | "
              + " | ".join(f"{v:+.3f}" if v is not None else "" for v in vals) + f" | {sign} |")
    print(f"\n{stable} of {len(diffs)} comparisons keep their sign in every (folder, seed).")

    print("\n## Check verdicts per folder (over its seeds)\n")
    print("| claim | section | a | b | " + " | ".join(labels) + " | folders |")
    print("|" + "---|" * (4 + len(labels) + 1))
    counts = {"same": 0, "differs": 0, "contradicts": 0}
    for (claim, sec, a, b), by in verdicts.items():
        vals = [by.get(lab) for lab in labels]
        agree = agreement(vals)
        counts[agree] += 1
        print(f"| {claim} | {sec} | {a} | {b} | " + " | ".join(v or "" for v in vals)
              + f" | {agree} |")
    decided = sum(any(v in ("holds", "fails") for v in by.values()) for by in verdicts.values())
    print(f"\n{counts['same']} of {len(verdicts)} comparisons get the same verdict in every "
          f"folder; {decided} are decided (holds or fails) in at least one; "
          f"{counts['contradicts']} contradict (holds in one folder, fails in another).")


if __name__ == "__main__":
    main()
