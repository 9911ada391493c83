"""BioViL's pixels, maps, prompts and zero-shot rule against independent computations: PIL and
torchvision calls written out, scipy's Gaussian and hand-written interpolation, hand-computed
scores; and what the protocols do with the NaN outside the crop."""

from __future__ import annotations

import math
from math import ceil, floor

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from scipy import ndimage

from bench.errors import UsageError
from bench.eval.protocols.afloc import map_to_afloc_frame, margin_px, row_metrics
from bench.imaging.geometry import ORIGINAL, Frame, map_to_original
from bench.imaging.recipes import read_himl_load_image
from bench.methods.biovil import imaging
from bench.methods.biovil.method import (
    PNEUMONIA_PROMPTS,
    BioViLMethod,
    biovil_prompts,
    zero_shot_probs,
)
from bench.methods.biovil.text import Tokenize, clean_prompt
from bench.types import Query, Sample


def _sample(image, sid="s", path="x.png"):
    return Sample(id=sid, image=image, meta={"path": path})


def _himl_reference(arr: np.ndarray, resize=512, crop=480) -> torch.Tensor:
    """hi-ml's load_image + create_chest_xray_transform_for_inference, written out."""
    x = arr.astype(float)
    x -= x.min()
    x /= x.max()
    x *= 255
    pil = Image.fromarray(x.astype(np.uint8)).convert("L")
    t = T.Compose([T.Resize(resize), T.CenterCrop(crop), T.ToTensor()])(pil)
    return t.repeat(3, 1, 1)


@pytest.mark.parametrize("hw", [(601, 517), (523, 700), (480, 481)])
def test_recipe_is_himls_transform_on_odd_sizes(hw):
    rng = np.random.default_rng(hw[0])
    img = rng.integers(13, 201, size=hw).astype(np.uint8)  # not spanning 0..255: remapped
    got = imaging.EVAL.tensor([_sample(img)])[0]
    assert tuple(got.shape) == (3, 480, 480)
    assert torch.equal(got, _himl_reference(img))


def test_reader_remaps_every_file_type():
    rng = np.random.default_rng(0)
    u16 = rng.integers(1000, 40000, size=(37, 53)).astype(np.uint16)
    want = ((u16.astype(float) - u16.min()) / (u16.astype(float) - u16.min()).max() * 255)
    assert np.array_equal(read_himl_load_image(_sample(u16)), want.astype(np.uint8))
    rgb = rng.integers(20, 230, size=(21, 19, 3)).astype(np.uint8)
    x = rgb.astype(float) - rgb.min()
    x = (x / x.max() * 255).astype(np.uint8)
    want_rgb = np.asarray(Image.fromarray(x).convert("L"))
    assert np.array_equal(read_himl_load_image(_sample(rgb, path="x.jpg")), want_rgb)
    flat = np.full((5, 5), 7, np.uint8)  # max - min = 0: hi-ml divides by zero; here zeros
    assert not read_himl_load_image(_sample(flat)).any()


@pytest.mark.parametrize("hw,side,pads", [
    ((600, 500), 468, (16, 16, 66, 66)),  # int(480 * 500 / 512) = 468
    ((601, 517), 484, (16, 17, 58, 59)),  # 248160 / 512 = 484.69 -> 484; margins 33, 117
    ((523, 700), 490, (105, 105, 16, 17)),  # 251040 / 512 = 490.3 -> 490; margins 210, 33
])
def test_nan_padding_geometry(hw, side, pads):
    assert imaging.footprint(hw) == side
    grid = np.arange(15 * 15, dtype=np.float32).reshape(15, 15)
    m = imaging.to_image_size(grid, hw)
    assert m.shape == hw and m.dtype == np.float32
    left, right, top, bottom = pads
    valid = ~np.isnan(m)
    rows, cols = np.where(valid.any(1))[0], np.where(valid.any(0))[0]
    assert (rows[0], hw[0] - 1 - rows[-1]) == (top, bottom)
    assert (cols[0], hw[1] - 1 - cols[-1]) == (left, right)
    assert valid.sum() == side * side  # a full square, nothing NaN inside it


