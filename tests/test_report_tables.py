"""Tables rendered from a small FABRICATED results store (numbers invented for the test)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli.report_cmd import table_cmd
from bench.report import build as build_module
from bench.report.build import build_table
from bench.report.render import render
from bench.report.specs import TABLES
from bench.report.store_view import StoreView

try:  # tests/ may or may not be a package
    from tests.test_report_fabricated import loc_metrics, stat, write_fabricated_run
except ImportError:  # pragma: no cover
    from test_report_fabricated import loc_metrics, stat, write_fabricated_run


REGISTERED = build_module.registered_methods


class _Every:
    def __contains__(self, name: object) -> bool:
        return True


@pytest.fixture(autouse=True)
def every_method_registered(monkeypatch):
    """Most tests here check how footnote commands are written for the paper's methods, some of
    which have no adapter yet; they run as if every method were registered."""
    monkeypatch.setattr(build_module, "registered_methods", _Every)


def _table(results: Path, name: str, fmt: str = "md", paper: bool = False) -> str:
    return render(build_table(TABLES[name], StoreView(results)), fmt, paper=paper)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Fabricated: AFLoc precise on real MS-CXR, AFLoc simple on its synthetic twin, GLoRIA
    precise on real MS-CXR; nothing for BioViL."""
    write_fabricated_run(tmp_path, method="afloc", dataset="ms-cxr", prompt="precise",
                         metrics=loc_metrics((0.3214, 0.3, 0.35), (0.45, 0.43, 0.47),
                                             (1.6, 1.5, 1.7)))
    write_fabricated_run(tmp_path, method="afloc", dataset="synthetic-ms-cxr", prompt="simple",
                         metrics=loc_metrics((0.25, 0.2, 0.3), (0.4, 0.35, 0.45),
                                             (1.2, 1.1, 1.3)))
    write_fabricated_run(tmp_path, method="gloria", dataset="ms-cxr", prompt="precise",
                         metrics=loc_metrics((0.26, 0.24, 0.29), (0.39, 0.35, 0.42),
                                             (1.28, 1.14, 1.42)))
    return tmp_path


TABLE_1_MD = """\
**table-1**: SYNTHETIC DATA - cells marked † were measured on synthetic-ms-cxr, procedurally \
generated synthetic data, not the paper's datasets; they are not a reproduction of the paper. \
Table 1 (measured by this harness): Quantitative results of different models on the MS-CXR \
dataset evaluated under two different descriptive scenarios. Numbers within parentheses \
indicate 95% CI.

| Description | BioViL | GLoRIA | AFLoc |
|---|---|---|---|
| **IoU** | | | |
| Simple description | — | — | 0.250 (0.200, 0.300)† |
| Precise description | — | 0.260 (0.240, 0.290) | 0.321 (0.300, 0.350) |
| **Dice** | | | |
| Simple description | — | — | 0.400 (0.350, 0.450)† |
| Precise description | — | 0.390 (0.350, 0.420) | 0.450 (0.430, 0.470) |
| **CNR** | | | |
| Simple description | — | — | 1.200 (1.100, 1.300)† |
| Precise description | — | 1.280 (1.140, 1.420) | 1.600 (1.500, 1.700) |

† synthetic data: synthetic-ms-cxr (the real dataset's adapter reading generated phantoms).
— no result in the store. Commands that would fill the empty cells:
    bench run --methods biovil,gloria --datasets ms-cxr --protocol afloc --prompt simple
    bench run --methods biovil --datasets ms-cxr --protocol afloc --prompt precise
GLoRIA: GLoRIA has no official zero-shot localization; its maps here are the ones AFLoc's \
evaluation code makes from its modules (report embedding x layer3 regions); --method-arg \
gloria.map=attention gives GLoRIA's own word attention.
"""


def test_table_1_markdown_exact(store: Path) -> None:
    assert _table(store, "table-1") == TABLE_1_MD


def test_table_1_paper_side_by_side(store: Path) -> None:
    text = _table(store, "table-1", paper=True)
    assert ("| Precise description | — \\| 0.228 (0.201, 0.255) | "
            "0.260 (0.240, 0.290) \\| 0.268 (0.242, 0.295) | "
            "0.321 (0.300, 0.350) \\| 0.324 (0.298, 0.350) |") in text
    assert "| Description | BioViL (measured \\| paper) |" in text


