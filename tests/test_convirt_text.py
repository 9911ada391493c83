"""ConVIRT's text side: R2Gen's cleaning on hand-worked reports, ViLMedic's caption order, and the
tokenisation without special tokens padded to 128."""

from __future__ import annotations

import pytest

from bench.methods._shared.encoders import build_wordpiece
from bench.methods.convirt.method import convirt_prompts
from bench.methods.convirt.text import Tokenize, clean_text, r2gen_clean, report_caption


@pytest.mark.parametrize("report, want", [
    # "  " -> " ", ".." -> ".", "1. " deleted; split on ". "; ':', '(', ')', '.' deleted
    ("FINDINGS: Heart size is normal.  No effusion.. 1. Mild opacity (left).",
     "findings heart size is normal . no effusion . mild opacity left ."),
    # ". 2. " -> ". "; quotes, slashes and '; < > @ .' deleted (the decimal point too);
    # digits kept
    ('Tube 2.5 cm above carina; "stable" <unchanged> @ 10. 2. New line/item',
     "tube 25 cm above carina stable unchanged  10 . new lineitem ."),
    ("no Pneumonia. ", "no pneumonia ."),
    ("11. Effusion", "1effusion ."),  # the official "1. " deletion inside "11. "
    ("", ""),
    ("   ", ""),
])
def test_r2gen_cleaning_by_hand(report, want):
    assert r2gen_clean(report) == want
    assert clean_text(report, "r2gen") == " ".join(want.split())


def test_no_cleaning_only_joins_words():
    assert clean_text("  Heart:\n normal.  ", "none") == "Heart: normal."
    with pytest.raises(ValueError, match="text cleaning"):
        clean_text("x", "other")


def test_caption_is_impression_then_findings():
    assert report_caption("Heart normal.\n\nLungs  clear.", "No acute disease.") == \
        "No acute disease. Heart normal. Lungs clear."
    assert report_caption(None, "Small effusion.") == "Small effusion."
    assert report_caption("Lungs clear.", None) == "Lungs clear."
    assert report_caption(None, None, "The adapter's report.") == "The adapter's report."
    assert report_caption(None, None, "  ") is None


def test_prompts_are_aflocs_with_the_colon_made_a_space():
    pos, neg = convirt_prompts("Pneumonia")
    assert neg == ["no Pneumonia. "]
    assert all(":" not in p and p.startswith("Pneumonia ") for p in pos)
    assert clean_text(pos[0]) == " ".join(pos[0].lower().split()) + " ."


def test_tokenize_without_special_tokens_padded_to_128():
    tok = build_wordpiece(["no pneumonia . small effusion ."], vocab_size=100)
    batch = Tokenize(tok)(["No pneumonia.", "Small effusion"])
    ids = tok.convert_tokens_to_ids(["no", "pneumonia", "."])
    assert batch.input_ids.shape == (2, 128)
    assert batch.input_ids[0].tolist() == ids + [tok.pad_token_id] * 125
    assert batch.attention_mask[0].tolist() == [1, 1, 1] + [0] * 125
    assert batch.input_ids[1, :3].tolist() == tok.convert_tokens_to_ids(["small", "effusion",
                                                                         "."])
    assert tok.cls_token_id not in batch.input_ids.tolist()[0]
    long = Tokenize(tok, max_length=5)(["no pneumonia " * 10])
    assert long.input_ids.shape == (1, 5) and long.attention_mask.sum() == 5
