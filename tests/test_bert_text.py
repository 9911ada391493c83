"""AFLoc text pipeline: cleaning, augmentation, word/sentence layout, aggregation, Open-i."""

from __future__ import annotations

import re
import tarfile
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.methods._shared import bert_text as T
from bench.methods._shared.encoders import build_wordpiece


def test_faithful_five_word_cutoff_and_corrected():
    r = "There is no pleural effusion. Moderate cardiomegaly is present."
    assert T.clean_report(r, "faithful") == ["there is no pleural effusion"]
    assert T.clean_report(r, "corrected") == ["there is no pleural effusion",
                                              "moderate cardiomegaly is present"]
    # 2 + 3 words also hits exactly 5
    assert T.clean_report("Lungs clear. No acute process. Heart normal.", "faithful") == [
        "lungs clear", "no acute process"]


def test_decimals_eaten_in_faithful_kept_in_corrected():
    r = "Mass measuring 4.5 cm. No pneumothorax."
    assert T.clean_report(r, "faithful") == ["mass measuring", "5 cm", "no pneumothorax"]
    assert T.clean_report(r, "corrected") == ["mass measuring 4.5 cm", "no pneumothorax"]


def test_numbering_non_ascii_and_short_pieces():
    r = "1. Clear lungs bilaterally. 2. No effusion seen here."
    assert T.clean_report(r, "faithful") == ["clear lungs bilaterally", "no effusion seen here"]
    assert T.clean_report(r, "corrected") == ["clear lungs bilaterally", "no effusion seen here"]
    r = "IMPRESSION:\n1. Small left effusion.\n2. No pneumothorax present."
    assert T.clean_report(r, "corrected") == ["small left effusion", "no pneumothorax present"]
    # a number that ends a sentence is a word, not a list marker (corrected keeps it)
    r = "Nodule stable since 2010. Stable 10. No effusion."
    assert T.clean_report(r, "corrected") == ["nodule stable since 2010", "stable 10",
                                              "no effusion"]
    # faithful: "2010." and "10." are split points; the one-token piece "stable" is dropped
    assert T.clean_report(r, "faithful") == ["nodule stable since", "no effusion"]
    # a two-token all-non-ASCII piece survives as an empty sentence in faithful mode
    assert T.clean_report("\u00e9\u00e9 \u00e8. Caf\u00e9 noted today. X.", "faithful") == [
        "", "caf noted today"]
    assert T.clean_report("\u00e9\u00e9 \u00e8. Caf\u00e9 noted today. X.", "corrected") == [
        "caf noted today"]
    assert T.clean_report("", "faithful") == [] and T.clean_report(None, "corrected") == []


def test_query_cleaning():
    assert T.clean_query("Pneumothorax", "faithful") == ""
    assert T.clean_query("Pneumothorax", "corrected") == "pneumothorax"
    assert T.clean_query("Findings suggesting pneumonia.", "faithful") == \
        "findings suggesting pneumonia"
    assert T.clean_query("Pneumonia:mild pneumonia at the right lung", "faithful") == \
        "pneumonia mild pneumonia at the right lung"
    assert T.clean_query("no Pneumonia. ", "faithful") == "no pneumonia"


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9), st.integers(0, 2**31 - 1))
def test_augmentation_draws_k_of_n(n, seed):
    sents = [f"sentence number {i}" for i in range(n)]
    cap = T.augment_caption(sents, np.random.default_rng(seed))
    parts = cap.split(". ")
    if n == 1:
        assert parts == sents
    else:
        assert 1 <= len(parts) <= n - 1
        assert len(set(parts)) == len(parts) and set(parts) <= set(sents)