def test_csv_tex_html(store: Path) -> None:
    csv_text = _table(store, "table-1", "csv", paper=True)
    lines = csv_text.splitlines()
    assert lines[0] == ("Description,Metric,BioViL,BioViL (paper),GLoRIA,GLoRIA (paper),AFLoc,"
                        "AFLoc (paper)")
    assert lines[2] == ('Precise description,IoU,—,"0.228 (0.201, 0.255)","0.260 (0.240, 0.290)",'
                        '"0.268 (0.242, 0.295)","0.321 (0.300, 0.350)","0.324 (0.298, 0.350)"')
    tex = _table(store, "table-1", "tex")
    assert r"Simple description & --- & --- & 0.250 (0.200, 0.300)$^\dagger$ \\" in tex
    assert r"95\% CI" in tex and r"\begin{tabular}{lccc}" in tex
    html = _table(store, "table-1", "html")
    assert html.count('<td class="missing">—</td>') == 9
    assert html.count('<td class="synthetic">') == 3
    assert "<code>bench run --methods biovil --datasets ms-cxr --protocol afloc --prompt precise" \
           "</code>" in html


def test_real_run_preferred_over_synthetic_twin(store: Path) -> None:
    write_fabricated_run(store, method="afloc", dataset="synthetic-ms-cxr", prompt="precise",
                         metrics=loc_metrics((0.9, 0.8, 0.95), (0.9, 0.8, 0.95), (3, 2, 4)))
    assert "| Precise description | — | 0.260 (0.240, 0.290) | 0.321 (0.300, 0.350) |" \
        in _table(store, "table-1")


