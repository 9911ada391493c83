"""AFLoc's fundus text augmentation: the paraphrase table, its replacement rule, the synthetic
world's table, `bench data frequent-sentences`, and `bench train afloc` recording the table."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner

from bench.cli.main import cli, main
from bench.errors import DataError
from bench.methods._shared.bert_text import clean_report
from bench.methods.afloc.paraphrase import (
    ParaphraseTable,
    frequent_sentences,
    paraphrase_rng,
)
from bench.methods.afloc.pretrain import PairDataset, PairSet
from bench.registry import get_dataset

TABLE = {
    "_note": "keys starting with _ are notes",
    "No drusen in the macula.": ["The macula is free of drusen.", "No macular drusen."],
    "Clear media.": {"count": 3, "paraphrases": ["The media are clear.", "Ocular media clear."]},
}
SENTS = ["no drusen in the macula", "normal optic disc", "clear media"]


@pytest.fixture
def table(tmp_path) -> ParaphraseTable:
    path = tmp_path / "table.json"
    path.write_text(json.dumps(TABLE))
    return ParaphraseTable.load(path, "faithful")


def _pairs(sentences: list[list[str]]) -> PairSet:
    n = len(sentences)
    return PairSet(np.zeros((n, 256, 256), np.uint8), np.arange(n), sentences,
                   [str(i) for i in range(n)], {})


def _main(args: list[str], capsys) -> tuple[int, str]:
    """Exit code and stderr of `bench ARGS` as the command line runs it (errors: one line)."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


# -- the table and the rule -------------------------------------------------------------------

def test_table_keys_and_paraphrases_are_cleaned_as_training_sentences(table):
    assert table.choices == {
        "no drusen in the macula": ("no drusen in the macula", "the macula is free of drusen",
                                    "no macular drusen"),
        "clear media": ("clear media", "the media are clear", "ocular media clear")}
    d = table.describe()
    assert d["entries"] == 2 and d["paraphrases"] == 4
    assert d["sha256"] == hashlib.sha256(open(table.path, "rb").read()).hexdigest()


def test_replacement_with_a_fixed_seed(table):
    # seed 1: uniform over (original, paraphrases) per matching sentence; "normal optic disc"
    # is not in the table and never changes
    got = {(e, i): table.replace(SENTS, paraphrase_rng(1, e, i)) for e in (0, 1) for i in range(3)}
    assert got == {
        (0, 0): ["no macular drusen", "normal optic disc", "ocular media clear"],
        (0, 1): ["no macular drusen", "normal optic disc", "the media are clear"],
        (0, 2): ["no drusen in the macula", "normal optic disc", "the media are clear"],
        (1, 0): ["no macular drusen", "normal optic disc", "ocular media clear"],
        (1, 1): ["no drusen in the macula", "normal optic disc", "clear media"],
        (1, 2): ["no macular drusen", "normal optic disc", "the media are clear"],
    }


def test_replacement_is_uniform_over_the_original_and_its_paraphrases(table):
    seen = Counter(table.replace(["clear media"], paraphrase_rng(3, 0, i))[0]
                   for i in range(3000))
    assert set(seen) == set(table.choices["clear media"])
    assert all(abs(n / 3000 - 1 / 3) < 0.03 for n in seen.values())


def test_training_captions_are_deterministic_per_seed_and_epoch(table):
    pairs = _pairs([SENTS] * 6)

    def captions(ds: PairDataset, epoch: int) -> list[str]:
        ds.epoch = epoch
        return [ds[i][1] for i in range(len(ds))]

    a = PairDataset(pairs, augment=True, seed=1, paraphrases=table)
    b = PairDataset(pairs, augment=True, seed=1, paraphrases=table)
    # a resumed run sets the epoch straight away; an uninterrupted one steps through 0 and 1
    stepped = [captions(a, 0), captions(a, 1), captions(a, 2)]
    assert captions(b, 2) == stepped[2] and captions(b, 0) == stepped[0]
    assert stepped[0] != stepped[1]  # a new draw each epoch
    # the official sampling draws the same sentences as without a table: same counts
    plain = PairDataset(pairs, augment=True, seed=1)
    assert [c.count(". ") for c in captions(plain, 2)] == [c.count(". ") for c in stepped[2]]
    # full captions (augment off) show the replacement alone
    full = PairDataset(pairs, augment=False, seed=1, paraphrases=table)
    full.epoch = 1
    assert full[1][1] == "no drusen in the macula. normal optic disc. clear media"
    assert full[2][1] == "no macular drusen. normal optic disc. the media are clear"


# -- file errors ------------------------------------------------------------------------------

