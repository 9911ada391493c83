"""Reports agree with the drawn image: every finding sentence matches a label and a mask,
every label has its sentence, negations name only absent findings, location words agree."""

from __future__ import annotations

import csv
import gzip
import io
import re

import numpy as np
from synth_helpers import tiny_world, truth

from bench.synth.anchors import load_anchors
from bench.synth.chest import make_chest, sample_findings
from bench.synth.lexicon import (
    CHEXPERT_LABELS,
    is_negative,
    labels_of,
    mentions,
    safe_openi_sentences,
)
from bench.synth.reports import HEDGED, NEGATIVE, POSITIVE, precise_phrase, write_report

SIDE_WORDS = {"right": {"right"}, "left": {"left"},
              "bilateral": {"bilateral", "bibasilar", "both"}}
ZONE_WORDS = {"upper": {"upper", "apical", "apex"}, "mid": {"mid", "perihilar", "middle"},
              "lower": {"lower", "basilar", "base", "bibasilar"},
              "apical": {"apical", "apex"}, "lateral": {"lateral", "apicolateral"},
              "perihilar": {"perihilar"}}
LOCATED = {"Pneumonia", "Consolidation", "Lung Opacity", "Lung Lesion", "Atelectasis"}


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def check_report(findings: list[dict], sentences: list[dict]) -> None:
    """The rules, on (drawn findings with attrs, report sentences with polarity)."""
    drawn = {f["name"]: f for f in findings}
    present = labels_of(drawn)
    described = set()
    for s in sentences:
        text, pol = s["text"], s["polarity"]
        m = mentions(text) & (set(CHEXPERT_LABELS) | {"Calcification", "Fibrosis",
                                                       "Emphysema", "Fracture"})
        if pol == NEGATIVE:
            assert is_negative(text), text
            assert not (m & present), (text, present)
            continue
        assert pol in (POSITIVE, HEDGED) and not is_negative(text), text
        f = drawn[s["finding"]]  # the sentence describes a drawn finding ...
        assert m <= present | {"Support Devices"}, (text, present)  # ... and names nothing else
        assert labels_of([f["name"]]) & m or f["name"] == "Support Devices", text
        described.add(f["name"])
        a = f["attrs"]
        if f["name"] in LOCATED and s["section"] == "findings":
            assert words(text) & SIDE_WORDS[a["side"]], (text, a)
            assert words(text) & ZONE_WORDS[a["zone"]], (text, a)
        if f["name"] in ("Pleural Effusion", "Pneumothorax"):
            assert a["side"] in words(text) and a["size"] in words(text), (text, a)
    assert described == set(drawn), (described, set(drawn))  # every finding has its sentence
    if not drawn:
        assert all(s["polarity"] == NEGATIVE for s in sentences)


def test_generated_reports_follow_the_rules():
    anchors = load_anchors()
    seen = set()
    for k in range(60):
        rng = np.random.default_rng([11, k])
        profile = ("mimic", "mscxr", "chexlocalize")[k % 3]
        ph = make_chest(rng, 256, 256, anchors, sample_findings(rng, profile))
        rep, hedged = write_report(ph.findings, rng, anchors.sentences, 1.5)
        findings = [{"name": d.name, "attrs": d.attrs} for d in ph.findings]
        check_report(findings, [s.__dict__ for s in rep.sentences])
        for d in ph.findings:
            seen.add(d.name)
            phrase = precise_phrase(d, rng)
            assert not is_negative(phrase) and phrase[0].isupper() and not phrase.endswith(".")
            if d.name in LOCATED - {"Lung Lesion"}:
                assert words(phrase) & SIDE_WORDS[d.attrs["side"]], phrase
        assert "covid" not in rep.mimic_text(ph.view).lower()
    assert len(seen) >= 10