def _nearest(grid: np.ndarray, side: int) -> np.ndarray:
    """torch's legacy 'nearest': source index floor(dst * in / out)."""
    n = grid.shape[0]
    idx = np.minimum(np.floor(np.arange(side) * (n / side)).astype(int), n - 1)
    return grid[np.ix_(idx, idx)]


def _bilinear(grid: np.ndarray, side: int) -> np.ndarray:
    """align_corners=False: source (dst + 0.5) * in / out - 0.5, clamped at 0."""
    n = grid.shape[0]
    src = np.maximum((np.arange(side) + 0.5) * (n / side) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(int), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    f = src - i0
    g = grid.astype(np.float64)
    rows = g[i0] * (1 - f)[:, None] + g[i1] * f[:, None]
    return rows[:, i0] * (1 - f)[None] + rows[:, i1] * f[None]


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_map_against_an_independent_computation(interpolation):
    rng = np.random.default_rng(3)
    patch = rng.normal(size=(4, 5, 5)).astype(np.float32)
    text = rng.normal(size=(2, 4)).astype(np.float32)
    hw = (61, 47)  # footprint int(480 * 47 / 512) = 44; margins w 3 (1, 2), h 17 (8, 9)
    got = imaging.similarity_maps(torch.from_numpy(patch), torch.from_numpy(text), hw,
                                  interpolation=interpolation)
    p = patch / np.linalg.norm(patch, axis=0, keepdims=True)
    for q in range(2):
        t = text[q] / np.linalg.norm(text[q])
        cos = np.einsum("dhw,d->hw", p, t).astype(np.float32)
        smooth = ndimage.gaussian_filter(cos, sigma=1.5)
        side = 44
        inner = _nearest(smooth, side) if interpolation == "nearest" else _bilinear(smooth, side)
        want = np.full(hw, np.nan)
        want[8:8 + side, 1:1 + side] = inner
        assert np.array_equal(np.isnan(got[q]), np.isnan(want))
        np.testing.assert_allclose(got[q][8:52, 1:45], inner, rtol=0, atol=2e-6)


def test_zero_shot_on_a_hand_computed_case():
    """Prompts are averaged *unnormalised*: pos [3, 0], [0, 1] -> [1.5, 0.5]; neg [-1, 0],
    [0, -3] -> [-0.5, -1.5]; image [1, 1]. cos = +-2 / sqrt(5); P = 1 / (1 + e^(-4/sqrt(5)))."""
    m = BioViLMethod()  # tiny random init; only its text hook is replaced
    table = {"p1": [3.0, 0.0], "p2": [0.0, 1.0], "n1": [-1.0, 0.0], "n2": [0.0, -3.0]}
    m.encode_texts = lambda texts, kind: torch.tensor([table[t] for t in texts])
    m.class_prompts = lambda pathology: (["p1", "p2"], ["n1", "n2"])
    pos, neg = m.class_vectors("x")
    c = 2 / math.sqrt(5)
    torch.testing.assert_close(pos, torch.tensor([1.5, 0.5]) / math.sqrt(2.5))
    p = zero_shot_probs(torch.tensor([[1.0, 1.0]]), pos[None], neg[None])
    assert p.shape == (1, 1)
    assert p[0, 0] == pytest.approx(1 / (1 + math.exp(-2 * c)), abs=1e-6)
    # averaging normalised embeddings (not the package's rule) would give cos 1 here
    assert float(torch.nn.functional.normalize(torch.tensor([1.0, 1.0]), dim=0) @ pos) \
        == pytest.approx(c, abs=1e-6)


def test_prompts_and_text_clean_up():
    assert biovil_prompts("Pneumonia") == PNEUMONIA_PROMPTS
    assert PNEUMONIA_PROMPTS[0][0] == "Findings consistent with pneumonia"
    assert PNEUMONIA_PROMPTS[1][3] == "No signs of pneumonia"
    pos, neg = biovil_prompts("Atelectasis")
    assert neg == ["no Atelectasis."] and all(p == p.strip() for p in pos)
    assert clean_prompt(neg[0]) == "no Atelectasis"
    assert clean_prompt("effusion?!. ") == "effusion?!. "  # only a trailing !?. run goes
    assert clean_prompt("effusion!?..") == "effusion"
    m = BioViLMethod()
    tok = Tokenize(m.tokenizer, 128)
    got = tok(["small effusion.", "no pneumonia at the left lower lobe!"])
    want = m.tokenizer(["small effusion", "no pneumonia at the left lower lobe"],
                       add_special_tokens=True, padding="longest", return_tensors="pt")
    assert torch.equal(got.input_ids, want["input_ids"])
    assert torch.equal(got.attention_mask, want["attention_mask"])
    assert got.input_ids[0, 0] == m.tokenizer.cls_token_id
    tok(["[MASK] effusion"])  # allowed
    with pytest.raises(UsageError, match=r"special token \[SEP\]"):
        tok(["effusion [SEP] pneumonia"])
    with pytest.raises(UsageError, match="longer than the model's 4 positions"):
        Tokenize(m.tokenizer, 4)(["no pneumonia at the left lower lobe"])


def test_method_map_is_the_engines_map_in_the_original_frame():
    m = BioViLMethod()
    assert m.frame == Frame(ORIGINAL)
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, size=(301, 259)).astype(np.uint8)
    s = _sample(img)
    maps = m.localize([s], [[Query("q", "Effusion", "small left pleural effusion")]])[0]
    assert maps[0].shape == (301, 259)
    x = m.recipes["localize"].tensor([s])
    with torch.no_grad():
        patch = m.model.image_features(x)["patch"][0]
        emb = m.encode_texts(["small left pleural effusion"], "query")
    cfg = m.model.cfg
    want = imaging.similarity_maps(patch, emb, (301, 259), cfg.resize, cfg.crop)[0]
    np.testing.assert_array_equal(np.isnan(maps[0]), np.isnan(want))
    np.testing.assert_allclose(maps[0], want, atol=1e-6, equal_nan=True)
    side = int(cfg.crop * 259 / cfg.resize)
    assert (~np.isnan(maps[0])).sum() == side * side
    probs = m.classify([s], ["Pneumonia", "Atelectasis"])
    assert probs.shape == (1, 2) and ((probs > 0) & (probs < 1)).all()


