"""AFLoc's text encoder (Extended Data Table 7): a BERT-family encoder from a local folder
(`--text-encoder`), refused in one line when AFLoc's text side cannot read it exactly, and the
tiny preset's from-scratch BERT at another size (`--text-layers` / `--text-width`); both travel
in the checkpoint, so `bench run` reloads them without the folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from afloc_helpers import REPORTS, PairsDataset, run_trained
from click.testing import CliRunner
from safetensors.torch import load_file

from bench.cli.main import cli
from bench.errors import CheckpointError, UsageError
from bench.methods._shared.bert_text import TextProcessor, clean_query
from bench.methods._shared.encoders import (
    TINY_BERT,
    load_pretrained_text,
    load_wordpiece_encoder,
    tiny_bert,
)
from bench.methods.afloc import presets
from bench.methods.afloc.method import AFLocMethod
from bench.registry import DATASETS

QUERY = "Opacity in the left lower lung. Small pleural effusion."
LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789"


def write_vocab(path: Path) -> Path:
    """A WordPiece vocabulary covering the test reports: BERT's specials, the reports' words,
    every letter and digit and its "##" continuation (nothing falls to [UNK])."""
    words = sorted({w.strip(".,").lower() for r in REPORTS for w in r.split()} - {""})
    vocab = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "-"] + words
             + list(LETTERS) + ["##" + c for c in LETTERS])
    path.write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    return path


def encoder_folder(tmp_path: Path, kind: str, layers: int = 4, positions: int = 128) -> Path:
    """A randomly initialised encoder of `kind` with its tokenizer, saved as a user's folder."""
    import transformers as tf

    folder = tmp_path / f"{kind}-encoder"
    vocab = write_vocab(tmp_path / f"{kind}-vocab.txt")
    n = len(vocab.read_text().split())
    torch.manual_seed(0)
    if kind == "bert":
        cfg: Any = tf.BertConfig(vocab_size=n, hidden_size=32, num_hidden_layers=layers,
                                 num_attention_heads=2, intermediate_size=64,
                                 max_position_embeddings=positions)
        model, tok = tf.BertModel(cfg), tf.BertTokenizerFast(str(vocab))
    elif kind == "electra":
        cfg = tf.ElectraConfig(vocab_size=n, embedding_size=16, hidden_size=32,
                               num_hidden_layers=layers, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=positions)
        model, tok = tf.ElectraModel(cfg), tf.ElectraTokenizerFast(str(vocab))
    elif kind == "distilbert":
        cfg = tf.DistilBertConfig(vocab_size=n, dim=32, n_layers=layers, n_heads=2,
                                  hidden_dim=64, max_position_embeddings=positions)
        model, tok = tf.DistilBertModel(cfg), tf.DistilBertTokenizerFast(str(vocab))
    elif kind == "roberta":
        merges = tmp_path / "merges.txt"
        merges.write_text("#version: 0.2\n")
        bpe = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>", "\u0120"]
                                          + list(LETTERS))}
        (tmp_path / "bpe.json").write_text(json.dumps(bpe))
        cfg = tf.RobertaConfig(vocab_size=len(bpe), hidden_size=32, num_hidden_layers=layers,
                               num_attention_heads=2, intermediate_size=64,
                               max_position_embeddings=positions)
        model = tf.RobertaModel(cfg)
        tok = tf.RobertaTokenizerFast(str(tmp_path / "bpe.json"), str(merges))
    else:
        raise ValueError(kind)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def train(tmp_path: Path, out: Path, *extra: str) -> Any:
    DATASETS.add("synthetic-test-pairs", PairsDataset)
    return CliRunner().invoke(cli, [
        "train", "afloc", "--dataset", "synthetic-test-pairs", "--root", str(tmp_path),
        "--preset", "tiny", "--levels", "sentence,report", "--batch-size", "8",
        "--max-steps", "1", "--epochs", "1", "--bn-recalibration", "0", "--out", str(out),
        "--device", "cpu", "--quiet", *extra])


# -- the from-scratch sizes ------------------------------------------------------------------

def test_tiny_bert_sizes_keep_the_default_proportions():
    assert tiny_bert(4, 64) == TINY_BERT  # the default tiny preset, unchanged
    assert tiny_bert(8, 128) == {**TINY_BERT, "num_hidden_layers": 8, "hidden_size": 128,
                                 "num_attention_heads": 4, "intermediate_size": 256}
    for layers, width in ((0, 64), (4, 48), (4, 16)):
        with pytest.raises(ValueError, match="multiple of 32"):
            tiny_bert(layers, width)