def test_empty_store_footnote_lists_commands(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(build_module, "registered_methods",
                        lambda: {"afloc", "gloria", "random", "center"})
    text = _table(tmp_path, "table-2")
    assert "| CheXzero | — | — |" in text
    # commands only for methods `bench run` knows; the others are named, without a command;
    # the centre prior cannot classify: its cells are n/a, with no command
    assert text.endswith(
        "— no result in the store. Commands that would fill the empty cells:\n"
        "    bench run --methods gloria,afloc,random --datasets rsna,siim --task classification\n"
        "— no adapter registered in this harness for recontrast, rdpp, convirt, biovil, "
        "chexzero, medklip: their cells stay empty (`bench list methods` shows what is "
        "registered).\n")
    assert "SYNTHETIC" not in text


def test_footnote_commands_name_only_registered_methods(tmp_path: Path, monkeypatch) -> None:
    from bench.registry import METHODS

    monkeypatch.setattr(build_module, "registered_methods", REGISTERED)
    known = set(METHODS.names())
    for name in TABLES:
        res = build_table(TABLES[name], StoreView(tmp_path))
        for cmd in res.commands:
            methods = cmd.split("--methods ")[1].split()[0].split(",")
            assert set(methods) <= known, cmd
        assert not set(res.unavailable) & known


def test_per_threshold_and_category_cells(tmp_path: Path) -> None:
    per_t = {"0.1": {"overall": stat(0.31, 0.3, 0.32),
                     "per_category": {"Pneumonia": stat(0.4191, 0.393, 0.444)}},
             "0.30000000000000004": {"overall": stat(0.31, 0.3, 0.32),
                                     "per_category": {"pleural_effusion": stat(0.361, 0.336,
                                                                               0.385)}}}
    write_fabricated_run(tmp_path, method="afloc", dataset="ms-cxr", prompt="precise",
                         metrics=loc_metrics((0.3, 0.2, 0.4), (0.4, 0.3, 0.5), (1, 0.9, 1.1),
                                             per_threshold=per_t))
    text = _table(tmp_path, "extended-6")
    assert "| 0.1 | 0.419 (0.393, 0.444) | — | — | — | — | — | — | — |" in text
    assert "| 0.3 | — | — | — | — | 0.361 (0.336, 0.385) | — | — | — |" in text
    assert "| 0.5 | — | — | — | — | — | — | — | — |" in text


def test_ablation_rows_by_tag_and_row_mean(tmp_path: Path) -> None:
    for ds, v, kw in (("rsna", 0.24, {}), ("covid-rural", 0.15, {}),
                      ("ms-cxr", 0.18, {"prompt": "precise"}), ("chexlocalize", 0.13, {})):
        write_fabricated_run(tmp_path, method="afloc", tag="levels=word", dataset=ds,
                             metrics=loc_metrics((v, v - 0.01, v + 0.01), (0, 0, 0), (0, 0, 0)),
                             **kw)
    write_fabricated_run(tmp_path, method="afloc", dataset="rsna",
                         metrics=loc_metrics((0.34, 0.33, 0.35), (0, 0, 0), (0, 0, 0)))
    text = _table(tmp_path, "extended-3")
    # mean of 0.24, 0.15, 0.18, 0.13 = 0.175
    assert ("| word | ✓ |  |  | 0.240 (0.230, 0.250) | 0.150 (0.140, 0.160) | "
            "0.180 (0.170, 0.190) | 0.130 (0.120, 0.140) | 0.175 |") in text
    assert ("| word + sentence + report | ✓ | ✓ | ✓ | 0.340 (0.330, 0.350) | — | — | — | — |"
            in text)
    commands = text.split("Commands")[1]
    assert "--tag levels=word\n" not in commands  # its row is complete
    assert ("    bench run --methods afloc --datasets rsna,chexlocalize --split test "
            "--protocol afloc --tag levels=sentence\n") in commands
    assert ("    bench run --methods afloc --datasets covid-rural,chexlocalize --split test "
            "--protocol afloc\n") not in commands  # split differs: covid has no --split
    # the reference rows' runs join the untagged AFLoc's
    assert ("    bench run --methods afloc,random,center,oracle --datasets covid-rural "
            "--protocol afloc\n") in commands


def test_category_aliases_and_protocol_per_row(tmp_path: Path) -> None:
    write_fabricated_run(tmp_path, method="afloc", dataset="chexlocalize",
                         metrics=loc_metrics((0.3, 0.2, 0.4), (0.4, 0.3, 0.5), (1, 0.9, 1.1),
                                             per_category={"Lung Opacity": (0.293, 0.28, 0.30),
                                                           "Enlarged Cardiomediastinum":
                                                               (0.46, 0.45, 0.47)}))
    write_fabricated_run(tmp_path, method="human", dataset="chexlocalize",
                         protocol="afloc",  # wrong protocol for the human row: must not fill
                         metrics=loc_metrics((0.3, 0.2, 0.4), (0.4, 0.3, 0.5), (1, 0.9, 1.1),
                                             per_category={"Edema": (0.3, 0.2, 0.4)}))
    text = _table(tmp_path, "extended-5")
    assert ("| AFLoc | 0.293 (0.280, 0.300) | — | — | — | — | — | 0.460 (0.450, 0.470) | — | — "
            "| — |") in text
    assert "| Human benchmark\\* |" not in text  # labels are not markdown-escaped beyond |
    assert "| Human benchmark* | — | — | — |" in text
    assert "bench run --methods gradcam,gradcampp,eigencam,human --datasets chexlocalize " \
           "--split test --protocol chexlocalize" in text


def test_incomplete_runs_are_ignored(tmp_path: Path) -> None:
    write_fabricated_run(tmp_path, method="afloc", dataset="rsna", task="classification",
                         status="running",
                         metrics={"auroc": {"overall": stat(0.9, 0.88, 0.92)}})
    assert "| AFLoc | — | — |" in _table(tmp_path, "table-2")


def test_cli_json(store: Path) -> None:
    res = CliRunner().invoke(table_cmd, ["table-1", "--json", "--results-dir", str(store)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["name"] == "table-1" and data["synthetic_datasets"] == ["synthetic-ms-cxr"]
    precise_iou = next(r for r in data["rows"] if r["section"] == "iou" and r["row"] == "precise")
    afloc = precise_iou["cells"]["afloc"]
    assert afloc["measured"]["mean"] == 0.3214 and afloc["paper"]["value"] == 0.324
    assert afloc["paper"]["source"] == "Table 1" and afloc["synthetic"] is False
    assert precise_iou["cells"]["biovil"]["missing"] is True
    assert precise_iou["cells"]["biovil"]["query"]["method"] == "biovil"


def test_cli_unknown_table_is_a_usage_error(tmp_path: Path) -> None:
    from bench.errors import UsageError

    res = CliRunner().invoke(table_cmd, ["table-9", "--results-dir", str(tmp_path)])
    assert isinstance(res.exception, UsageError) and "table-1" in str(res.exception)


def test_every_table_renders_in_every_format_from_an_empty_store(tmp_path: Path) -> None:
    for name in TABLES:
        for fmt in ("md", "csv", "tex", "html", "json"):
            assert render(build_table(TABLES[name], StoreView(tmp_path)), fmt, paper=True)
