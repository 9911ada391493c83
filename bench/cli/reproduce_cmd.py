"""`bench reproduce`: the paper's plan (`bench/data/paper_plan.toml`) as `bench` commands.

``bench reproduce --dry-run`` lists every job of the plan at a scale (id, kind, the jobs it
needs, whether it is done, its estimated time and its command); ``--shell FILE`` writes the
commands as a script, one per job in dependency order, each under a comment naming the jobs it
needs (for a cluster's scheduler). Without either, it runs the jobs that are not done
(`bench.reproduce.runner`): ``--jobs N`` side by side, each after the jobs it needs; then
``OUT/reproduce.json`` and, unless ``--no-tables``, the tables, the report and the orderings
check. ``--check`` only checks the plan's claims on ``OUT/results``
(`bench.reproduce.check`).
"""

from __future__ import annotations

from pathlib import Path

import click

from bench.errors import BenchError, UsageError


@click.command("reproduce")
@click.option("--dry-run", is_flag=True, help="Print the jobs and their commands; run nothing.")
@click.option("--scale", default="tiny", show_default=True,
              help="micro (seconds per job), tiny (CPU, 3 seeds) or paper.")
@click.option("--data", type=click.Choice(["synthetic", "real"]), default=None,
              help="Synthetic twins or the real datasets (default: the scale's; paper: real).")
@click.option("--only", default=None, metavar="NAMES",
              help="Comma-separated tables / figures (e.g. table-2,extended-3): their "
                   "evaluations and the training they need.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Root of every output (default: reproduce/<scale>-<data>).")
