"""`bench report` from a small FABRICATED results store; rendered in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli.report_cmd import report_cmd
from bench.report.html_report import write_report

try:  # tests/ may or may not be a package
    from tests.test_report_fabricated import (
        loc_metrics,
        stat,
        write_fabricated_maps,
        write_fabricated_run,
    )
except ImportError:  # pragma: no cover
    from test_report_fabricated import (
        loc_metrics,
        stat,
        write_fabricated_maps,
        write_fabricated_run,
    )

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium"),
                             shutil.which("chromium-browser"), shutil.which("google-chrome"))
                 if p and Path(p).exists()), None)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("fabricated_store")
    for prompt in ("simple", "precise"):
        rd = write_fabricated_run(root, method="afloc", dataset="synthetic-ms-cxr", prompt=prompt,
                                  metrics=loc_metrics((0.3, 0.28, 0.32), (0.4, 0.38, 0.42),
                                                      (1.5, 1.4, 1.6),
                                                      per_category={"Edema": (0.3, 0.2, 0.4)}))
        write_fabricated_maps(rd, [dict(sample_id="s0", pathology="Edema", query="haze",
                                        box=(40, 40, 80, 60))])
    write_fabricated_run(root, method="afloc", dataset="rsna", task="classification",
                         split="all", metrics={"auroc": {"overall": stat(0.89, 0.87, 0.91)}})
    out = tmp_path_factory.mktemp("reports")
    res = CliRunner().invoke(report_cmd, ["--results-dir", str(root), "--out", str(out)])
    assert res.exit_code == 0, res.output
    return root, out


@pytest.fixture
def report(made: tuple[Path, Path]) -> Path:
    return made[1]


# tables the fabricated store fills: table-1, table-2, extended-1, extended-2, extended-3,
# extended-6 (no per-threshold data -> empty), extended-7
FILLED = ["table-1", "table-2", "extended-1", "extended-2", "extended-3", "extended-7"]


def test_report_files_and_content(report: Path) -> None:
    html = (report / "report.html").read_text()
    md = (report / "report.md").read_text()
    ids = re.findall(r'<table class="bench-table[^"]*" id="([^"]+)"', html)
    assert ids == FILLED
    # fig2 (MS-CXR), fig3 (a), fig4 (maps); fig5 has no maps and the page says so
    assert html.count("<img ") == 3 == html.count('src="data:image/png;base64,')
    assert re.findall(r'<figure id="(fig\d)">', html) == ["fig2", "fig3", "fig4"]
    assert "<b>fig5</b>" in html and "not drawn: fig5: no stored heatmaps" in html
    assert "SYNTHETIC DATA: runs on synthetic-ms-cxr" in html
    assert "synthetic-ms-cxr (SYNTHETIC)" in html and "ab" * 32 in html  # provenance
    runs = html.split('<table class="runs">')[1].split("</table>")[0]
    assert runs.count("<tr") == 4  # header + the 3 fabricated runs, with their overall metrics
    assert ("<td>afloc__rsna__all__afloc</td><td>rsna</td><td>10</td><td>—</td><td>—</td>"
            "<td>—</td><td>0.890 (0.870, 0.910)</td>") in runs
    assert "http://" not in html and "https://" not in html  # self-contained
    assert md.count("![fig") == html.count("<img ")
    assert all(f"### {t}:" in md for t in FILLED)
    assert (report / "figures" / "fig4.png").is_file()


def test_report_is_deterministic(made: tuple[Path, Path], tmp_path: Path) -> None:
    store, report = made
    write_report(store, tmp_path)
    assert (tmp_path / "report.html").read_bytes() == (report / "report.html").read_bytes()


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install -y "
                    "chromium); the HTML report could not be checked in a browser")
def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
           (report / "report.html").as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    ids = re.findall(r'<table class="bench-table[^"]*" id="([^"]+)"', dom)
    assert ids == FILLED
    assert len(re.findall(r"<img [^>]*src=\"data:image/png;base64,", dom)) == 3
    assert 'class="provenance"' in dom