def test_the_afloc_protocol_scores_only_the_pixels_the_crop_saw():
    """The map reaches the 224 letterbox bilinearly (a NaN neighbour makes a pixel NaN), then
    the 14-px margin; min-max, thresholds, IoU/Dice and CNR use only the non-NaN pixels."""
    hw = (600, 500)
    grid = np.linspace(-1, 1, 225, dtype=np.float32).reshape(15, 15)
    m = imaging.to_image_size(grid, hw)
    frame = Frame(ORIGINAL)
    assert np.array_equal(np.isnan(map_to_original(m, frame, hw)), np.isnan(m))
    h224 = map_to_afloc_frame(m, frame, hw)
    # letterbox 224 x 186 (left pad 19); the crop's 468 columns from 16 map to about 7..181
    nan_cols = np.isnan(h224).all(0)
    assert nan_cols[:19 + 6].all() and not nan_cols[19 + 8:19 + 178].any()
    gt = np.zeros((224, 224), np.uint8)
    gt[100:120, 100:120] = 1
    row = row_metrics(h224, gt)
    a, b = margin_px()
    cut = h224.copy()
    cut[:a], cut[224 - b:], cut[:, :a], cut[:, 224 - b:] = np.nan, np.nan, np.nan, np.nan
    assert row["n_pixels"] == int((~np.isnan(cut)).sum()) < 196 * 196
    assert np.isfinite(row["cnr"]) and 0 <= row["iou@0.1"] <= 1


def test_padding_uses_floor_then_ceil():
    grid = np.ones((3, 3), np.float32)
    m = imaging.to_image_size(grid, (11, 10), resize=10, crop=7)  # side int(7 * 10 / 10) = 7
    valid = ~np.isnan(m)
    mw, mh = 10 - 7, 11 - 7
    assert not valid[:, :floor(mw / 2)].any() and not valid[:, 10 - ceil(mw / 2):].any()
    assert not valid[:floor(mh / 2)].any() and not valid[11 - ceil(mh / 2):].any()
    assert valid[floor(mh / 2):11 - ceil(mh / 2), floor(mw / 2):10 - ceil(mw / 2)].all()