def test_written_mimic_reports_agree_with_labels_and_masks():
    root = tiny_world() / "mimic-cxr-jpg"
    raw = gzip.decompress((root / "mimic-cxr-2.0.0-chexpert.csv.gz").read_bytes()).decode()
    chex = {r["study_id"]: r for r in csv.DictReader(io.StringIO(raw))}
    n_normal = n_hedged = 0
    for t in truth(root / "SYNTHETIC_TRUTH.jsonl"):
        check_report(t["findings"], t["sentences"])
        study = t["path"].split("/")[3][1:]
        row = chex[study]
        present = labels_of(f["name"] for f in t["findings"])
        hedged = labels_of(t["hedged"])
        for lab in CHEXPERT_LABELS:
            if lab == "No Finding":
                continue
            if lab in present and lab not in hedged:
                assert row[lab] == "1.0", (lab, row)
            elif lab in hedged:
                assert row[lab] in ("1.0", "-1.0")
            else:
                assert row[lab] in ("", "0.0"), (lab, row)
        for f in t["findings"]:  # every positive label has a drawn, non-empty mask
            assert f["area"] > 0
        n_normal += not t["findings"]
        n_hedged += bool(t["hedged"])
        # the .txt on disk holds exactly these sentences, in its FINDINGS/IMPRESSION sections
        txt = (root / t["path"]).with_suffix("").parent.with_suffix(".txt").read_text()
        flat = " ".join(txt.split())
        for s in t["sentences"]:
            assert s["text"] in flat
        body = flat.split("FINDINGS:")[1]
        for sent in re.split(r"(?<=\.)\s+", body.replace("IMPRESSION:", "")):
            if sent and not is_negative(sent):
                assert mentions(sent) <= present | {"Support Devices"}, sent
    assert n_normal >= 1


def test_openi_sentences_are_real_and_safe():
    anchors = load_anchors()
    if not anchors.real:
        return
    safe = safe_openi_sentences(anchors.sentences)
    assert len(safe) > 100
    real = set(anchors.sentences)
    for s, concepts in safe:
        assert s in real and is_negative(s) and concepts == mentions(s)
    used = [s for t in truth(tiny_world() / "mimic-cxr-jpg" / "SYNTHETIC_TRUTH.jsonl")
            for s in t["sentences"] if s["source"] == "open-i"]
    assert used and all(s["text"] in real for s in used)


# radiology words our templates use that the 3,955 Open-i reports happen not to contain
NOT_IN_OPENI = {"angle", "angles", "bronchograms", "devices", "hazy", "likely", "linear",
                "meniscus", "plate", "standard", "apicolateral", "artifactual", "subretinal"}


def test_template_wording_is_real_report_vocabulary():
    anchors = load_anchors()
    if not anchors.real:
        return
    vocab = {w for s in anchors.sentences for w in words(s)}
    used: set[str] = set()
    for k in range(120):
        rng = np.random.default_rng([12, k])
        profile = ("mimic", "mscxr", "chexlocalize", "det10")[k % 4]
        ph = make_chest(rng, 256, 256, anchors, sample_findings(rng, profile))
        rep, _ = write_report(ph.findings, rng, anchors.sentences, 1.5)
        for s in rep.sentences:
            used |= words(s.text)
        for d in ph.findings:
            used |= words(precise_phrase(d, rng))
    assert len(used) > 150
    assert used - vocab <= NOT_IN_OPENI, sorted(used - vocab - NOT_IN_OPENI)


def test_side_words_track_where_the_finding_is_drawn():
    """End to end on the written files: 'right' findings sit on the image's left half."""
    from PIL import Image

    root = tiny_world() / "mimic-cxr-jpg"
    checked = 0
    for t in truth(root / "SYNTHETIC_TRUTH.jsonl"):
        width = Image.open(root / t["path"]).size[0]
        by_name = {f["name"]: f for f in t["findings"]}
        for s in t["sentences"]:
            f = by_name.get(s["finding"] or "")
            if f is None or f["name"] not in LOCATED | {"Pleural Effusion", "Pneumothorax"}:
                continue
            x, _, w, _ = f["bbox"]
            centre = (x + w / 2) / width
            w_ = words(s["text"])
            if "right" in w_ and not w_ & SIDE_WORDS["bilateral"]:
                assert centre < 0.5, (s["text"], centre)
                checked += 1
            if "left" in w_ and not w_ & SIDE_WORDS["bilateral"]:
                assert centre > 0.5, (s["text"], centre)
                checked += 1
    assert checked >= 5