@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON (line 1, column 2"),
    ('["a list"]', "must be a JSON object"),
    ('{"Clear media.": []}', "entry 'Clear media.': expected a non-empty list"),
    ('{"Clear media.": {"count": 2}}', "entry 'Clear media.': expected a non-empty list"),
    ('{"Clear media.": ["The media are clear.", ""]}',
     "entry 'Clear media.': paraphrase 2 is empty"),
    ('{"Clear media.": [3]}', "entry 'Clear media.': paraphrase 1 is empty or not a string"),
    ('{"Clear media. Normal fundus.": ["Media clear."]}',
     "entry 'Clear media. Normal fundus.': the sentence is not exactly one sentence"),
    ('{"Normal.": ["The fundus is normal."]}', "entry 'Normal.': the sentence is not exactly"),
    ('{"Clear media.": ["Media clear. Fundus normal."]}',
     "entry 'Clear media.': paraphrase 1 ('Media clear. Fundus normal.') is not exactly one"),
    ('{"Clear media.": ["a b"], "Clear media.": ["c d"]}', "entry 'Clear media.' is given twice"),
    ('{"Clear media.": ["a b"], "clear  MEDIA": ["c d"]}',
     "entry 'clear  MEDIA': same sentence after cleaning as entry 'Clear media.'"),
    ('{"_about": "only notes"}', "has no entries"),
])
def test_a_bad_table_is_one_line_naming_file_and_entry(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DataError) as err:
        ParaphraseTable.load(path, "faithful")
    text = str(err.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


def test_a_missing_table_names_the_file(tmp_path):
    with pytest.raises(DataError, match="missing.json: cannot read the paraphrase table"):
        ParaphraseTable.load(tmp_path / "missing.json", "faithful")


# -- the synthetic world's table --------------------------------------------------------------

def _tiny_fundus_train():
    return get_dataset("synthetic-fundus")(split="train", scale="tiny")


def test_the_synthetic_world_writes_a_table_of_its_frequent_sentences():
    ds = _tiny_fundus_train()
    raw = json.loads((ds.root / "paraphrases.json").read_text())
    assert raw["_about"].startswith("SYNTHETIC")
    reports = [r["report"] for r in ds.records]
    assert len(reports) == 32
    entries = {k: v for k, v in raw.items() if not k.startswith("_")}
    assert len(entries) >= 10
    for mode in ("faithful", "corrected"):
        table = ParaphraseTable.load(ds.root / "paraphrases.json", mode)
        cleaned = [set(clean_report(r, mode)) for r in reports]
        for key, value in entries.items():
            (c,) = clean_report(key, mode)
            held = sum(c in sents for sents in cleaned)
            # every key is a sentence of at least 2 training reports (1% of 32, and 2)
            assert held == value["count"] >= 2, key
            assert len(value["paraphrases"]) == 5 and len(table.choices[c]) == 6


# -- bench data frequent-sentences ------------------------------------------------------------

def test_frequent_sentences_of_a_paired_folder(tmp_path, capsys):
    root = tmp_path / "pairs"
    root.mkdir()
    rows = [("a.png", "No drusen in the macula. Clear media.", "train"),
            ("b.png", "Clear media. Optic disc normal. Clear media.", "train"),
            ("c.png", "no drusen  in the MACULA. Optic disc normal.", "train"),
            ("d.png", "Clear media.", "train"),
            ("e.png", "Clear media. Rare sentence here.", "test")]
    with open(root / "pairs.csv", "w", newline="") as f:
        csv.writer(f).writerows([("image", "report", "split"), *rows])
    out = tmp_path / "template.json"
    args = ["data", "frequent-sentences", "--root", str(root), "--top", "2", "--out", str(out)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "2 sentences of 4 train reports" in res.output
    table = json.loads(out.read_text())
    # counted per report after cleaning (case and spacing do not matter), most frequent first,
    # ties by cleaned text, each in its most common written form
    assert [k for k in table if not k.startswith("_")] == ["Clear media.",
                                                            "No drusen in the macula."]
    # faithful cleaning stops a report when its word count hits exactly 5 (the official quirk):
    # report a keeps "no drusen in the macula" only, so "Clear media." counts b and d
    assert table["Clear media."] == {"count": 2, "paraphrases": [""] * 5}
    assert table["No drusen in the macula."]["count"] == 2
    code, err = _main(args, capsys)  # never overwrites a (filled-in) table unasked
    assert code == 2 and err.startswith("error: ") and "pass --force" in err
    assert CliRunner().invoke(cli, args + ["--force"]).exit_code == 0
    # an unfilled template is refused by training, naming the slot
    with pytest.raises(DataError, match="entry 'Clear media.': paraphrase 1 is empty"):
        ParaphraseTable.load(out, "faithful")
    assert frequent_sentences([r[1] for r in rows[:4]], "corrected") == [
        ("Clear media.", 3), ("No drusen in the macula.", 2), ("Optic disc normal.", 2)]


# -- bench train afloc on the synthetic fundus world ------------------------------------------

def test_training_on_synthetic_fundus_records_the_table(tmp_path, capsys):
    table_path = _tiny_fundus_train().root / "paraphrases.json"
    base = ["train", "afloc", "--dataset", "synthetic-fundus", "--dataset-arg", "scale=tiny",
            "--preset", "tiny", "--max-steps", "2", "--epochs", "1", "--device", "cpu",
            "--quiet"]
    res = CliRunner().invoke(cli, base + ["--out", str(tmp_path / "a")],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert f"paraphrases: 16 sentences from {table_path}" in res.output
    settings = json.loads((tmp_path / "a" / "train.json").read_text())["settings"]
    para = settings["paraphrases"]
    assert para["source"] == "dataset folder" and para["path"] == str(table_path)
    assert para["sha256"] == hashlib.sha256(table_path.read_bytes()).hexdigest()
    assert para["entries"] == 16
    res = CliRunner().invoke(cli, base + ["--paraphrases", "none", "--out", str(tmp_path / "b")],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "b" / "train.json").read_text())["settings"][
        "paraphrases"] is None
    bad = tmp_path / "bad.json"
    bad.write_text('{"Clear media.": [""]}')
    code, err = _main(base + ["--paraphrases", str(bad), "--out", str(tmp_path / "c")], capsys)
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"error: {bad}: paraphrase table, entry 'Clear media.': paraphrase 1 "
                          f"is empty")
