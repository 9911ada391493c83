"""Run the plan's jobs (`bench reproduce` without `--dry-run`).

Each job is its `bench` command line run as ``python -m bench.cli.main ARGS`` (the same
interpreter), its stdout and stderr kept in ``OUT/logs/<job-id>.log``. Jobs run in the plan's
order, ``jobs`` of them side by side; a job starts once every job it needs has succeeded (or was
done already). A job already done is skipped; a failed job is reported (exit code, the last
lines of its stderr, its log) and the rest go on, except the jobs that need it, which are
skipped because of it.

Resume: a training job is finished when the runner wrote ``reproduce-done.json`` in its folder
after the same command succeeded, or when the folder holds a checkpoint and nothing to resume
from (no ``last.pt``: trained some other way). Otherwise, when the folder holds ``last.pt`` (a run
cut off, or one finished by hand or with another length), the job runs with ``--resume`` and the
training loop continues after the last epoch it saved (a finished one runs no further epoch). A
folder where the runner finished a command that differs in more than its length (another seed,
``--threads``, preset...) fails the job with that reason: resuming would pass that model off as
this command's.
An evaluation resumes by itself: `bench run` keeps what its chunked store already holds.

At the end ``OUT/reproduce.json`` lists every job (id, kind, status, seconds, command) and, unless
told not to, the outputs are written from ``OUT/results`` (each training seed's folder included):
``bench table all`` to ``OUT/tables.md``, ``bench report`` (every table and figure, one HTML page
and its Markdown twin) to ``OUT/report/``, and the orderings check to ``OUT/check.md``.
"""

from __future__ import annotations

import concurrent.futures as cf
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.reproduce.plan import FINISHED_FILE, Job, conflict_reason, training_state
from bench.store import atomic_write_bytes, atomic_write_json

SUMMARY_FILE = "reproduce.json"
TABLES_FILE = "tables.md"
CHECK_FILE = "check.md"
REPORT_DIR = "report"
TAIL_LINES = 15

# statuses: "done" (done before, not run), "ok", "failed", "skipped" (a job it needs failed or
# was skipped), "interrupted" (not finished when the run was stopped; its seconds are how long
# it had run, 0 for one that had not started)


@dataclass
class Outcome:
    job: Job
    status: str
    argv: tuple[str, ...]
    seconds: float = 0.0
    exit_code: int | None = None
    resumed: bool = False
    log: Path | None = None
    tail: str = ""
    reason: str = ""

    def record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {"id": self.job.id, "kind": self.job.kind, "status": self.status,
                               "seconds": round(self.seconds, 3),
                               "command": shlex.join(self.argv), "deps": list(self.job.deps),
                               "out": str(self.job.out)}
        if self.resumed:
            rec["resumed"] = True
        if self.exit_code is not None:
            rec["exit_code"] = self.exit_code
        if self.log is not None:
            rec["log"] = str(self.log)
        if self.tail:
            rec["stderr_tail"] = self.tail
        if self.reason:
            rec["reason"] = self.reason
        return rec


@dataclass
class RunSummary:
    outcomes: list[Outcome]
    seconds: float
    outputs: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def job_argv(job: Job) -> tuple[tuple[str, ...], str]:
    """The command to run now and the job's state: "done" or "conflict" (`training_state`;
    nothing to run), "resume" (``--resume`` added to a training that can continue) or
    "todo"."""
    if job.kind == "train":
        state = training_state(job.out, job.command)
        if state in ("done", "conflict"):
            return (), state
        if state == "resume" and "--resume" not in job.argv:
            return (*job.argv, "--resume"), state
        return job.argv, state
    return ((), "done") if job.done else (job.argv, "todo")


def python_argv(argv: tuple[str, ...]) -> list[str]:
    """``bench ARGS`` as this interpreter's ``-m bench.cli.main ARGS``."""
    args = argv[1:] if argv and argv[0] == "bench" else argv
    return [sys.executable, "-m", "bench.cli.main", *args]


