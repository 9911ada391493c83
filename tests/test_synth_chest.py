"""Phantom anatomy and pathology signatures: each finding changes the image where its mask is."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest

from bench.synth import pathologies as P
from bench.synth.anatomy import draw_anatomy
from bench.synth.anchors import load_anchors, procedural_anchors
from bench.synth.chest import PROFILES, make_chest, sample_findings
from bench.synth.fundus import DISEASES, LESIONS, make_fundus

DRAWERS = {
    "Pneumonia": lambda an, img, rng, a: P.opacity(an, img, rng, a, "Pneumonia"),
    "Consolidation": lambda an, img, rng, a: P.opacity(an, img, rng, a, "Consolidation"),
    "Lung Opacity": lambda an, img, rng, a: P.opacity(an, img, rng, a, "Lung Opacity"),
    "COVID-19": lambda an, img, rng, a: P.covid_pattern(an, img, rng),
    "Atelectasis": lambda an, img, rng, a: P.atelectasis(an, img, rng),
    "Edema": lambda an, img, rng, a: P.edema(an, img, rng),
    "Lung Lesion": lambda an, img, rng, a: P.lesion(an, img, rng, a),
    "Pleural Effusion": lambda an, img, rng, a: P.effusion(an, img, rng),
    "Pneumothorax": lambda an, img, rng, a: P.pneumothorax(an, img, rng, a),
    "Support Devices": lambda an, img, rng, a: P.support_devices(an, img, rng),
    "Calcification": lambda an, img, rng, a: P.calcification(an, img, rng),
    "Fibrosis": lambda an, img, rng, a: P.fibrosis(an, img, rng),
}
DARKER = {"Pneumothorax"}


@pytest.mark.parametrize("name", sorted(DRAWERS))
def test_signature_lies_inside_the_mask(name):
    anchors = load_anchors()
    for k in range(3):
        rng = np.random.default_rng([7, k])
        an = draw_anatomy(rng, 256, 256, anchors)
        img = an.base.copy()
        d = DRAWERS[name](an, img, rng, anchors)
        assert d.name == name and d.mask.dtype == bool and d.mask.any()
        assert np.logical_or.reduce(d.instances).sum() == d.mask.sum()
        diff = img - an.base
        inside = diff[d.mask].mean()
        assert (inside < -0.02) if name in DARKER else (inside > 0.02), (name, inside)
        far = ~cv2.dilate(d.mask.astype(np.uint8), np.ones((41, 41), np.uint8)).astype(bool)
        if name not in ("Edema", "Pneumothorax"):  # both are smooth fields by design
            assert np.abs(diff[far]).mean() < 0.2 * abs(inside)


def test_lung_findings_lie_in_the_lungs_and_sides_match():
    anchors = load_anchors()
    for k in range(6):
        rng = np.random.default_rng([8, k])
        an = draw_anatomy(rng, 256, 256, anchors)
        img = an.base.copy()
        for name in ("Pneumonia", "Consolidation", "Lung Opacity", "Lung Lesion"):
            d = DRAWERS[name](an, img, rng, anchors)
            if name != "Lung Lesion":
                assert (d.mask & ~(an.lungs > 0)).sum() == 0
            cx = np.nonzero(d.mask)[1].mean()
            assert d.attrs["side"] == ("right" if cx < an.cx else "left")
            ys = np.nonzero(d.mask)[0]
            x0, y0, x1, y1 = an.side_boxes[d.attrs["side"]]
            frac = (ys.mean() - y0) / (y1 - y0)
            want = "upper" if frac < 0.36 else ("mid" if frac < 0.64 else "lower")
            assert d.attrs["zone"] == want


def test_cardiothoracic_ratio():
    anchors = load_anchors()
    normal = [draw_anatomy(np.random.default_rng([9, k]), 256, 256, anchors).ctr
              for k in range(8)]
    big = [make_chest(np.random.default_rng([9, k]), 256, 256, anchors, ["Cardiomegaly"])
           for k in range(8)]
    assert max(normal) < 0.5
    assert all(p.ctr > 0.5 and p.get("Cardiomegaly") is not None for p in big)


def test_image_and_masks_share_the_frame():
    anchors = load_anchors()
    for k in range(4):
        rng = np.random.default_rng([10, k])
        names = sample_findings(rng, "chexlocalize")
        ph = make_chest(rng, 600, 512, anchors, names)
        assert ph.image.shape == (600, 512) and ph.image.dtype == np.uint8
        for d in ph.findings:
            assert d.mask.shape == (600, 512)


def test_profiles_have_normals_and_findings():
    rng = np.random.default_rng(0)
    draws = [sample_findings(rng, "mimic") for _ in range(2000)]
    normal = np.mean([not d for d in draws])
    assert 0.2 < normal < 0.45  # MIMIC: roughly a third of studies have no finding
    effusion = np.mean(["Pleural Effusion" in d for d in draws])
    assert abs(effusion - PROFILES["mimic"]["Pleural Effusion"]) < 0.04
    assert all(sample_findings(rng, "covid") == ["COVID-19"] for _ in range(20))


def test_procedural_fallback_draws_a_chest():
    anchors = procedural_anchors()
    assert not anchors.real
    ph = make_chest(np.random.default_rng(1), 256, 256, anchors, ["Pneumothorax", "Pneumonia"])
    assert {d.name for d in ph.findings} == {"Pneumothorax", "Pneumonia"}
    assert ph.image[64:192, 32:224].std() > 10  # lungs and mediastinum, not a flat field


def test_real_anchors_are_used_when_installed():
    if importlib.util.find_spec("torchxrayvision") is None:  # importing it is slow (torch)
        pytest.skip("torchxrayvision not installed")
    a = load_anchors()
    assert a.real and len(a.lungs) > 300 and set(np.unique(a.lungs)) == {0, 1, 2}
    assert a.rsna_boxes.shape[1] == 4 and 0 < a.rsna_boxes[:, 2].mean() < 0.5
    assert len(a.ptx_masks) > 100 and len(a.sentences) > 1000


def test_fundus_lesions_and_cues():
    rng = np.random.default_rng(3)
    f = make_fundus(rng, 192, ["Macular Degeneration", "Retinopathy", "Glaucoma"])
    assert f.image.shape == (192, 192, 3)
    assert {"Drusen", "Retinal Hemorrhage"} <= set(f.masks) <= set(LESIONS)
    hem = f.masks["Retinal Hemorrhage"]
    assert f.image[hem][:, 1].mean() < f.image[~hem & (f.image[..., 0] > 30)][:, 1].mean()
    dru = f.masks["Drusen"]
    assert f.image[dru][:, 1].mean() > f.image[~dru & (f.image[..., 0] > 30)][:, 1].mean()
    assert f.attrs["cdr"] >= 0.7
    normal = make_fundus(np.random.default_rng(4), 192, [])
    assert not normal.masks and normal.attrs["cdr"] < 0.5
    assert len(DISEASES) == 9


def test_missing_torchxrayvision_falls_back_with_a_notice(monkeypatch):
    from bench.synth import anchors as A
    from bench.synth.reports import write_report

    monkeypatch.setattr(A, "txv_data_dir", lambda: None)
    A.load_anchors.cache_clear()
    try:
        with pytest.warns(UserWarning, match="torchxrayvision is not installed"):
            a = A.load_anchors()
        assert a.source == "procedural" and a.sentences == []
        rng = np.random.default_rng(2)
        ph = make_chest(rng, 256, 256, a, ["Pleural Effusion", "Lung Lesion"])
        rep, _ = write_report(ph.findings, rng, a.sentences, 1.5)
        assert rep.findings and all(s.source == "template" for s in rep.sentences)
    finally:
        A.load_anchors.cache_clear()