@click.option("--shell", "shell", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write the commands to this shell script.")
@click.option("--plan", "plan_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Plan file (default: the package's paper_plan.toml).")
@click.option("--jobs", "workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Run up to N independent jobs side by side.")
@click.option("--seeds", "seed_list", default=None, metavar="N,N",
              help="Only these of the scale's training seeds (e.g. 1 to see every row once "
                   "before the others).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Train with N intra-op CPU threads (bench train --threads; default 2 on "
                   "CPU). The thread count changes what CPU training learns, so such a run "
                   "gets its own default --out (…-threads<N>).")
@click.option("--no-tables", is_flag=True, help="Do not write the tables, report and check "
              "after the jobs.")
@click.option("--check", "check", is_flag=True, help="Check the paper's orderings (the plan's "
              "claims) on what OUT/results holds; run nothing.")
def reproduce_cmd(dry_run: bool, scale: str, data: str | None, only: str | None,
                  out: Path | None, shell: Path | None, plan_file: Path | None,
                  workers: int, no_tables: bool, check: bool, seed_list: str | None,
                  threads: int | None) -> None:
    """Train and evaluate what fills the paper's tables and figures: run the plan's jobs that
    are not done (resuming what was cut off), or print them (--dry-run, --shell), or check the
    paper's orderings on the results (--check)."""
    from bench.reproduce.plan import default_out, load_plan, resolve

    plan = load_plan(plan_file)
    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    data = data or (plan.scales[scale].data if scale in plan.scales else None)
    root = out if out is not None else default_out(scale, data or "synthetic", threads)
    if check:
        check_results(plan, root, plan.expand(names) if names else None)
        return
    try:
        seeds = [int(x) for x in seed_list.split(",") if x.strip()] if seed_list else None
    except ValueError:
        raise UsageError(f"--seeds takes comma-separated integers, not '{seed_list}'") from None
    jobs = resolve(scale, data, only=names, out=root, plan=plan, seeds=seeds, threads=threads)
    selected = plan.expand(names) if names else None
    header = (f"bench reproduce: scale {scale}, {data} data, {len(jobs)} jobs "
              f"({sum(j.kind == 'train' for j in jobs)} train, "
              f"{sum(j.kind == 'eval' for j in jobs)} eval), {sum(j.done for j in jobs)} done; "
              f"outputs under {root}")
    pending = plan.pending_for(selected, scale)
    if dry_run:
        from bench.reproduce.estimate import duration, estimate, folder_seconds, summary_line
        from bench.reproduce.plan import conflict_reason, training_state

        timings = plan.timings.get(scale)
        measured = folder_seconds(root)
        est = {j.id: estimate(j, plan, timings, measured) for j in jobs}
        click.echo(header)
        click.echo(f"plan: {plan.path}")
        click.echo(summary_line(jobs, est, timings))
        for j in jobs:
            state = "done" if j.done else f"todo, ~{duration(est[j.id].seconds)}"
            if est[j.id].seconds is None and not j.done:
                state = "todo, no measured rate"
            if j.kind == "train" and training_state(j.out, j.command) == "conflict":
                state = f"conflict: {conflict_reason(j.out)}"
            click.echo(f"\n{j.id}  [{j.kind}, {state}]  needs: {', '.join(j.deps) or '-'}")
            click.echo(f"  {j.command}")
        if pending:
            click.echo("\nNot in the plan yet (their cells stay empty):")
            for p in pending:
                part = ""
                if p.rows or p.columns:
                    part = " (" + "; ".join(x for x in (
                        "rows " + ", ".join(p.rows) if p.rows else "",
                        "columns " + ", ".join(p.columns) if p.columns else "") if x) + ")"
                click.echo(f"  {p.table}{part}: {p.reason}")
        results = root / "results"
        click.echo(f"\nThen: bench table all --results-dir {results}; bench figure all "
                   f"--results-dir {results}; bench report --results-dir {results}")
    if shell is not None:
        write_shell(shell, jobs, header)
        click.echo(f"wrote {shell} ({len(jobs)} jobs)", err=dry_run)
    if dry_run or shell is not None:
        return
    run_jobs(jobs, root, workers, not no_tables, header, {
        "scale": scale, "data": data, "plan": str(plan.path),
        **({"threads": threads} if threads else {})})


def run_jobs(jobs, root: Path, workers: int, tables: bool, header: str, extra: dict) -> None:
    from bench.reproduce.runner import SUMMARY_FILE, run_plan

    click.echo(header)
    summary = run_plan(jobs, root, workers, tables,
                       log=lambda line: click.echo(line), extra=extra)
    counts = ", ".join(f"{summary.count(s)} {s}" for s in ("ok", "done", "failed", "skipped")
                       if summary.count(s))
    click.echo(f"\n{len(jobs)} jobs: {counts or 'none'} in {summary.seconds:.1f} s; summary "
               f"{root / SUMMARY_FILE}")
    for name, where in summary.outputs.items():
        if where.startswith("error: "):
            click.echo(f"{name} not written: {where[7:]}", err=True)
        else:
            click.echo(f"{name}: {where}")
    if summary.failed:
        ids = ", ".join(o.job.id for o in summary.failed)
        raise BenchError(f"{len(summary.failed)} job(s) failed: {ids} (their logs are under "
                         f"{root / 'logs'})")


def check_results(plan, root: Path, only: set[str] | None) -> None:
    """Print the orderings check of ROOT/results; write ROOT/check.md and ROOT/check.json."""
    import json

    from bench.errors import UsageError
    from bench.reproduce.check import check_claims, render_check
    from bench.reproduce.runner import CHECK_FILE
    from bench.store import atomic_write_bytes

    results = root / "results"
    if not results.is_dir():
        raise UsageError(f"no results under {results}: run bench reproduce (same --scale, "
                         "--data, --out) first")
    claims = check_claims(plan, results, sorted(only) if only else None)
    text = render_check(claims, synthetic=synthetic_results(results))
    atomic_write_bytes(root / CHECK_FILE, (text + "\n").encode("utf-8"))
    atomic_write_bytes(root / "check.json", json.dumps(
        {"results": str(results), "claims": [c.record() for c in claims]}, indent=2,
        allow_nan=False).encode("utf-8"))
    click.echo(text)


def synthetic_results(results: Path) -> list[str]:
    """The synthetic datasets the results were measured on (empty: real data only)."""
    from bench.report.store_view import StoreView

    view = StoreView(results)
    runs = view.runs + [r for _, v in view.seed_views for r in v.runs]
    return sorted({r.dataset for r in runs if r.synthetic})


def write_shell(path: Path, jobs, header: str) -> None:
    """One command per job in dependency order; each under a comment with its id and the jobs
    it needs. Jobs already done are kept as comments."""
    from bench.store import atomic_write_bytes

    lines = ["#!/usr/bin/env bash",
             f"# {header}",
             "# Written by `bench reproduce --shell`: one command per job, in an order that runs",
             "# each job after the jobs it needs (named in its comment), so the lines can also be",
             "# submitted to a scheduler with those dependencies. Run it from the folder it was",
             "# written from (relative paths start there), or write it with an absolute --out.",
             "set -euo pipefail", ""]
    for j in jobs:
        lines.append(f"# {j.id} ({j.kind}); needs: {', '.join(j.deps) or 'nothing'}")
        lines.append(f"# done already: {j.command}" if j.done else j.command)
        lines.append("")
    atomic_write_bytes(path, "\n".join(lines).encode("utf-8"))
    path.chmod(0o755)