def test_word_and_sentence_layout_faithful_hand_checked():
    toks = ["[CLS]", "mass", "meas", "##uring", ".", "5", "[SEP]", "[PAD]"]
    lay = T.layout_one(toks, "faithful")
    assert lay["word_index"] == [0, 1, 2, 2, 3, 4, 5, -1]
    assert lay["words"][:6] == ["[CLS]", "mass", "measuring", ".", "5", "[SEP]"]
    # cap_len = 4 non-"[" units + 1: [CLS], mass, measuring, ".", 5
    assert lay["word_mask"] == [True] * 5 + [False] * 3
    # "5" (before [SEP]) is relabelled "*", [SEP] becomes "."; sentences {mass, measuring}, {5}
    assert lay["sent_index"] == [0, 1, 1, -1, 2, 3, -1, -1]
    assert lay["sent_mask"] == [True] * 3 + [False] * 5


def test_unk_shortens_faithful_span_not_corrected():
    toks = ["[CLS]", "a", "[UNK]", "b", "[SEP]", "[PAD]"]
    f = T.layout_one(toks, "faithful")
    assert f["word_mask"] == [True, True, True, False, False, False]  # "b" is dropped
    offs = [(0, 0), (0, 1), (2, 3), (4, 5), (0, 0), (0, 0)]
    c = T.layout_one(toks, "corrected", offs, [(0, 5)])
    assert c["word_mask"] == [True, True, True, True, False, False]


def test_corrected_separators_excluded_and_decimal_in_sentence():
    tok = build_wordpiece(["mass measuring 4.5 cm", "no pneumothorax"], 200)
    cap = "mass measuring 4.5 cm. no pneumothorax"
    b = T.TextProcessor(tok, "corrected", 24).encode([cap])
    words = b.words[0]
    sep = words.index("[SEP]")
    dots = [i for i, w in enumerate(words[:sep]) if w == "."]
    assert len(dots) == 2  # the decimal point and the separator
    sidx = b.sent_index[0].tolist()
    assert sidx[dots[0]] == 1 and sidx[dots[1]] == -1  # decimal inside sentence 1
    assert b.word_mask[0, dots[1]].item() is False and b.word_mask[0, dots[0]].item() is True
    assert b.sent_mask[0].sum().item() == 3  # [CLS] + 2 sentences
    f = T.TextProcessor(tok, "faithful", 24).encode([cap])
    assert f.sent_mask[0].sum().item() == 4  # the decimal point splits a sentence


def _official_aggregate(emb: torch.Tensor, tokens: list[list[str]]):
    """The official per-caption loops (aggregate_tokens + sent units), per layer, as oracle."""
    b, nl, t, d = emb.shape
    words_out, sents_out, labels_out = [], [], []
    for e, toks in zip(emb.permute(0, 2, 1, 3), tokens):
        agg, labels, bank, wb = [], [], [], []
        for w_emb, tok in zip(e, toks):
            if tok == "[SEP]":
                agg.append(torch.stack(bank).sum(0))
                labels.append("".join(wb))
                agg.append(w_emb)
                labels.append(tok)
                break
            if not tok.startswith("##"):
                if wb:
                    agg.append(torch.stack(bank).sum(0))
                    labels.append("".join(wb))
                bank, wb = [w_emb], [tok]
            else:
                bank.append(w_emb)
                wb.append(tok[2:])
        agg = torch.cat([torch.stack(agg), torch.zeros(t - len(agg), nl, d)])
        labels = labels + ["[PAD]"] * (t - len(labels))
        cap = np.array(labels, dtype=object)
        sep = int(np.where(cap == "[SEP]")[0][0])
        cap[sep - 1] = "*"
        cap[sep] = "."
        dots = np.where(cap == ".")[0]
        s = [agg[0]]
        for i, end in enumerate(dots):
            start = 1 if i == 0 else dots[i - 1] + 1
            s.append(agg[start:end].mean(0))
        s.append(agg[dots[-1]])
        s = torch.cat([torch.stack(s), torch.zeros(t - len(s), nl, d)])
        words_out.append(agg)
        sents_out.append(s)
        labels_out.append(labels)
    words = torch.stack(words_out)  # [B, T, L, D]
    report = words.mean(1).sum(1)
    return words.sum(2), torch.stack(sents_out).sum(2), report, labels_out