def test_text_options_are_refused_where_they_size_nothing():
    assert presets.text_source("tiny", None, None, None) is None  # from scratch
    assert presets.text_source("tiny", "/x", None, None) == "/x"
    assert presets.text_source("paper", None, None, None) == presets.DEFAULT_TEXT_ENCODER
    assert presets.text_source("paper", "/x", None, None) == "/x"
    with pytest.raises(UsageError, match="the paper preset loads --text-encoder"):
        presets.text_source("paper", None, 8, None)
    with pytest.raises(UsageError, match="give one or the other"):
        presets.text_source("tiny", "/x", None, 128)
    with pytest.raises(UsageError, match="at least 4 layers"):
        presets.tiny_text_bert(3, 64)
    assert presets.tiny_text_bert(None, 128)["num_hidden_layers"] == 4


def test_a_second_from_scratch_size_trains_records_and_reloads(tmp_path):
    out = tmp_path / "run"
    res = train(tmp_path, out, "--text-layers", "5", "--text-width", "96")
    assert res.exit_code == 0, res.output
    info = json.loads((out / "train.json").read_text())
    assert info["settings"]["text_size"] == "5x96"
    assert info["settings"]["text_encoder"] == "from scratch"
    assert info["request"]["method_options"]["text_layers"] == 5
    bert = info["model"]["bert"]
    assert (bert["num_hidden_layers"], bert["hidden_size"], bert["num_attention_heads"],
            bert["intermediate_size"]) == (5, 96, 3, 192)
    state = load_file(out / "best.safetensors")
    assert state["text_encoder.model.encoder.layer.4.output.dense.weight"].shape == (96, 192)
    assert "text_encoder.model.encoder.layer.5.output.dense.weight" not in state
    assert state["img_encoder.global_embedder.weight"].shape[0] == 96  # D follows the text

    m = AFLocMethod(checkpoint=str(out / "best.safetensors"))
    cfg = m.model.text_encoder.model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (5, 96, 3)
    assert m.config()["text_size"] == "5x96" and m.config()["text_encoder"] is None
    assert m.encode_texts([QUERY], "report").shape == (1, 96)


def test_the_default_size_records_4x64(tmp_path):
    out = tmp_path / "run"
    res = train(tmp_path, out)
    assert res.exit_code == 0, res.output
    settings = json.loads((out / "train.json").read_text())["settings"]
    assert (settings["text_size"], settings["text_encoder"]) == ("4x64", "from scratch")


# -- a pretrained encoder from a local folder ------------------------------------------------

@pytest.mark.parametrize("kind, model_class", [("bert", "BertModel"),
                                               ("electra", "ElectraModel"),
                                               ("distilbert", "DistilBertModel")])
def test_a_local_folder_trains_and_reloads_without_the_folder(tmp_path, kind, model_class):
    folder = encoder_folder(tmp_path, kind)
    out = tmp_path / "run"
    res = train(tmp_path, out, "--text-encoder", str(folder))
    assert res.exit_code == 0, res.output
    info = json.loads((out / "train.json").read_text())
    assert info["settings"]["text_encoder"] == str(folder)
    assert info["settings"]["text_size"] == "4x32"
    assert info["model"]["text_encoder"] == str(folder)
    assert info["model"]["bert"]["model_type"] == kind

    # what the trained weights give, computed with the folder's own classes: the folder's
    # model with the checkpoint's text weights put back, and the folder's tokenizer
    state = load_file(out / "best.safetensors")
    prefix = "text_encoder.model."
    reference, tok = load_pretrained_text(str(folder))
    reference.load_state_dict({k[len(prefix):]: v for k, v in state.items()
                               if k.startswith(prefix)})
    reference.eval()
    from bench.methods._shared.bert_text import TextEncoder

    enc = TextEncoder({}, 4, bert=reference).eval()
    with torch.no_grad():
        expected = enc(TextProcessor(tok, "faithful", 97).encode([clean_query(QUERY)]))["report"]
    ids = tok(clean_query(QUERY))["input_ids"]

    shutil.rmtree(folder)  # bench run must not need it
    m = AFLocMethod(checkpoint=str(out / "best.safetensors"))
    assert type(m.model.text_encoder.model).__name__ == model_class
    assert m.tokenizer(clean_query(QUERY))["input_ids"] == ids
    assert torch.equal(m.encode_texts([QUERY], "report"), expected.float())
    assert m.model.text_encoder.token_types == (kind != "distilbert")


