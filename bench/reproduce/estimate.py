"""How long each job of the plan takes, from measured times, before running it.

Two sources, the first that has the job wins:

1. this output folder's own ``reproduce.json`` (an earlier or interrupted run of the plan on
   this machine): the seconds each finished job took;
2. the plan's ``[timings.<scale>]`` table: seconds per training (by the training entry's name,
   else its method) and per evaluation entry (else ``eval_run`` seconds per run it makes), measured
   by running the scale with `bench reproduce` on the machine the table names.

A job neither source has gets no estimate (and is counted as such); nothing is extrapolated
from another scale.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.reproduce.plan import Job, Plan


@dataclass(frozen=True)
class Estimate:
    seconds: float | None
    source: str            # "this folder" | "plan" | ""


@dataclass(frozen=True)
class Timings:
    measured: str                       # on what, how and when
    train: dict[str, float]             # training entry name or method -> seconds
    eval: dict[str, float]              # evaluation entry name -> seconds
    eval_run: float | None = None       # seconds per run of an entry not listed


def folder_seconds(out: str | Path) -> dict[str, float]:
    """Job id -> seconds of every job an earlier run in `out` finished ("ok")."""
    path = Path(out) / "reproduce.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {j["id"]: float(j["seconds"]) for j in data.get("jobs", [])
            if j.get("status") == "ok" and isinstance(j.get("seconds"), (int, float))}


def estimate(job: Job, plan: Plan, timings: Timings | None,
             measured: dict[str, float]) -> Estimate:
    if job.id in measured:
        return Estimate(measured[job.id], "this folder")
    if timings is None:
        return Estimate(None, "")
    if job.kind == "train":
        method = plan.train[job.entry].method
        for key in (job.entry, method):
            if key in timings.train:
                return Estimate(timings.train[key], "plan")
        return Estimate(None, "")
    if job.entry in timings.eval:
        return Estimate(timings.eval[job.entry], "plan")
    if timings.eval_run is not None:
        return Estimate(timings.eval_run * max(1, len(job.runs)), "plan")
    return Estimate(None, "")


def duration(seconds: float | None) -> str:
    """"45 s", "7 min", "2 h 05 min"."""
    if seconds is None:
        return "no measured rate"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def summary_line(jobs: list[Job], estimates: dict[str, Estimate],
                 timings: Timings | None) -> str:
    todo = [j for j in jobs if not j.done]
    known = [estimates[j.id].seconds for j in todo if estimates[j.id].seconds is not None]
    unknown = len(todo) - len(known)
    by_kind = {}
    for kind in ("train", "eval"):
        secs = [estimates[j.id].seconds for j in todo if j.kind == kind
                and estimates[j.id].seconds is not None]
        by_kind[kind] = sum(secs)  # type: ignore[arg-type]
    if not known:
        return (f"no estimate for the {len(todo)} jobs to run: the plan has no timings for this "
                "scale and this folder no earlier run (benchmarks/reproduce_timings.py makes "
                "them from a run's reproduce.json)")
    text = (f"estimated time of the {len(todo)} jobs to run: {duration(sum(known))} one after "
            f"another (training {duration(by_kind['train'])}, evaluation "
            f"{duration(by_kind['eval'])})")
    if unknown:
        text += f"; {unknown} job(s) without a measured rate not counted"
    sources = {estimates[j.id].source for j in todo} - {""}
    if "plan" in sources and timings is not None:
        text += f". Rates: the plan's timings, measured on {timings.measured}"
    if "this folder" in sources:
        text += ("." if "plan" not in sources else ";") + (
            " jobs an earlier run here finished: their own times")
    return text + ". Other machines differ; --jobs N runs N at once, each on fewer cores."


def parse_timings(where: str, d: Any, fail) -> Timings:
    """One `[timings.<scale>]` table (validated; `fail(where, msg)` makes the error)."""
    if not isinstance(d, dict):
        raise fail(where, "expected a table")
    unknown = set(d) - {"measured", "train", "eval", "eval_run"}
    if unknown:
        raise fail(where, f"unknown key {', '.join(sorted(unknown))} (known: eval, eval_run, "
                   "measured, train)")
    if not isinstance(d.get("measured"), str) or not d["measured"]:
        raise fail(where, "measured must say on what machine, how and when")

    def seconds(key: str) -> dict[str, float]:
        v = d.get(key, {})
        if not isinstance(v, dict) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0
                for x in v.values()):
            raise fail(where, f"{key} must be a table of name = seconds")
        return {k: float(x) for k, x in v.items()}

    run = d.get("eval_run")
    if run is not None and (not isinstance(run, (int, float)) or isinstance(run, bool)
                            or run < 0):
        raise fail(where, "eval_run must be seconds per run")
    return Timings(d["measured"], seconds("train"), seconds("eval"),
                   None if run is None else float(run))
