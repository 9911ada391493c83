"""Figures from a small FABRICATED results store (numbers and maps invented for the test)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.container import BarContainer

from bench.errors import BenchError
from bench.report.figures import draw, make_figure, normalized
from bench.report.store_view import StoreView

try:  # tests/ may or may not be a package
    from tests.test_report_fabricated import (
        loc_metrics,
        write_fabricated_maps,
        write_fabricated_run,
    )
except ImportError:  # pragma: no cover
    from test_report_fabricated import loc_metrics, write_fabricated_maps, write_fabricated_run

MS = ["Pneumonia", "Atelectasis", "Consolidation", "Pneumothorax", "Pleural Effusion",
      "Lung Opacity", "Cardiomegaly", "Edema"]


def tri(m: float) -> tuple[float, float, float]:
    return (m, m - 0.02, m + 0.02)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fabricated_store")
    for k, m in enumerate(["gloria", "afloc"]):
        write_fabricated_run(root, method=m, dataset="rsna",
                             metrics=loc_metrics(tri(0.2 + k / 10), tri(0.3), tri(1.0)))
        for prompt in ("simple", "precise"):
            rd = write_fabricated_run(
                root, method=m, dataset="synthetic-ms-cxr", prompt=prompt,
                metrics=loc_metrics(tri(0.25), tri(0.35), tri(1.1),
                                    per_category={c: tri(0.2 + i / 50) for i, c in enumerate(MS)}))
            write_fabricated_maps(rd, [dict(sample_id=f"img{i}", pathology=MS[i],
                                            query=f"phrase {i}", box=(30 + 30 * i, 60, 50, 40))
                                       for i in range(3 + k)])  # afloc keeps one more map
    write_fabricated_run(root, method="human", dataset="chexlocalize", protocol="chexlocalize",
                         metrics=loc_metrics(tri(0.3), tri(0.4), tri(1.2),
                                             per_category={"Edema": tri(0.33),
                                                           "Lung Lesion": tri(0.42)}))
    rd = write_fabricated_run(root, method="afloc", dataset="chestx-det10",
                              metrics=loc_metrics(tri(0.3), tri(0.4), tri(1.2)))
    write_fabricated_maps(rd, [dict(sample_id="a.png", pathology=p, query=p, box=(20, 20, 40, 40))
                               for p in ("Effusion", "Nodule", "Mass")]
                          + [dict(sample_id="b.png", pathology="Effusion", query="Effusion",
                                  box=(50, 50, 30, 30))])
    rd = write_fabricated_run(root, method="afloc", dataset="synthetic-fundus",
                              metrics=loc_metrics(tri(0.15), tri(0.25), tri(0.8)))
    write_fabricated_maps(rd, [dict(sample_id=f"f{i}.jpg", pathology=p, query=p,
                                    box=(80, 80, 30, 30), boxes=False)
                               for i, p in enumerate(["Drusen", "Drusen", "Hemorrhage"])])
    return root


def _bars(fig) -> int:
    return sum(len(c) for ax in fig.axes for c in ax.containers if isinstance(c, BarContainer))


def test_fig2_panels_and_bars(store: Path) -> None:
    d = draw("fig2", StoreView(store))
    # columns with data: RSNA (real), MS-CXR and fundus (synthetic twins); rows IoU, Dice, CNR
    assert d.n_panels == 9 and len(d.figure.axes) == 9
    # 2 methods x 3 metrics on RSNA and MS-CXR, AFLoc x 3 metrics on fundus
    assert d.n_bars == 15 == _bars(d.figure)
    assert d.synthetic == ["synthetic-fundus", "synthetic-ms-cxr"]
    titles = [ax.get_title() for ax in d.figure.axes if ax.get_title()]
    assert titles == ["RSNA Pneumonia", "MS-CXR\n(synthetic-ms-cxr)",
                      "Fundus (lesion mean)\n(synthetic-fundus)"]
    assert "SYNTHETIC" in d.figure._suptitle.get_text()
    ax = d.figure.axes[0]  # RSNA IoU: GLoRIA 0.2, AFLoc 0.3, error bars of +-0.02
    heights = sorted(round(p.get_height(), 6) for c in ax.containers
                     if isinstance(c, BarContainer) for p in c)
    assert heights == [0.2, 0.3]


def test_fig3_bars_per_pathology(store: Path) -> None:
    d = draw("fig3", StoreView(store))
    assert d.n_panels == 2
    # (a) 2 methods x 8 pathologies; (b) human benchmark on the 2 pathologies it has
    assert d.n_bars == 18 == _bars(d.figure)


def test_fig4_same_images_across_methods_and_prompts(store: Path) -> None:
    d = draw("fig4", StoreView(store))
    # columns: AFLoc simple/precise, GLoRIA simple/precise; rows: the 3 images all four share
    assert d.n_panels == 12
    titles = [ax.get_title() for ax in d.figure.axes[:4]]
    assert titles == ["AFLoc\nsimple", "AFLoc\nprecise", "GLoRIA\nsimple", "GLoRIA\nprecise"]
    assert d.figure.axes[-1].get_ylabel() == "heatmap (min-max scaled per image)"  # colour bar
    dashed = [p for p in d.figure.axes[0].patches if p.get_linestyle() != "-"]
    assert len(dashed) == 1  # the GT box, dashed


def test_fig5_multi_pathology_and_fundus(store: Path) -> None:
    d = draw("fig5", StoreView(store))
    # a.png with 3 pathologies, b.png with 1, fundus with 2 lesion types
    assert d.n_panels == 6
    assert d.synthetic == ["synthetic-fundus"]


def test_figures_are_byte_deterministic(store: Path, tmp_path: Path) -> None:
    view = StoreView(store)
    for fmt in ("png", "pdf"):
        a = make_figure("fig2", view, tmp_path / "a", fmt).read_bytes()
        b = make_figure("fig2", view, tmp_path / "b", fmt).read_bytes()
        assert a == b
        assert b"CreationDate" not in a and b"Matplotlib" not in a


def test_missing_data_is_one_clear_error(tmp_path: Path) -> None:
    for name in ("fig2", "fig3", "fig4", "fig5"):
        with pytest.raises(BenchError, match=name):
            draw(name, StoreView(tmp_path))


def test_normalized_keeps_nan_margin() -> None:
    h = np.array([[np.nan, 1.0], [3.0, 5.0]])
    out = normalized(h)
    assert np.isnan(out[0, 0]) and out[0, 1] == 0.0 and out[1, 0] == 0.5 and out[1, 1] == 1.0
    assert np.all(normalized(np.ones((2, 2))) == 0.0)


def test_paper_markers_only_beside_real_data_bars(store: Path) -> None:
    d = draw("fig2", StoreView(store))
    rsna_iou, ms_iou = d.figure.axes[0], d.figure.axes[1]
    # RSNA is a real dataset here: one published-value marker per bar (GLoRIA 0.278, AFLoc 0.342)
    assert sorted(round(float(ln.get_ydata()[0]), 3) for ln in rsna_iou.lines
                  if ln.get_marker() == "D") == [0.278, 0.342]
    assert not [ln for ln in ms_iou.lines if ln.get_marker() == "D"]  # synthetic twin: none


def test_cli_figure_writes_the_file(store: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from bench.cli.report_cmd import figure_cmd

    res = CliRunner().invoke(figure_cmd, ["fig3", "--out", str(tmp_path), "--format", "pdf",
                                          "--results-dir", str(store)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "fig3.pdf").read_bytes().startswith(b"%PDF")
