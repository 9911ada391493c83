"""`bench reproduce` runs its plan: every job once, done jobs skipped (no subprocess), a failed
job reported with its dependents skipped while the rest go on, `--jobs 2` making the same files
as `--jobs 1`, a cut-off training resumed with `--resume`, and `reproduce.json` / `tables.md`
written at the end. A tiny plan on `shapes` keeps each job to seconds."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from reproduce_helpers import bench_cli

from bench.reproduce import runner as runner_mod
from bench.reproduce.plan import (
    CHECKPOINT_FILE,
    FINISHED_FILE,
    Job,
    load_plan,
    resolve,
    training_state,
)
from bench.reproduce.runner import run_plan

PLAN = """\
version = 1

[scales.micro]
preset = "tiny"
seeds = [1]
data = "synthetic"
synthetic_args = ["n=40"]
train_args = ["--size", "64", "--epochs", "1", "--block", "2", "--threads", "1"]
eval_args = ["--bootstrap", "20"]

[[train]]
method = "recontrast"
dataset = "shapes"

[[eval]]
name = "trained"
fills = ["extended-2"]
methods = ["recontrast"]
datasets = ["shapes"]
task = "localization"
[eval.checkpoints]
recontrast = "recontrast-default"

[[eval]]
name = "baselines"
fills = ["table-2"]
methods = ["center", "random"]
datasets = ["shapes"]
task = "localization"
"""


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.cli.main", *args], capture_output=True,
                          text=True)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _metrics(results: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text())["metrics"]
            for p in results.glob("*/summary.json")}


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """One `bench reproduce --jobs 1` of the tiny plan, as it left its folder."""
    root = tmp_path_factory.mktemp("reproduce")
    plan = root / "plan.toml"
    plan.write_text(PLAN)
    out = root / "out"
    proc = _cli("reproduce", "--plan", str(plan), "--scale", "micro", "--out", str(out),
                "--jobs", "1")
    assert proc.returncode == 0, proc.stderr
    return {"plan": plan, "out": out, "stdout": proc.stdout,
            "summary": json.loads((out / "reproduce.json").read_text()),
            "tables": (out / "tables.md").read_text(), "files": _files(out / "results"),
            "train": _files(out / "train"), "metrics": _metrics(out / "results")}


def test_every_job_runs_once_and_the_summary_and_tables_are_written(first):
    jobs = resolve("micro", out=first["out"], plan=load_plan(first["plan"]), check_done=False)
    summary = first["summary"]
    assert [j["id"] for j in summary["jobs"]] == [j.id for j in jobs]
    for rec, job in zip(summary["jobs"], jobs):
        assert rec["status"] == "ok" and rec["kind"] == job.kind
        assert rec["command"] == job.command and rec["seconds"] > 0
        assert Path(rec["log"]).is_file()
        assert f"{job.id}: start" in first["stdout"] and f"{job.id}: ok in" in first["stdout"]
    assert summary["counts"]["ok"] == 3 and summary["scale"] == "micro"
    assert len(first["metrics"]) == 3  # recontrast, center, random on shapes
    assert "table-1" in first["tables"] and "table-2" in first["tables"]
    assert FINISHED_FILE in " ".join(first["train"])


def test_a_second_run_skips_every_done_job_without_a_subprocess(first, monkeypatch, capsys):
    def refuse(*a, **k):
        raise AssertionError(f"a subprocess was started: {a}")

    monkeypatch.setattr(runner_mod.subprocess, "Popen", refuse)
    monkeypatch.setattr(runner_mod.subprocess, "run", refuse)
    code, out, err = bench_cli(capsys, "reproduce", "--plan", str(first["plan"]), "--scale",
                            "micro", "--out", str(first["out"]), "--no-tables")
    assert code == 0, err
    assert "3 done" in out.splitlines()[0]
    summary = json.loads((first["out"] / "reproduce.json").read_text())
    assert [j["status"] for j in summary["jobs"]] == ["done"] * 3


def test_two_jobs_side_by_side_make_the_same_files_as_one(first, tmp_path):
    out = tmp_path / "out"
    proc = _cli("reproduce", "--plan", str(first["plan"]), "--scale", "micro", "--out",
                str(out), "--jobs", "2", "--no-tables")
    assert proc.returncode == 0, proc.stderr
    assert _files(out / "results") == first["files"]
    assert _files(out / "train") == first["train"]
    assert _metrics(out / "results") == first["metrics"]
    assert not (out / "tables.md").exists()
    summary = json.loads((out / "reproduce.json").read_text())
    assert [j["status"] for j in summary["jobs"]] == ["ok"] * 3


def test_a_failed_job_is_reported_its_dependents_skipped_and_the_rest_go_on(
        tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    results = out / "results"
    bad = Job("eval/bad", "eval", ("bench", "run", "--methods", "center", "--datasets",
                                   "no-such-dataset", "--results-dir", str(results)), results)
    after = Job("eval/after", "eval", ("bench", "list", "methods"), results, ("eval/bad",))
    later = Job("eval/later", "eval", ("bench", "list", "methods"), results, ("eval/after",))
    free = Job("eval/free", "eval", ("bench", "list", "datasets"), results)
    monkeypatch.setattr("bench.reproduce.plan.resolve", lambda *a, **k: [bad, after, later, free])
    code, text, err = bench_cli(capsys, "reproduce", "--out", str(out), "--jobs", "2",
                             "--no-tables")
    assert code == 1
    assert "1 job(s) failed: eval/bad" in err
    summary = json.loads((out / "reproduce.json").read_text())
    recs = {j["id"]: j for j in summary["jobs"]}
    assert [j["id"] for j in summary["jobs"]] == ["eval/bad", "eval/after", "eval/later",
                                                  "eval/free"]
    assert recs["eval/bad"]["status"] == "failed" and recs["eval/bad"]["exit_code"] != 0
    assert "no-such-dataset" in recs["eval/bad"]["stderr_tail"]
    log = Path(recs["eval/bad"]["log"])
    assert log == out / "logs" / "eval" / "bad.log" and "no-such-dataset" in log.read_text()
    assert "exit code" in text and str(log) in text
    assert recs["eval/after"]["status"] == "skipped"
    assert "eval/bad" in recs["eval/after"]["reason"]
    assert recs["eval/later"]["status"] == "skipped"
    assert recs["eval/free"]["status"] == "ok"
    assert "shapes" in (out / "logs" / "eval" / "free.log").read_text()


def test_a_cut_off_training_is_resumed(first, tmp_path):
    folder = tmp_path / "train"
    shutil.copytree(first["out"] / "train" / "recontrast-default-s1", folder)
    argv = ("bench", "train", "recontrast", "--dataset", "shapes", "--dataset-arg", "n=40",
            "--preset", "tiny", "--seed", "1", "--size", "64", "--epochs", "2", "--block", "2",
            "--threads", "1", "--out", str(folder), "--quiet")
    job = Job("train/recontrast-default-s1", "train", argv, folder)
    # one epoch of two: its marker has another command
    assert training_state(job.out, job.command) == "resume"
    (folder / FINISHED_FILE).unlink()
    assert training_state(job.out, job.command) == "resume"  # last.pt and no marker
    summary = run_plan([job], tmp_path / "out", tables=False, log=lambda line: None)
    (o,) = summary.outcomes
    assert o.status == "ok" and o.resumed and o.argv == (*argv, "--resume")
    assert "resumed from" in o.log.read_text()
    history = json.loads((folder / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    assert training_state(job.out, job.command) == "done"
    rec = json.loads((tmp_path / "out" / "reproduce.json").read_text())["jobs"][0]
    assert rec["resumed"] and rec["command"].endswith("--resume")


def test_a_folder_trained_with_another_command_is_not_passed_off_as_this_one(first, tmp_path):
    folder = tmp_path / "moved" / "train"  # a moved folder: --out differs, nothing else
    shutil.copytree(first["out"] / "train" / "recontrast-default-s1", folder)
    argv = tuple(json.loads((folder / FINISHED_FILE).read_text())["command"].split())
    at = argv.index("--out")
    argv = (*argv[:at + 1], str(folder), *argv[at + 2:])
    assert training_state(folder, shlex.join(argv)) == "resume"
    longer = tuple(x if x != "1" or argv[i - 1] != "--epochs" else "3"
                   for i, x in enumerate(argv))
    assert training_state(folder, shlex.join(longer)) == "resume"
    threads = tuple(x if argv[i - 1] != "--threads" else "2" for i, x in enumerate(argv))
    seed = tuple(x if argv[i - 1] != "--seed" else "7" for i, x in enumerate(argv))
    for other in (threads, seed):
        assert training_state(folder, shlex.join(other)) == "conflict"
    job = Job("train/recontrast-default-s1", "train", threads, folder)
    after = Job("eval/trained", "eval", ("bench", "list", "methods"), tmp_path / "r",
                deps=(job.id,))
    summary = run_plan([job, after], tmp_path / "out", tables=False, log=lambda line: None)
    o, skipped = summary.outcomes
    assert o.status == "failed" and "holds a training the runner finished with another " \
        "command" in o.reason and str(folder) in o.reason
    assert skipped.status == "skipped" and job.id in skipped.reason
    assert (folder / CHECKPOINT_FILE).is_file()  # nothing was touched


def test_training_state_without_the_runner(tmp_path):
    job = Job("train/x", "train", ("bench", "train", "x"), tmp_path / "x")
    assert training_state(job.out, job.command) == "todo"
    job.out.mkdir()
    (job.out / CHECKPOINT_FILE).write_bytes(b"")
    # trained elsewhere, nothing to resume from
    assert training_state(job.out, job.command) == "done"
    (job.out / "last.pt").write_bytes(b"")
    assert training_state(job.out, job.command) == "resume"


def test_a_stopped_run_writes_the_summary_with_how_long_the_cut_off_job_ran(tmp_path,
                                                                            monkeypatch):
    """Ctrl-C (or `timeout -s INT` on a GPU lease) during the second job: the first is ok, the
    running one is interrupted with the seconds it had run, the one not started with 0."""
    monkeypatch.setattr(runner_mod, "python_argv",
                        lambda argv: [sys.executable, "-c", argv[1]])
    quick = Job("eval/quick", "eval", ("bench", "pass"), tmp_path / "r")
    slow = Job("eval/slow", "eval", ("bench", "import time; time.sleep(60)"), tmp_path / "r")
    never = Job("eval/never", "eval", ("bench", "pass"), tmp_path / "r", ("eval/slow",))

    def log(line: str) -> None:
        if line.startswith("[2/3] eval/slow: start"):  # the user stops the run 1 s later
            threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()

    t0 = time.time()
    with pytest.raises(KeyboardInterrupt):
        run_plan([quick, slow, never], tmp_path / "out", tables=False, log=log)
    assert time.time() - t0 < 30  # the sleeping child was stopped, not waited for
    recs = {j["id"]: j for j in
            json.loads((tmp_path / "out" / "reproduce.json").read_text())["jobs"]}
    assert recs["eval/quick"]["status"] == "ok"
    assert recs["eval/slow"]["status"] == "interrupted"
    assert 1.0 <= recs["eval/slow"]["seconds"] < 30
    assert recs["eval/never"]["status"] == "interrupted"
    assert recs["eval/never"]["seconds"] == 0.0
