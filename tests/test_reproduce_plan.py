"""`bench reproduce`'s plan: it loads and validates, every measurable table cell is filled by one
of its jobs (or listed as pending), jobs resolve in dependency order with their done state, and
the dry run / shell script show the commands."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import click
import pytest
from reproduce_helpers import MINI, bench_cli

from bench.cli.main import cli
from bench.errors import UsageError
from bench.report import specs
from bench.reproduce.plan import (
    CHECKPOINT_FILE,
    FINISHED_FILE,
    PlanError,
    coverage,
    default_out,
    load_plan,
    resolve,
)
from bench.store import RunDir

# -- (a) loading and validation ---------------------------------------------------------------

def test_the_package_plan_loads_with_its_scales_and_pending_tables():
    plan = load_plan()
    assert list(plan.scales) == ["micro", "tiny", "paper"]
    assert len(plan.scales["micro"].seeds) == 1
    assert len(plan.scales["tiny"].seeds) == 3
    assert plan.scales["paper"].data == "real" and plan.scales["paper"].preset == "paper"
    trainable = {"afloc", "gloria", "convirt", "biovil", "chexzero", "medklip", "classifier",
                 "rdpp", "recontrast"}
    assert {t.method for t in plan.train.values()} == trainable
    levels = {t.tag for t in plan.train.values() if t.method == "afloc"
              and not (t.tag or "").startswith("text=")}
    assert len(levels) == 7  # Extended Data Table 3: six subsets, and None for all three
    # text encoders: llava-med at every scale (a 7B language model: its published value only),
    # the harness's second text encoder at the paper scale (no from-scratch size there)
    assert {p.table for p in plan.pending} == {"extended-7"}
    assert {(p.rows, p.columns, p.scales) for p in plan.pending} == {
        (("llava-med",), (), ()), (("second-text",), (), ("paper",))}
    harness = {r.id for r in specs.TABLES["extended-7"].rows if r.harness}
    assert harness == {"second-text"}
    assert plan.train["afloc-text-8x64"].scales == ("micro", "tiny")
    assert all(p.reason for p in plan.pending)


def test_a_minimal_plan_loads_and_resolves(tmp_path):
    path = tmp_path / "plan.toml"
    path.write_text(MINI)
    jobs = resolve("micro", plan=load_plan(path), out=tmp_path / "out")
    assert [j.id for j in jobs] == ["train/afloc-default-s1", "eval/ms-cxr-s1"]
    run = jobs[1].argv
    assert run[:2] == ("bench", "run") and "--prompt" in run and "simple" in run
    assert "synthetic-ms-cxr" in run


@pytest.mark.parametrize("old, new, message", [
    ('methods = ["afloc"]', 'methods = ["afloc", "nosuch"]',
     "[[eval]] 'ms-cxr': unknown method 'nosuch'"),
    ('afloc = "afloc-default"', 'afloc = "afloc-word"',
     "[[eval]] 'ms-cxr': checkpoints.afloc names 'afloc-word', not a [[train]] entry"),
    ('methods = ["afloc"]', 'methods = ["afloc", "gloria"]',
     "[[eval]] 'ms-cxr': method 'gloria' needs a trained model"),
    ('method = "afloc"\ndataset', 'method = "center"\ndataset',
     "[[train]] 'center': 'center' is not a trainable method"),
    ('datasets = ["ms-cxr"]', 'dataset = ["ms-cxr"]', "[[eval]] 'ms-cxr': missing datasets"),
    ('task = "localization"', 'task = "segmentation"',
     "[[eval]] 'ms-cxr': task 'segmentation' is not one of"),
    ('fills = ["table-1"]', 'fills = ["table-9"]', "[[eval]] 'ms-cxr': fills names 'table-9'"),
    ('seeds = [1]', 'seeds = []', "[scales.micro]: seeds must be"),
    ('dataset = "mimic-cxr"', 'dataset = "nosuch"', "[[train]] 'afloc-default': unknown dataset"),
    ('version = 1', 'version = ', "not valid TOML"),
    ('[[eval]]', '[[train]]\nmethod = "afloc"\ndataset = "mimic-cxr"\n\n[[eval]]',
     "[[train]] 'afloc-default': defined twice"),
    ('[eval.checkpoints]', '[[pending]]\ntable = "table-2"\nrows = ["nosuch"]\nreason = "x"\n\n'
     '[eval.checkpoints]', "[[pending]] 'table-2': 'nosuch' is not a row of table-2"),
    ('[eval.checkpoints]', '[[claim]]\nid = "c"\nsentence = "s"\nwhere = "w"\n'
     'table = "table-2"\na = ["afloc"]\nb = ["nosuch"]\n\n[eval.checkpoints]',
     "[[claim]] 'c': 'nosuch' is not a row of table-2"),
    ('[eval.checkpoints]', '[[claim]]\nid = "c"\nsentence = "s"\nwhere = "w"\n'
     'table = "table-2"\na = ["afloc@mean"]\nb = ["gloria"]\n\n[eval.checkpoints]',
     "[[claim]] 'c': 'mean' is not a measured column of table-2"),
])
def test_a_malformed_plan_is_one_line_naming_the_file_and_the_entry(tmp_path, old, new, message):
    assert old in MINI
    path = tmp_path / "bad.toml"
    path.write_text(MINI.replace(old, new, 1))
    with pytest.raises(PlanError) as err:
        load_plan(path)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: ")
    assert message in text


def test_an_entry_with_scales_exists_at_those_scales_only(tmp_path):
    text = MINI.replace('[[train]]', '[scales.tiny]\npreset = "tiny"\nseeds = [1, 2]\n'
                        'data = "synthetic"\n\n[[train]]', 1)
    text += ('\n[[train]]\nmethod = "afloc"\nvariant = "wide"\ndataset = "mimic-cxr"\n'
             'scales = ["tiny"]\n\n[[eval]]\nname = "wide"\nfills = ["table-1"]\n'
             'methods = ["afloc"]\ndatasets = ["ms-cxr"]\ntask = "localization"\n'
             'scales = ["tiny"]\n[eval.checkpoints]\nafloc = "afloc-wide"\n')
    path = tmp_path / "plan.toml"
    path.write_text(text)
    plan = load_plan(path)
    assert [j.id for j in resolve("micro", plan=plan, out=tmp_path)] == [
        "train/afloc-default-s1", "eval/ms-cxr-s1"]
    assert [j.id for j in resolve("tiny", plan=plan, out=tmp_path)] == [
        "train/afloc-default-s1", "train/afloc-wide-s1", "eval/ms-cxr-s1", "eval/wide-s1",
        "train/afloc-default-s2", "train/afloc-wide-s2", "eval/ms-cxr-s2", "eval/wide-s2"]
    # an evaluation at every scale cannot read a model trained at one scale only
    path.write_text(text.replace('scales = ["tiny"]\n[eval.checkpoints]', '[eval.checkpoints]'))
    with pytest.raises(PlanError, match="checkpoint 'afloc-wide' is not trained at scale micro"):
        load_plan(path)
    path.write_text(text.replace('scales = ["tiny"]\n\n[[eval]]', 'scales = ["huge"]\n\n[[eval]]'))
    with pytest.raises(PlanError, match="scales names 'huge', not a scale of the plan"):
        load_plan(path)


def test_a_malformed_plan_through_the_cli_is_one_line(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(MINI.replace('methods = ["afloc"]', 'methods = ["afloc", "nosuch"]'))
    code, out, err = bench_cli(capsys, "reproduce", "--dry-run", "--plan", str(path))
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "unknown method 'nosuch'" in err and str(path) in err


# -- (b) coverage of the table specs ----------------------------------------------------------

@pytest.mark.parametrize("scale", ["micro", "tiny", "paper"])
def test_every_measurable_cell_of_every_table_is_filled_by_a_job_of_each_scale(scale):
    cov = coverage(load_plan(), scale)
    assert not cov.uncovered, "cells no job fills:\n" + "\n".join(map(str, cov.uncovered))
    assert not cov.idle_claims, f"entries name tables they fill no cell of: {cov.idle_claims}"
    assert not cov.stale_pending, f"pending entries a job now fills: {cov.stale_pending}"


def test_coverage_runs_over_what_bench_table_all_renders():
    from bench.cli.report_cmd import _pick

    assert _pick("all", specs.TABLES, "table") == list(specs.TABLES)


def _cells(cov) -> set[tuple[str, str, str]]:
    return {(c.table, c.row, c.column) for c in cov.uncovered}


def test_coverage_catches_a_row_no_job_fills(monkeypatch):
    spec = specs.TABLES["table-2"]
    monkeypatch.setitem(specs.TABLES, "table-2",
                        replace(spec, rows=spec.rows + (specs.method_row("oracle"),)))
    assert _cells(coverage(load_plan(), "tiny")) == {("table-2", "oracle", "rsna"),
                                                     ("table-2", "oracle", "siim")}


def test_coverage_catches_a_column_and_a_table_no_job_fills(monkeypatch):
    spec = specs.TABLES["table-2"]
    monkeypatch.setitem(specs.TABLES, "table-2",
                        replace(spec, columns=spec.columns + (specs.dataset_col("chexlocalize"),)))
    monkeypatch.setitem(specs.TABLES, "table-x", replace(spec, name="table-x"))
    cells = _cells(coverage(load_plan(), "tiny"))
    # the centre prior cannot classify: its cells are not measurable, not uncovered
    assert {("table-2", r.id, "chexlocalize") for r in spec.rows if r.id != "center"} == {
        (t, r, c) for t, r, c in cells if t == "table-2"}
    # a job fills a table's cells only when its entry names the table in `fills`
    assert {(r.id, c.id) for r in spec.rows if r.id != "center" for c in spec.columns} <= {
        (r, c) for t, r, c in cells if t == "table-x"}


def test_pending_is_the_only_exemption():
    plan = load_plan()
    assert not _cells(coverage(plan, "tiny"))
    bare = replace(plan, pending=tuple(p for p in plan.pending if p.table != "extended-7"))
    cells = _cells(coverage(bare, "tiny"))
    assert cells and {t for t, _, _ in cells} == {"extended-7"}
    none = _cells(coverage(replace(plan, pending=()), "tiny"))
    assert {"extended-7"} == {t for t, _, _ in none}


def test_every_claim_of_the_plan_compares_cells_the_plan_fills():
    """A claim about cells no job fills could never be checked: with every table cell filled
    or pending (the coverage test), no claim may compare a pending cell."""
    from bench.reproduce.check import comparisons_of

    plan = load_plan()
    assert len(plan.claims) >= 10
    for claim in plan.claims:
        assert claim.sentence and claim.where
        comps = comparisons_of(claim)
        assert comps, claim.id
        pending = [p for p in plan.pending if p.at("tiny")]
        for _, ra, ca, rb, cb in comps:
            for row, col in ((ra, ca), (rb, cb)):
                assert not any(p.covers(claim.table, row.id, col.id) for p in pending), (
                    f"{claim.id}: {claim.table} {row.id}@{col.id} is pending")


def test_every_figure_is_planned():
    plan = load_plan()
    named = set(plan.figure_tables) | {f for e in plan.evals for f in e.fills}
    assert set(specs.FIGURES) <= named


# -- (c) resolving: order, seeds, outputs, done state -----------------------------------------

@pytest.mark.parametrize("scale", ["micro", "tiny", "paper"])
@pytest.mark.parametrize("data", ["synthetic", "real"])
def test_jobs_come_after_the_jobs_they_need(tmp_path, scale, data):
    jobs = resolve(scale, data, out=tmp_path)
    ids = [j.id for j in jobs]
    assert len(ids) == len(set(ids))
    seen: set[str] = set()
    for j in jobs:
        assert set(j.deps) <= seen, f"{j.id} before {set(j.deps) - seen}"
        seen.add(j.id)
    evals = [j for j in jobs if j.kind == "eval"]
    assert all(j.deps for j in evals if j.seed is not None)
    for j in jobs:
        datasets = [a for k, a in zip(j.argv, j.argv[1:]) if k in ("--dataset", "--datasets")]
        synthetic = all(d.startswith("synthetic-") for ds in datasets for d in ds.split(","))
        assert synthetic == (data == "synthetic"), j.command


def test_the_tiny_scale_trains_every_model_per_seed_into_its_own_folders(tmp_path):
    jobs = resolve("tiny", out=tmp_path)
    train = [j for j in jobs if j.kind == "train"]
    plan = load_plan()
    assert len(train) == 3 * len(plan.train)
    assert (tmp_path / "train" / "afloc-word-s2") in {j.out for j in train}
    results = {j.seed: j.out for j in jobs if j.kind == "eval"}
    assert results == {1: tmp_path / "results", 2: tmp_path / "results" / "seed-2",
                       3: tmp_path / "results" / "seed-3", None: tmp_path / "results"}
    ablation = [j for j in jobs if j.entry == "ablation-ms-cxr"]
    assert len(ablation) == 6 * 3
    tags = {a for j in ablation for k, a in zip(j.argv, j.argv[1:]) if k == "--tag"}
    assert tags == {t.tag for t in plan.train.values() if (t.tag or "").startswith("levels=")}
    text = [j for j in jobs if j.entry == "text-encoders-ms-cxr"]
    assert len(text) == 3 and {a for j in text for k, a in zip(j.argv, j.argv[1:])
                               if k == "--tag"} == {"text=bert-8x64"}


def test_threads_reaches_every_training_and_no_evaluation(tmp_path):
    plain = resolve("tiny", only=["table-1"], out=tmp_path, seeds=[1])
    one = resolve("tiny", only=["table-1"], out=tmp_path, seeds=[1], threads=1)
    assert [j.id for j in one] == [j.id for j in plain]
    for a, b in zip(plain, one):
        if a.kind == "train":
            assert b.argv == (*a.argv[:-3], "--threads", "1", *a.argv[-3:])
        else:
            assert b.argv == a.argv
    assert default_out("tiny", "synthetic", 1) == Path("reproduce/tiny-synthetic-threads1")
    assert default_out("tiny", "synthetic") == Path("reproduce/tiny-synthetic")


def test_every_command_parses_under_the_real_cli(tmp_path):
    for scale in ("micro", "tiny", "paper"):
        for data in ("synthetic", "real"):
            for j in resolve(scale, data, out=tmp_path, check_done=False):
                cmd = cli.get_command(click.Context(cli), j.argv[1])
                cmd.make_context(f"bench {j.argv[1]}", list(j.argv[2:]))


def test_only_keeps_the_named_tables_and_the_training_they_need(tmp_path):
    jobs = resolve("tiny", only=["table-2"], out=tmp_path)
    evals = [j for j in jobs if j.kind == "eval"]
    assert evals and all("table-2" in j.fills for j in evals)
    needed = {d for j in evals for d in j.deps}
    assert {j.id for j in jobs if j.kind == "train"} == needed
    fig2 = {j.entry for j in resolve("tiny", only=["fig2"], out=tmp_path)}
    assert "chest-localization" in fig2  # Fig. 2 draws Extended Data Table 1's cells
    # Table 3: the fundus-pretrained models and their evaluation per seed, and the reference
    # row once (no training)
    fundus = {j.id for j in resolve("tiny", only=["table-3"], out=tmp_path)}
    peers = ("recontrast", "rdpp", "convirt", "gloria", "afloc")
    assert fundus == ({f"train/{m}-fundus-s{s}" for m in peers for s in (1, 2, 3)}
                      | {f"eval/fundus-classification-s{s}" for s in (1, 2, 3)}
                      | {"eval/references-fundus-classification"})
    with pytest.raises(UsageError, match="unknown table or figure 'table-9'"):
        resolve("tiny", only=["table-9"], out=tmp_path)


def _write_run(results, name: str, info: dict, status: str = "complete") -> None:
    rd = RunDir(results / name)
    rd.path.mkdir(parents=True)
    rd.write_run({**info, "status": status})
    rd.write_summary({"metrics": {}})


def test_a_job_is_done_when_its_outputs_exist(tmp_path):
    jobs = {j.id: j for j in resolve("micro", out=tmp_path)}
    assert not any(j.done for j in jobs.values())
    train = jobs["train/afloc-default-s1"]
    train.out.mkdir(parents=True)
    (train.out / "last.pt").write_bytes(b"")  # a started training is not done
    assert not resolve("micro", out=tmp_path)[0].done
    (train.out / CHECKPOINT_FILE).write_bytes(b"")  # cut off after an epoch: still to resume
    assert not resolve("micro", out=tmp_path)[0].done
    marker = train.out / FINISHED_FILE
    marker.write_text(json.dumps({"command": train.command + " --epochs 1"}))
    assert not resolve("micro", out=tmp_path)[0].done  # finished with another command
    marker.write_text(json.dumps({"command": train.command}))
    assert resolve("micro", out=tmp_path)[0].done  # the runner finished this command
    ev = jobs["eval/ms-cxr-simple-s1"]
    runs = list(ev.runs)
    assert {r["method"] for r in runs} == {"biovil", "gloria", "afloc"}
    for i, r in enumerate(runs[:-1]):
        _write_run(ev.out, f"run{i}", r)
    _write_run(ev.out, "last", runs[-1], status="running")
    _write_run(ev.out, "other-prompt", {**runs[-1], "prompt": "precise"})
    again = {j.id: j for j in resolve("micro", out=tmp_path)}
    assert again["train/afloc-default-s1"].done
    assert not again["train/gloria-default-s1"].done
    assert not again["eval/ms-cxr-simple-s1"].done
    info = json.loads((ev.out / "last" / "run.json").read_text())
    RunDir(ev.out / "last").write_run({**info, "status": "complete"})
    again = {j.id: j for j in resolve("micro", out=tmp_path)}
    assert again["eval/ms-cxr-simple-s1"].done
    assert not again["eval/ms-cxr-precise-s1"].done


# -- (d) the command --------------------------------------------------------------------------

def test_dry_run_prints_every_job_and_its_command(tmp_path, capsys):
    out = tmp_path / "out"
    code, text, err = bench_cli(capsys, "reproduce", "--dry-run", "--scale", "micro",
                             "--out", str(out))
    assert code == 0, err
    jobs = resolve("micro", out=out)
    assert f"{len(jobs)} jobs" in text.splitlines()[0]
    for j in jobs:
        assert j.id in text and j.command in text
    assert "needs: train/afloc-default-s1" in text
    assert "extended-7" in text  # the pending tables, with their reasons
    assert not out.exists()  # a dry run writes nothing


def test_dry_run_estimates_each_job_from_the_plan_timings_or_this_folder(tmp_path, capsys):
    path = tmp_path / "plan.toml"
    path.write_text(MINI)
    code, text, err = bench_cli(capsys, "reproduce", "--dry-run", "--plan", str(path),
                             "--scale", "micro", "--out", str(tmp_path / "none"))
    assert "no estimate for the 2 jobs to run: the plan has no timings" in text
    assert "train/afloc-default-s1  [train, todo, no measured rate]" in text
    path.write_text(MINI + '\n[timings.micro]\nmeasured = "a test machine"\neval_run = 30\n'
                    '[timings.micro.train]\nafloc = 400\n')
    out = tmp_path / "out"
    code, text, err = bench_cli(capsys, "reproduce", "--dry-run", "--plan", str(path),
                             "--scale", "micro", "--out", str(out))
    assert code == 0, err
    assert "train/afloc-default-s1  [train, todo, ~7 min]" in text
    assert "eval/ms-cxr-s1  [eval, todo, ~30 s]" in text  # one run (afloc on ms-cxr)
    assert ("estimated time of the 2 jobs to run: 7 min one after another (training 7 min, "
            "evaluation 30 s). Rates: the plan's timings, measured on a test machine") in text
    # a run here finished the training in 95 s: that time wins
    out.mkdir()
    (out / "reproduce.json").write_text(json.dumps({"jobs": [
        {"id": "train/afloc-default-s1", "status": "ok", "seconds": 95.0}]}))
    code, text, err = bench_cli(capsys, "reproduce", "--dry-run", "--plan", str(path),
                             "--scale", "micro", "--out", str(out))
    assert "train/afloc-default-s1  [train, todo, ~2 min]" in text
    assert "jobs an earlier run here finished: their own times" in text
    path.write_text(MINI + '\n[timings.micro]\nmeasured = "m"\n[timings.micro.train]\n'
                    'afloc = -1\n')
    code, text, err = bench_cli(capsys, "reproduce", "--dry-run", "--plan", str(path))
    assert code == 1 and "[timings.micro]: train must be a table of name = seconds" in err


def test_shell_writes_an_executable_script_in_dependency_order(tmp_path, capsys):
    out, script = tmp_path / "out", tmp_path / "jobs.sh"
    jobs = resolve("tiny", only=["extended-5"], out=out)
    (out / "train" / "classifier-default-s1").mkdir(parents=True)
    (out / "train" / "classifier-default-s1" / CHECKPOINT_FILE).write_bytes(b"")
    code, text, err = bench_cli(capsys, "reproduce", "--shell", str(script), "--only",
                             "extended-5", "--out", str(out))
    assert code == 0, err
    assert f"wrote {script}" in text
    assert os.access(script, os.X_OK)
    body = script.read_text()
    assert body.startswith("#!/usr/bin/env bash\n")
    subprocess.run(["bash", "-n", str(script)], check=True)
    positions = [body.index(f"# {j.id} (") for j in jobs]
    assert positions == sorted(positions)
    for j in jobs:
        assert f"# {j.id} ({j.kind}); needs: {', '.join(j.deps) or 'nothing'}" in body
        line = f"# done already: {j.command}" if j.id == "train/classifier-default-s1" else (
            j.command)
        assert f"\n{line}\n" in body