def test_aggregation_matches_official_loops():
    corpus = ["heart size is normal", "no pleural effusion or pneumothorax",
              "mild bibasilar atelectasis", "cardiomediastinal silhouette unremarkable"]
    tok = build_wordpiece(corpus, 120)  # small vocab: many ## pieces
    caps = ["heart size is normal. no pleural effusion or pneumothorax",
            "mild bibasilar atelectasis", "cardiomediastinal silhouette unremarkable. heart size "
            "is normal. mild bibasilar atelectasis"]
    b = T.TextProcessor(tok, "faithful", 20).encode(caps)  # the third is truncated
    torch.manual_seed(0)
    hidden = torch.randn(3, 4, 20, 8, dtype=torch.float64)
    tokens = [tok.convert_ids_to_tokens(r) for r in b.input_ids.tolist()]
    ow, os_, orep, olabels = _official_aggregate(hidden, tokens)
    mine = T.aggregate(hidden.sum(1), b)
    assert b.words == olabels
    torch.testing.assert_close(mine["words"], ow.transpose(1, 2))
    torch.testing.assert_close(mine["sentences"], os_.transpose(1, 2))
    torch.testing.assert_close(mine["report"], orep)
    assert any("##" not in w and len(w) > 6 for w in b.words[0])  # pieces were merged


def _openi_reports() -> list[tuple[str, str]]:
    import torchxrayvision

    tgz = Path(torchxrayvision.__file__).parent / "data" / "NLMCXR_reports.tgz"
    if not tgz.is_file():
        pytest.skip("torchxrayvision's NLMCXR_reports.tgz not installed")
    out = []
    with tarfile.open(tgz) as tf:
        for m in tf.getmembers():
            if not m.isfile() or not m.name.endswith(".xml"):
                continue
            root = ElementTree.fromstring(tf.extractfile(m).read())
            secs = {a.get("Label"): (a.text or "") for a in root.iter("AbstractText")}
            rep = " ".join(s for s in (secs.get("FINDINGS"), secs.get("IMPRESSION")) if s)
            out.append((Path(m.name).stem, rep))
    return out


def test_openi_reports_run_through_both_modes():
    reports = _openi_reports()
    assert len(reports) == 3955
    by_id = dict(reports)
    assert T.clean_report(by_id["3029"], "faithful") == [
        "normal cardiac contour", "clear lung xxxx bilaterally",
        "no pleural effusion or pneumothorax", "degenerative seen throughout cervical spine",
        "no acute cardiopulmonary abnormalities"]
    sents = {m: [T.clean_report(r, m) for _, r in reports] for m in T.TEXT_MODES}
    corpus = [" ".join(s) for s in sents["corrected"] if s]
    tok = build_wordpiece(corpus, 3000)
    rng = np.random.default_rng(0)
    shortened = 0
    for mode in T.TEXT_MODES:
        proc = T.TextProcessor(tok, mode)
        caps = [T.augment_caption(s, rng) for s in sents[mode] if s]
        for a in range(0, len(caps), 512):
            b = proc.encode(caps[a:a + 512])
            wm, sm = b.word_mask, b.sent_mask
            assert bool(wm[:, 0].all()) and bool(sm[:, 0].all())
            for i, words in enumerate(b.words):
                sep = words.index("[SEP]")
                assert int(wm[i].sum()) <= sep and int(sm[i].sum()) >= 1
                if mode == "faithful":  # K sentences = "." units before the relabelled one
                    k = sum(1 for w in words[:sep - 1] if w == ".") + 1
                    assert int(sm[i].sum()) == k + 1
        assert all(re.fullmatch(r"[a-z0-9 .]*", c) for c in caps)
    for f, c in zip(sents["faithful"], sents["corrected"]):
        shortened += len(f) < len(c)
    assert shortened > 100  # the 5-word cutoff changes many real reports
