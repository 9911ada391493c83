"""`bench reproduce --scale micro` end to end on the real plan: Table 1's jobs (six trainings of
every kind Table 1 and its shared MS-CXR evaluation need, two evaluations) run from nothing on
the tiny synthetic world, fill every cell of Table 1, render the report, and a second run finds
every job done (about a minute of CPU)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from bench.cli.main import cli


def test_micro_table_1_end_to_end_then_all_done(tmp_path):
    out = tmp_path / "repro"
    res = CliRunner().invoke(cli, ["reproduce", "--scale", "micro", "--only", "table-1",
                                   "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "reproduce.json").read_text())
    kinds = {j["kind"] for j in summary["jobs"]}
    assert kinds == {"train", "eval"}
    assert [j["status"] for j in summary["jobs"]] == ["ok"] * len(summary["jobs"])
    tables = (out / "tables.md").read_text()
    block = tables.split("**table-1**")[1].split("\n\n")[1]  # the grid of Table 1
    cells = [c.strip() for line in block.splitlines()[2:] for c in line.strip("|").split("|")[1:]
             if not line.startswith("| **")]
    assert cells and all(c.endswith("†") for c in cells)  # measured, and marked synthetic
    # the run wrote the report and the orderings check too
    assert "SYNTHETIC" in (out / "report" / "report.md").read_text()
    assert (out / "report" / "report.html").is_file()
    check = (out / "check.md").read_text()
    assert "SYNTHETIC DATA" in check
    block = check.split("## ms-cxr-precise-beats-simple: ")[1].split("\n## ")[0]
    assert [x.split(" ")[1] for x in block.splitlines() if x.startswith("- ")] == [
        "iou", "dice", "cnr"]
    assert "## rsna-afloc-beats-all: NOT MEASURED" in check  # Table 1 only was run
    claims = json.loads((out / "check.json").read_text())["claims"]
    assert {c["id"] for c in claims} >= {"ms-cxr-precise-beats-simple", "all-three-levels-best"}
    again = CliRunner().invoke(cli, ["reproduce", "--scale", "micro", "--only", "table-1",
                                     "--out", str(out), "--no-tables"], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    summary = json.loads((out / "reproduce.json").read_text())
    assert {j["status"] for j in summary["jobs"]} == {"done"}
