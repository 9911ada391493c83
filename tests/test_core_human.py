"""The `human` method: CheXlocalize's radiologist benchmark scored through the same protocol."""

from __future__ import annotations

import json
import math

import pytest

try:
    from tests.test_core_runner import run_cli as _run
    from tests.test_data_chexlocalize import chx_root  # noqa: F401  (fixture)
except ImportError:  # tests/ is not always a package
    from test_core_runner import run_cli as _run
    from test_data_chexlocalize import chx_root  # noqa: F401


def test_human_benchmark_masks_and_points(chx_root, tmp_path, capsys):  # noqa: F811
    code, out, err = _run(["run", "--methods", "human", "--datasets", "chexlocalize", "--root",
                           str(chx_root), "--protocol", "chexlocalize", "--bootstrap", "20",
                           "--results-dir", str(tmp_path), "--json", "--quiet"], capsys)
    assert code == 0, err
    metrics = json.loads(out)["runs"][0]["summary"]["metrics"]
    # P1 Airspace Opacity: the radiologist's mask is the GT flipped upside down (no overlap),
    # and the salient point (2, 2) lies inside the GT.
    assert metrics["iou"]["per_category"]["Airspace Opacity"]["dataset_mean"] == 0.0
    assert metrics["hit"]["per_category"]["Airspace Opacity"]["dataset_mean"] == 1.0
    # P2 Edema: no radiologist mask (IoU undefined in the true-positive slice), no point (miss).
    assert math.isnan(metrics["iou"]["per_category"]["Edema"]["dataset_mean"])
    assert metrics["hit"]["per_category"]["Edema"]["dataset_mean"] == 0.0


def test_human_benchmark_refuses_other_datasets(tmp_path, capsys):
    code, _, err = _run(["run", "--methods", "human", "--datasets", "shapes", "--results-dir",
                         str(tmp_path), "--quiet"], capsys)
    assert code == 2 and "exists only for CheXlocalize" in err


@pytest.mark.parametrize("split", ["val"])
def test_human_benchmark_is_test_split_only(chx_root, tmp_path, capsys, split):  # noqa: F811
    (chx_root / "CheXpert" / "val").mkdir()
    (chx_root / "CheXlocalize" / "gt_segmentations_val.json").write_text("{}")
    code, _, err = _run(["run", "--methods", "human", "--datasets", "chexlocalize", "--root",
                         str(chx_root), "--split", split, "--protocol", "chexlocalize",
                         "--results-dir", str(tmp_path), "--quiet"], capsys)
    assert code == 2 and "test split only" in err