def log_path(out: Path, job: Job) -> Path:
    return out / "logs" / f"{job.id}.log"


class Runner:
    def __init__(self, out: Path, jobs: int = 1, log: Callable[[str], None] = print):
        self.out = Path(out)
        self.workers = max(1, int(jobs))
        self.log = log
        self._procs: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._outcomes: list[Outcome] = []

    # one job ----------------------------------------------------------------------------------
    def execute(self, job: Job, argv: tuple[str, ...], resumed: bool) -> Outcome:
        path = log_path(self.out, job)
        path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(f"$ {shlex.join(argv)}\n")
            fh.flush()
            proc = subprocess.Popen(python_argv(argv), stdout=fh, stderr=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL, text=True, errors="replace")
            with self._lock:
                self._procs.add(proc)
            try:
                _, err = proc.communicate()
            finally:
                with self._lock:
                    self._procs.discard(proc)
            fh.write(f"--- stderr ---\n{err}" if err else "")
        seconds = time.time() - t0
        code = proc.returncode
        if code == 0:
            if job.kind == "train":
                atomic_write_json(job.out / FINISHED_FILE, {
                    "command": job.command, "ran": shlex.join(argv), "seconds": seconds,
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
            return Outcome(job, "ok", argv, seconds, code, resumed, path)
        tail = "\n".join((err or "").rstrip().splitlines()[-TAIL_LINES:])
        return Outcome(job, "failed", argv, seconds, code, resumed, path, tail)

    def stop(self) -> None:
        with self._lock:
            procs = list(self._procs)
        for p in procs:
            if p.poll() is None:
                p.terminate()

    # the plan ---------------------------------------------------------------------------------
    def run(self, jobs: list[Job]) -> list[Outcome]:
        ids = {j.id for j in jobs}
        n = len(jobs)
        index = {j.id: i + 1 for i, j in enumerate(jobs)}
        outcomes: dict[str, Outcome] = {}
        waiting = list(jobs)
        running: dict[cf.Future, Job] = {}
        started: dict[str, float] = {}  # job id -> when it was handed to the pool

        def label(j: Job) -> str:
            return f"[{index[j.id]}/{n}] {j.id}"

        def settle() -> None:
            """Mark done and blocked jobs without running them (plan order)."""
            changed = True
            while changed:
                changed = False
                for j in list(waiting):
                    bad = [d for d in j.deps if d in outcomes
                           and outcomes[d].status in ("failed", "skipped")]
                    if bad:
                        waiting.remove(j)
                        why = f"needs {bad[0]}, which {outcomes[bad[0]].status}"
                        outcomes[j.id] = Outcome(j, "skipped", j.argv, reason=why)
                        self.log(f"{label(j)}: skipped ({why})")
                        changed = True

        with cf.ThreadPoolExecutor(max_workers=self.workers) as pool:
            try:
                while waiting or running:
                    before = len(outcomes)
                    settle()
                    for j in list(waiting):
                        if len(running) >= self.workers:
                            break
                        if any(d in ids and (d not in outcomes
                                             or outcomes[d].status not in ("ok", "done"))
                               for d in j.deps):
                            continue
                        waiting.remove(j)
                        argv, state = job_argv(j)
                        resumed = state == "resume"
                        if state == "conflict":
                            why = conflict_reason(j.out)
                            outcomes[j.id] = Outcome(j, "failed", j.argv, reason=why)
                            self.log(f"{label(j)}: failed ({why})")
                            continue
                        if not argv:
                            outcomes[j.id] = Outcome(j, "done", j.argv)
                            self.log(f"{label(j)}: done already, skipped")
                            continue
                        self.log(f"{label(j)}: start{' (resuming)' if resumed else ''}: "
                                 f"{shlex.join(argv)}")
                        started[j.id] = time.time()
                        running[pool.submit(self.execute, j, argv, resumed)] = j
                    if not running:
                        if waiting and len(outcomes) == before:  # nothing can start (a cycle)
                            for j in waiting:
                                outcomes[j.id] = Outcome(j, "skipped", j.argv,
                                                         reason="its dependencies never ran")
                            waiting.clear()
                        continue
                    finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                    for fut in finished:
                        j = running.pop(fut)
                        o = fut.result()
                        outcomes[j.id] = o
                        line = f"{label(j)}: {o.status} in {o.seconds:.1f} s"
                        if o.status == "failed":
                            line += f" (exit code {o.exit_code}; log {o.log})"
                            if o.tail:
                                line += "\n    " + "\n    ".join(o.tail.splitlines())
                        self.log(line)
            except BaseException:
                self.stop()
                for fut in running:
                    fut.cancel()
                raise
            finally:
                # a job cut off while running keeps the seconds it ran: on a budget (a GPU
                # lease) that is what says how long the job needs
                now = time.time()
                for j in jobs:
                    if j.id not in outcomes:
                        ran = now - started[j.id] if j.id in started else 0.0
                        outcomes[j.id] = Outcome(j, "interrupted", j.argv, ran)
                self._outcomes = [outcomes[j.id] for j in jobs]
        return self._outcomes


def write_summary(out: Path, outcomes: list[Outcome], seconds: float,
                  extra: dict[str, Any] | None = None) -> Path:
    statuses = ("ok", "done", "failed", "skipped", "interrupted")
    counts = {s: sum(o.status == s for o in outcomes) for s in statuses}
    path = Path(out) / SUMMARY_FILE
    atomic_write_json(path, {**(extra or {}), "seconds": round(seconds, 3), "counts": counts,
                             "jobs": [o.record() for o in outcomes]})
    return path


def _bench(argv: tuple[str, ...]) -> subprocess.CompletedProcess:
    return subprocess.run(python_argv(argv), capture_output=True, text=True, errors="replace",
                          stdin=subprocess.DEVNULL)


def _error(proc: subprocess.CompletedProcess) -> str:
    return (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]


def write_tables(out: Path) -> tuple[Path | None, str]:
    """``bench table all --results-dir OUT/results`` into OUT/tables.md; (path, error)."""
    proc = _bench(("bench", "table", "all", "--results-dir", str(Path(out) / "results")))
    if proc.returncode != 0:
        return None, _error(proc)
    path = Path(out) / TABLES_FILE
    atomic_write_bytes(path, proc.stdout.encode("utf-8"))
    return path, ""


def write_outputs(out: Path, plan_file: str | None = None) -> dict[str, str]:
    """Tables, the report (tables and figures) and the orderings check of OUT/results; what
    was written (name -> path) or why not (name -> "error: ...")."""
    out = Path(out)
    done: dict[str, str] = {}
    path, err = write_tables(out)
    done["tables"] = str(path) if path else f"error: {err}"
    proc = _bench(("bench", "report", "--results-dir", str(out / "results"),
                   "--out", str(out / REPORT_DIR)))
    done["report"] = (str(out / REPORT_DIR / "report.html") if proc.returncode == 0
                      else f"error: {_error(proc)}")
    argv = ("bench", "reproduce", "--check", "--out", str(out))
    proc = _bench(argv + (("--plan", plan_file) if plan_file else ()))
    done["check"] = (str(out / CHECK_FILE) if proc.returncode == 0
                     else f"error: {_error(proc)}")
    return done


def run_plan(jobs: list[Job], out: Path, workers: int = 1, tables: bool = True,
             log: Callable[[str], None] = print,
             extra: dict[str, Any] | None = None) -> RunSummary:
    """Run `jobs` (resolved with `out` as their root), then write the summary and the tables.
    The summary is written even when the run is interrupted."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    runner = Runner(out, workers, log)
    try:
        outcomes = runner.run(jobs)
    finally:
        outcomes = runner._outcomes
        if outcomes:
            write_summary(out, outcomes, time.time() - t0, extra)
    summary = RunSummary(outcomes, time.time() - t0, extra=extra or {})
    if tables:
        summary.outputs = write_outputs(out, (extra or {}).get("plan"))
    return summary