def test_bench_run_reloads_a_folder_trained_checkpoint_without_the_folder(tmp_path, capsys):
    folder = encoder_folder(tmp_path, "bert")
    out = tmp_path / "run"
    res = train(tmp_path, out, "--text-encoder", str(folder))
    assert res.exit_code == 0, res.output
    shutil.rmtree(folder)
    info = run_trained("afloc", out / "best.safetensors", tmp_path, capsys)
    assert info["config"]["text_encoder"] == str(folder)  # where it came from, not read again
    assert info["config"]["text_size"] == "4x32"


@pytest.mark.parametrize("kind, layers, positions, why", [
    ("roberta", 4, 128, "(model type roberta) cannot be used: not a BERT-family encoder AFLoc's "
                        "text side reads (supported model types: bert, distilbert, electra)"),
    ("bert", 2, 128, "(model type bert) cannot be used: 2 hidden layers; AFLoc sums the last 4"),
    ("bert", 4, 64, "(model type bert) cannot be used: 64 positions; AFLoc's captions take 97 "
                    "tokens"),
])
def test_what_cannot_be_read_exactly_is_refused_in_one_line(tmp_path, kind, layers, positions,
                                                            why):
    folder = encoder_folder(tmp_path, kind, layers, positions)
    with pytest.raises(CheckpointError) as err:
        load_wordpiece_encoder(str(folder), 4, 97)
    assert str(err.value) == f"text encoder {str(folder)!r} {why}"


def test_a_bert_with_a_bpe_tokenizer_is_refused(tmp_path):
    bert = encoder_folder(tmp_path, "bert")
    roberta = encoder_folder(tmp_path, "roberta")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (bert / name).unlink()
        shutil.copy(roberta / name, bert / name)
    for name in ("vocab.json", "merges.txt"):
        if (roberta / name).exists():
            shutil.copy(roberta / name, bert / name)
    with pytest.raises(CheckpointError, match=r"\(model type bert\) cannot be used: its "
                       r"tokenizer is BPE, not WordPiece with '##' continuations"):
        load_wordpiece_encoder(str(bert), 4, 97)


def test_the_cli_refusal_is_one_line_naming_the_folder(tmp_path, capsys):
    from bench.cli.main import main as bench_main

    DATASETS.add("synthetic-test-pairs", PairsDataset)
    folder = encoder_folder(tmp_path, "roberta")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        bench_main(["train", "afloc", "--dataset", "synthetic-test-pairs", "--root",
                    str(tmp_path), "--preset", "tiny", "--out", str(tmp_path / "run"),
                    "--device", "cpu", "--quiet", "--text-encoder", str(folder)])
    err = capsys.readouterr().err
    assert exit_.value.code == 1
    assert err.count("\n") == 1 and str(folder) in err and "(model type roberta)" in err


# -- the peers' text encoders ------------------------------------------------------------------

def bench_train_error(tmp_path: Path, capsys, method: str, *extra: str) -> str:
    from bench.cli.main import main as bench_main

    DATASETS.add("synthetic-test-pairs", PairsDataset)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        bench_main(["train", method, "--dataset", "synthetic-test-pairs", "--root",
                    str(tmp_path), "--out", str(tmp_path / "run"), "--device", "cpu",
                    "--quiet", *extra])
    err = capsys.readouterr().err
    assert exit_.value.code != 0 and err.count("\n") == 1
    return err


@pytest.mark.parametrize("method", ["gloria", "convirt", "biovil", "medklip"])
def test_a_peers_tiny_preset_refuses_a_text_encoder_it_would_not_read(tmp_path, capsys, method):
    folder = encoder_folder(tmp_path, "bert")
    err = bench_train_error(tmp_path, capsys, method, "--preset", "tiny",
                            "--text-encoder", str(folder))
    assert err == (f"error: bench train {method}: --text-encoder is read by the paper preset; "
                   "the tiny preset trains its text encoder from scratch\n")
    assert not (tmp_path / "run" / "best.safetensors").exists()


def test_gloria_refuses_an_encoder_its_text_side_cannot_read(tmp_path, capsys):
    folder = encoder_folder(tmp_path, "roberta")
    err = bench_train_error(tmp_path, capsys, "gloria", "--preset", "paper",
                            "--text-encoder", str(folder))
    assert (f"text encoder {str(folder)!r} (model type roberta) cannot be used: not a "
            "BERT-family encoder GLoRIA's text side reads") in err
