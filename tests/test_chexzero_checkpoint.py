"""CheXzero's released layout (OpenAI-CLIP ViT-B/32, 302 keys, mixed fp16/fp32) loads strictly
into open_clip's ViT-B-32-quickgelu; other files are refused with what is wrong; the plain
(GELU) ViT-B-32 is never built; ensembles are read in the official order."""

from __future__ import annotations

import os

import pytest
import torch
from chexzero_helpers import openai_dtypes, save_small, small_clip, small_config

from bench.errors import CheckpointError
from bench.methods.chexzero import checkpoint as ck
from bench.methods.chexzero import model as cm
from bench.methods.chexzero.method import CheXzeroMethod


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A CheXzero-format file: the ViT-B/32 state dict with convert_weights' dtypes."""
    import open_clip

    torch.manual_seed(0)
    with cm._quiet_open_clip():
        ref = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None)
    state = openai_dtypes(ref.state_dict())
    path = tmp_path_factory.mktemp("released") / "best_64_5e-05_original_22000_0.864.pt"
    torch.save(state, path)
    ref.load_state_dict(state)  # the weights as the fp16 file holds them, in fp32
    return path, state, ref.eval()


def test_the_released_layout_loads_strictly_and_runs_like_the_source(released, monkeypatch):
    import open_clip

    path, state, ref = released
    assert len(state) == 302
    assert ck.dtype_counts(state) == {"float16": 195, "float32": 107}
    assert sum(v.numel() for v in state.values()) == 151_277_313
    built = []
    real = open_clip.create_model
    monkeypatch.setattr(open_clip, "create_model",
                        lambda name, *a, **k: built.append(name) or real(name, *a, **k))
    method = CheXzeroMethod(checkpoint=str(path))
    assert built == ["ViT-B-32-quickgelu"]  # never the plain (GELU) ViT-B-32
    (model,) = method.models
    got = model.state_dict()
    assert set(got) == set(state)
    for k, v in state.items():
        assert torch.equal(got[k], v.float()), k
    member = method.config()["members"][0]
    assert member["keys"] == 302 and member["dtypes"] == {"float16": 195, "float32": 107}
    assert member["arch"] == "ViT-B-32-quickgelu"
    x = torch.randn(2, 3, 224, 224)
    tokens = method.tokenizer(["pleural effusion", "no pleural effusion"])
    with torch.no_grad():
        glob, patches = cm.image_features(model, x)
        torch.testing.assert_close(glob, ref.encode_image(x), rtol=0, atol=0)
        assert patches.shape == (2, 7, 7, 512)
        torch.testing.assert_close(method.encode_texts(["pleural effusion"], "class")[:, 0],
                                   cm.unit(ref.encode_text(tokens[:1])), rtol=0, atol=0)
    method.close()


def test_a_missing_key_is_named(released, tmp_path):
    _, state, _ = released
    bad = {k: v for k, v in state.items() if k != "visual.ln_post.bias"}
    torch.save(bad, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"1 missing: visual\.ln_post\.bias"):
        CheXzeroMethod(checkpoint=str(tmp_path / "missing.pt"))


def test_a_vit_b16_checkpoint_is_refused_naming_its_shapes(released, tmp_path):
    _, state, _ = released
    b16 = dict(state)  # ViT-B/16: 16 x 16 patches, 14 x 14 + 1 positions
    b16["visual.conv1.weight"] = torch.zeros(768, 3, 16, 16, dtype=torch.float16)
    b16["visual.positional_embedding"] = torch.zeros(197, 768)
    torch.save(b16, tmp_path / "b16.pt")
    with pytest.raises(CheckpointError) as err:
        CheXzeroMethod(checkpoint=str(tmp_path / "b16.pt"))
    msg = str(err.value)
    assert "2 shape" in msg
    assert "visual.conv1.weight: checkpoint (768, 3, 16, 16) vs model (768, 3, 32, 32)" in msg
    assert "visual.positional_embedding: checkpoint (197, 768) vs model (50, 768)" in msg


class _Payload:
    def __reduce__(self):
        return (os.getcwd, ())  # harmless if it ever ran; it must not be looked up at all


def test_a_pickle_naming_another_global_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"visual.proj": torch.zeros(2), "x": _Payload()}, path)
    with pytest.raises(CheckpointError, match="getcwd"):
        CheXzeroMethod(checkpoint=str(path))


