"""MedKLIP's released checkpoint: layout, safe loading, the query book and its cache."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from medklip_helpers import bert_folder, official_state, save_release, write_descriptions

from bench.errors import CheckpointError
from bench.methods.medklip import checkpoint as ck
from bench.methods.medklip import queries
from bench.methods.medklip.method import load_medklip
from bench.methods.medklip.names import OBSERVATIONS


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    d = tmp_path_factory.mktemp("medklip")
    path = d / "checkpoint_final.pth"
    state = save_release(path)
    return path, state


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return bert_folder(tmp_path_factory.mktemp("bert") / "bio_clinicalbert")


def test_layout_is_342_module_prefixed_keys(release):
    path, state = release
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"model", "optimizer", "lr_scheduler", "config", "epoch"}
    assert len(raw["model"]) == 342
    assert all(k.startswith("module.") for k in raw["model"])
    assert "module.res_features.6.5.bn3.running_var" in raw["model"]
    assert "module.decoder.layers.3.multihead_attn.in_proj_weight" in raw["model"]
    got = ck.read_official(path)
    assert set(got) == set(state)
    assert all(torch.equal(got[k], state[k]) for k in state)


def test_loads_strictly_with_book(release, bert, tmp_path):
    path, state = release
    desc = tmp_path / "observation explanation.json"
    texts = write_descriptions(desc)
    model, book, _, info = load_medklip(str(path), text_encoder=str(bert),
                                        descriptions=str(desc))
    assert info["key_diff"] == {"missing": 0, "unexpected": 0, "shape": 0}
    own = model.state_dict()
    assert all(torch.equal(own[k], state[k]) for k in state)
    # the book: [CLS] last_hidden_state, max_length 64 padding, in the official order
    from transformers import AutoTokenizer, BertModel

    tok = AutoTokenizer.from_pretrained(bert)
    net = BertModel.from_pretrained(bert, add_pooling_layer=False).eval()
    enc = tok(texts, padding="max_length", max_length=64, truncation=True, return_tensors="pt")
    assert enc["input_ids"].shape == (75, 64)
    with torch.no_grad():
        want = net(**{k: enc[k] for k in ("input_ids", "attention_mask")}).last_hidden_state[:, 0]
    np.testing.assert_allclose(book.numpy(), want.numpy(), rtol=0, atol=1e-5)


def test_released_checkpoint_needs_descriptions(release, bert):
    with pytest.raises(CheckpointError, match="descriptions=PATH"):
        load_medklip(str(release[0]), text_encoder=str(bert))


def test_refuses_a_pickle_that_runs_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"model": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused to load.*(posix|os).system"):
        ck.read_official(path)


def test_names_missing_and_misshaped_keys(tmp_path, bert):
    state = official_state()
    state.pop("module.cl_fc.bias" if "module.cl_fc.bias" in state else "cl_fc.bias")
    state["classifier.weight"] = torch.zeros(3, 256)
    path = tmp_path / "bad.pth"
    save_release(path, state)
    desc = tmp_path / "d.json"
    write_descriptions(desc)
    with pytest.raises(CheckpointError) as err:
        load_medklip(str(path), text_encoder=str(bert), descriptions=str(desc))
    msg = str(err.value)
    assert "1 missing: cl_fc.bias" in msg
    assert "classifier.weight: checkpoint (3, 256) vs model (2, 256)" in msg


def test_mixed_prefix_and_no_model_entry(tmp_path):
    state = official_state()
    mixed = {("module." + k if i else k): v for i, (k, v) in enumerate(state.items())}
    torch.save({"model": mixed}, tmp_path / "mixed.pth")
    with pytest.raises(CheckpointError, match="some keys start with 'module.'"):
        ck.read_official(tmp_path / "mixed.pth")
    torch.save({"weights": 1}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="no 'model' state dict"):
        ck.read_official(tmp_path / "other.pth")


def test_descriptions_json(tmp_path):
    p = tmp_path / "d.json"
    texts = write_descriptions(p, misspell=True)  # the RSNA/CXR14 copies' 'eumonia'
    assert queries.load_descriptions(p) == texts
    import json

    keys = list(OBSERVATIONS)
    keys[8], keys[9] = keys[9], keys[8]
    p.write_text(json.dumps({k: "x" for k in keys}))
    with pytest.raises(CheckpointError, match="entry 8: 'opacity' \\(expected 'effusion'\\)"):
        queries.load_descriptions(p)


def test_book_cache_computed_once_reused_and_invalidated(tmp_path):
    ckpt = tmp_path / "checkpoint_final.pth"
    ckpt.write_bytes(b"x")
    calls = []

    def compute(texts):
        calls.append(list(texts))
        return torch.full((len(texts), 4), float(len(calls)))

    a = ["one", "two"]
    book, info = queries.cached_book(ckpt, {"source": "enc", "content": "h1"}, a, compute)
    assert info["query_book"] == "computed" and len(calls) == 1
    files = list(tmp_path.glob("*.query-book-*.safetensors"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp*"))
    again, info = queries.cached_book(ckpt, {"source": "enc", "content": "h1"}, a, compute)
    assert info["query_book"] == "cached" and len(calls) == 1 and torch.equal(again, book)
    # another text encoder, other descriptions: recomputed, each under its own key
    other, info = queries.cached_book(ckpt, {"source": "enc", "content": "h2"}, a, compute)
    assert info["query_book"] == "computed" and len(calls) == 2 and other[0, 0] == 2.0
    queries.cached_book(ckpt, {"source": "enc", "content": "h1"}, ["one", "three"], compute)
    assert len(calls) == 3
    assert len(list(tmp_path.glob("*.query-book-*.safetensors"))) == 3


def test_load_reuses_cache_beside_checkpoint(release, bert, tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_final.pth"
    path.write_bytes(release[0].read_bytes())
    desc = tmp_path / "d.json"
    write_descriptions(desc)
    _, book1, _, info1 = load_medklip(str(path), text_encoder=str(bert), descriptions=str(desc))
    assert info1["query_book"] == "computed"
    calls = []
    orig = queries.embed_texts
    monkeypatch.setattr(queries, "embed_texts", lambda *a, **k: calls.append(1) or orig(*a, **k))
    _, book2, _, info2 = load_medklip(str(path), text_encoder=str(bert), descriptions=str(desc))
    assert info2["query_book"] == "cached" and not calls and torch.equal(book1, book2)
    write_descriptions(desc, texts=[f"changed {n}" for n in OBSERVATIONS])
    _, book3, _, info3 = load_medklip(str(path), text_encoder=str(bert), descriptions=str(desc))
    assert info3["query_book"] == "computed" and calls and not torch.equal(book1, book3)
