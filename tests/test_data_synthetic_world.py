"""The synthetic world's writers (bench/synth) read back through the real adapters with the
ground truth the writer recorded (SYNTHETIC_TRUTH*.jsonl). Skipped while bench.synth is absent."""

from __future__ import annotations

import json

import pytest

from bench.datasets.chexlocalize import CheXlocalize
from bench.datasets.covid_rural import CovidRural
from bench.datasets.rsna import RSNA
from bench.datasets.siim import SIIM

world = pytest.importorskip("bench.synth.world")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    world.generate(out, scale="tiny", seed=0, units=["rsna", "siim", "chexlocalize",
                                                     "covid-rural"], n_jobs=1)
    return out


def _truth(path):
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def test_rsna_boxes_as_written(synth):
    root = synth / "rsna"
    truth = _truth(root / "SYNTHETIC_TRUTH.jsonl")
    for split, opts in (("all", {}), ("test", {"split_list": root / "grounding_test.csv"})):
        d = RSNA(root, split=split, **opts)
        assert d.check().usable
        for i in range(len(d)):
            s = d.load(i)
            boxes = sorted(map(tuple, truth[s.id]["boxes"]))
            assert s.labels["Pneumonia"] == int(bool(boxes))
            if boxes:
                assert sorted(map(tuple, s.findings[0].boxes.tolist())) == boxes


def test_siim_masks_as_written(synth):
    root = synth / "siim"
    truth = _truth(root / "SYNTHETIC_TRUTH.jsonl")
    d = SIIM(root, split="all")
    assert d.check().usable and len(d) == len(truth)
    for i in range(len(d)):
        s = d.load(i)
        want = [f for f in truth[s.id]["findings"] if f["name"] == "Pneumothorax"]
        assert s.labels["Pneumothorax"] == int(bool(want))
        if want:
            assert int(s.findings[0].mask.sum()) == sum(f["area"] for f in want)


def test_chexlocalize_and_covid_masks_as_written(synth):
    root = synth / "chexlocalize"
    for split in ("val", "test"):
        truth = _truth(root / f"SYNTHETIC_TRUTH_{split}.jsonl")
        d = CheXlocalize(root, split=split)
        assert d.check().usable
        for i in range(len(d)):
            s = d.load(i)
            areas = {f["name"].replace("Lung Opacity", "Airspace Opacity"): f["area"]
                     for f in truth[s.id]["findings"]}
            got = {f.pathology: int(f.mask.sum()) for f in s.findings if f.positive}
            assert got == {k: v for k, v in areas.items() if k in got or v > 0}
    root = synth / "covid-rural"
    truth = _truth(root / "SYNTHETIC_TRUTH.jsonl")
    d = CovidRural(root)
    assert d.check().usable
    for i in range(len(d)):
        s = d.load(i)
        assert int(s.findings[0].mask.sum()) == truth[s.id]["findings"][0]["area"]
        # the LabelMe polygons trace the same opacity (rasterised, so not pixel-identical)
        poly = CovidRural(root, masks="json").load(i).findings[0].mask.astype(bool)
        png = s.findings[0].mask.astype(bool)
        assert (poly & png).sum() / (poly | png).sum() > 0.9