def test_other_files_are_refused_with_what_they_are(tmp_path):
    torch.save({"model": {"a": 1}}, tmp_path / "wrapped.pt")
    with pytest.raises(CheckpointError, match="expected a bare state dict.*'model'"):
        ck.read_official(tmp_path / "wrapped.pt")
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "ViT-B-32.pt")
    with pytest.raises(CheckpointError, match="TorchScript archive"):
        ck.read_official(tmp_path / "ViT-B-32.pt")


def test_plain_vit_b32_is_refused_and_would_be_silently_wrong():
    with pytest.raises(CheckpointError, match="QuickGELU"):
        cm.build("ViT-B-32")
    gelu = small_clip(quick_gelu=False)
    with pytest.raises(CheckpointError, match="not OpenAI CLIP's QuickGELU"):
        cm.check_quickgelu(gelu)
    # why: the same state dict loads into the GELU model without a word, and answers otherwise
    quick = small_clip(quick_gelu=True)
    gelu.load_state_dict(quick.state_dict(), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert not torch.allclose(quick.encode_image(x), gelu.encode_image(x), atol=1e-4)


def test_harness_checkpoints_round_trip(tmp_path):
    model = save_small(tmp_path / "a.safetensors", seed=3)
    method = CheXzeroMethod(checkpoint=str(tmp_path / "a.safetensors"))
    got = method.models[0].state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(got[k], v), k
    assert method.config()["members"][0]["format"] == "afloc-bench safetensors"
    assert method.config()["random_init"] is False


def test_a_plain_safetensors_of_the_openai_keys_is_read_as_released(tmp_path):
    from safetensors.torch import save_file

    state = openai_dtypes(small_clip().state_dict())
    save_file(state, tmp_path / "open_clip_model.safetensors")
    got = ck.read_official(tmp_path / "open_clip_model.safetensors")
    assert set(got) == set(state) and all(torch.equal(got[k], state[k]) for k in state)


def test_ensemble_paths_are_sorted_as_officially(tmp_path):
    folder = tmp_path / "chexzero_weights"
    folder.mkdir()
    for name in ("best_128_0.0002_original_15000_0.859.pt", "best_64_5e-05_original_22000_0.864.pt",
                 "best_10_1e-4.pth", "notes.txt"):
        (folder / name).write_bytes(b"x")
    names = [p.name for p in ck.checkpoint_paths(str(folder))]
    assert names == sorted(["best_128_0.0002_original_15000_0.859.pt",
                            "best_64_5e-05_original_22000_0.864.pt", "best_10_1e-4.pth"])
    a, b = folder / "best_64_5e-05_original_22000_0.864.pt", folder / "best_10_1e-4.pth"
    assert ck.checkpoint_paths(f"{a},{b}") == [b, a]
    assert ck.checkpoint_paths([str(a), str(b)]) == [b, a]
    with pytest.raises(CheckpointError, match="does not exist"):
        ck.checkpoint_paths(str(tmp_path / "nope.pt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no .pt or .pth"):
        ck.checkpoint_paths(str(tmp_path / "empty"))


def test_an_ensemble_counts_by_each_members_content(tmp_path):
    save_small(tmp_path / "a.safetensors", seed=1)
    save_small(tmp_path / "b.safetensors", seed=2)
    value = f"{tmp_path / 'b.safetensors'},{tmp_path / 'a.safetensors'}"
    ident = CheXzeroMethod.weights_identity({"checkpoint": value})
    assert [n for n, _ in ident["ensemble"]] == ["a.safetensors", "b.safetensors"]
    save_small(tmp_path / "b.safetensors", seed=5)
    assert CheXzeroMethod.weights_identity({"checkpoint": value}) != ident
    assert CheXzeroMethod.weights_identity({"checkpoint": str(tmp_path / "a.safetensors")}) \
        is None  # one file: the runner hashes it
    assert small_config()["embed_dim"] == 32


def test_the_paper_preset_starts_from_the_given_openai_weights(released):
    from bench.methods.chexzero.train import initial_model

    path, state, _ = released
    model, where = initial_model("paper", str(path))
    assert str(path) in where
    got = model.state_dict()
    assert all(torch.equal(got[k], v.float()) for k, v in state.items())
    assert all(p.dtype == torch.float32 for p in model.parameters())
