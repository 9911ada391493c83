"""The `afloc` method: heatmap recipe, zero-shot scoring, prompts, query cache, registry."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from afloc_helpers import synthetic_sample
from scipy import ndimage

from bench.errors import UsageError
from bench.imaging.geometry import Frame, to_frame
from bench.methods.afloc.method import (
    AFLocMethod,
    heatmap_from_grid,
    query_vectors,
    zero_shot_probs,
)
from bench.methods.afloc.prompts import cxr_prompts, localization_prompt
from bench.registry import get_method
from bench.types import Query


def test_heatmap_recipe_matches_independent_computation():
    rng = np.random.default_rng(0)
    grid = rng.normal(size=(19, 19)).astype(np.float32)
    got = heatmap_from_grid(grid, 224)
    # independent: scipy gaussian (mode reflect, truncate 4) then cv2 bilinear (half-pixel
    # centres, the same convention as align_corners=False when upsampling)
    smooth = ndimage.gaussian_filter(grid.astype(np.float64), 1.5)
    ref = cv2.resize(smooth.astype(np.float32), (224, 224), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(got, ref, atol=2e-4)
    # a delta spreads as a Gaussian: the centre weight of a 1-D sigma-1.5 kernel squared
    delta = np.zeros((19, 19), np.float32)
    delta[9, 9] = 1
    x = np.arange(-6, 7)
    k = np.exp(-x**2 / (2 * 1.5**2))
    k /= k.sum()
    assert ndimage.gaussian_filter(delta, 1.5)[9, 9] == pytest.approx(k[6] ** 2, rel=1e-5)


def test_zero_shot_softmax_over_pos_neg():
    img = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    pos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    neg = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    p = zero_shot_probs(img, pos, neg)
    # image 0, class 0: logits (1, 2) -> 1 / (1 + e)
    assert p[0, 0] == pytest.approx(1 / (1 + np.e), rel=1e-6)
    # image 1, class 1: logits (-1, -1) -> 0.5
    assert p[1, 1] == pytest.approx(0.5)


def test_official_prompt_dictionary():
    pos, neg = cxr_prompts("Pneumonia")
    assert len(pos) == 6 * 1 * 9 and neg == ["no Pneumonia. "]
    assert pos[0] == "Pneumonia: pneumonia at the right lower lobe"
    assert pos[9] == "Pneumonia:mild pneumonia at the right lower lobe"
    assert len(cxr_prompts("Pneumothorax")[0]) == 6 * 1 * 7
    assert len(cxr_prompts("Atelectasis")[0]) == 3 * 7 * 10
    assert cxr_prompts("No Finding") == (["No finding"], ["finding"])
    assert cxr_prompts("COVID-19") == (["Findings suggesting covid-19"], ["no COVID-19. "])
    assert localization_prompt("Pneumonia") == "Findings suggesting Pneumonia."


def test_registered_with_capabilities_and_frame():
    cls = get_method("afloc")
    assert cls is AFLocMethod
    assert cls.capabilities.as_list() == ["localize", "classify", "free-text", "trainable"]
    assert cls.frame == Frame("letterbox", 224)


def test_localize_caches_queries_and_classify_uses_center_crop(monkeypatch):
    m = AFLocMethod()
    assert m.config()["random_init"] is True and "RANDOM" in m.config()["notice"]
    calls = []
    real = m.model.text_encoder.forward

    def counting(batch):
        calls.append(len(batch))
        return real(batch)

    monkeypatch.setattr(m.model.text_encoder, "forward", counting)
    samples = [synthetic_sample(i, h=90, w=70) for i in range(3)]
    q = [Query("a", "Pneumonia", "left lower opacity"), Query("b", "X", "right effusion")]
    maps = m.localize(samples, [q, q[:1], []])
    assert [len(x) for x in maps] == [2, 1, 0] and maps[0][0].shape == (224, 224)
    assert not np.allclose(maps[0][0], maps[1][0])  # same query, different images
    assert sum(calls) == 2  # two distinct texts, encoded once
    m.localize(samples[:1], [q])
    assert sum(calls) == 2

    seen = []
    monkeypatch.setattr("bench.imaging.recipes.to_frame",
                        lambda img, frame: seen.append(frame) or to_frame(img, frame))
    probs = m.classify(samples, ["COVID-19", "No Finding"])
    assert probs.shape == (3, 2) and np.all((probs > 0) & (probs < 1))
    assert seen and all(f == Frame("short_side_crop", 224) for f in seen)


def test_query_vectors_pick_report_cls_or_the_words_between_cls_and_sep():
    # two queries, D = 2, T = 5: [CLS] w w [SEP] pad, and [CLS] [SEP] (cleaned to nothing)
    words = torch.tensor([[[1., 2., 4., 8., 0.], [0., 1., 3., 5., 0.]],
                          [[7., 9., 0., 0., 0.], [6., 2., 0., 0., 0.]]])
    report = torch.tensor([[10., 11.], [12., 13.]])
    text = {"words": words, "report": report}
    word_index = torch.tensor([[0, 1, 2, 3, -1], [0, 1, -1, -1, -1]])
    assert torch.equal(query_vectors(text, word_index), report)
    assert torch.equal(query_vectors(text, word_index, "cls"), torch.tensor([[1., 0.], [7., 6.]]))
    # (2 + 4) / 2 and (1 + 3) / 2; the empty query falls back to its report embedding
    assert torch.equal(query_vectors(text, word_index, "words"),
                       torch.tensor([[3., 2.], [12., 13.]]))


def test_the_query_option_changes_the_maps_not_the_classifier():
    official, cls = AFLocMethod(), AFLocMethod(query="cls")  # seed 0: the same random weights
    assert official.config()["heatmap"].startswith("layer3 . report")
    assert cls.config()["heatmap"].startswith("layer3 . cls")
    text = "small left pleural effusion"
    batch = official.text.encode_queries([text])
    want = official.model.text_encoder(batch)["words"][0, :, 0]
    torch.testing.assert_close(cls.query_embeddings([text], "cls")[0], want)
    samples = [synthetic_sample(0, h=90, w=70)]
    q = [[Query("a", "Pleural Effusion", text)]]
    assert not np.allclose(official.localize(samples, q)[0][0], cls.localize(samples, q)[0][0])
    np.testing.assert_array_equal(official.classify(samples, ["Pneumonia"]),
                                  cls.classify(samples, ["Pneumonia"]))
    with pytest.raises(UsageError, match="query='sentence'"):
        AFLocMethod(query="sentence")


def test_a_query_that_cleans_to_nothing_is_flagged_once():
    import warnings

    import pytest

    m = AFLocMethod()  # faithful text mode: one-token sentences are dropped, as officially
    samples = [synthetic_sample(0, h=64, w=64)]
    with pytest.warns(UserWarning, match="'Pneumothorax' is empty after the official text"):
        m.localize(samples, [[Query("a", "Pneumothorax", "Pneumothorax")]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither a repeat nor a real sentence warns
        m.localize(samples, [[Query("a", "Pneumothorax", "Pneumothorax"),
                              Query("b", "Pneumothorax", "Findings suggesting pneumothorax.")]])
    corrected = AFLocMethod(text_mode="corrected")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        corrected.localize(samples, [[Query("a", "Pneumothorax", "Pneumothorax")]])


@pytest.mark.parametrize("suffix", [".dcm", ".png"])
def test_classification_pixels_as_the_official_loaders_read_them(tmp_path, monkeypatch, suffix):
    """A DICOM reaches the model as the official RSNA loader makes it: pydicom pixel_array,
    hi-ml remap_to_uint8 (min-max, truncated), PIL RGB, Resize(224), CenterCrop(224); a PNG
    as PIL opens it. 8-bit values spanning only 10..200 show the difference."""
    import pydicom
    from data_fixtures import write_dicom
    from PIL import Image
    from torchvision import transforms as T

    from bench.imaging.io import read_image_meta
    from bench.types import Sample

    pixels = np.linspace(10, 200, 300 * 260).reshape(300, 260).astype(np.uint8)
    path = tmp_path / f"img{suffix}"
    if suffix == ".dcm":
        write_dicom(path, pixels)
        raw = pydicom.dcmread(str(path)).pixel_array.astype(float)
        raw -= raw.min()
        raw /= raw.max()
        official = (raw * 255).astype(np.uint8)
    else:
        cv2.imwrite(str(path), pixels)
        official = np.asarray(Image.open(path))
    ref = np.asarray(T.CenterCrop(224)(T.Resize(224)(Image.fromarray(official).convert("RGB"))))
    image, meta = read_image_meta(path)
    sample = Sample(id="s", image=image, meta={"path": str(path), **meta})
    seen = []
    import bench.imaging.recipes as recipes

    real = recipes.to_frame
    monkeypatch.setattr(recipes, "to_frame",
                        lambda img, frame: seen.append(real(img, frame)) or seen[-1])
    AFLocMethod().classify([sample], ["Pneumonia"])
    np.testing.assert_array_equal(seen[0], ref[..., 0])
    assert (seen[0].max() > 200) == (suffix == ".dcm")  # stretched only when read from DICOM


def test_source_pixels_are_what_cv2_imread_gray_gives(tmp_path):
    """The official code reads every localization and pretraining image with
    cv2.imread(path, 0): a 16-bit PNG keeps its high byte, an 8-bit file is unchanged."""
    from bench.imaging.io import read_image
    from bench.imaging.recipes import source_uint8

    rng = np.random.default_rng(0)
    for name, pixels in (("a16.png", rng.integers(0, 65536, (40, 30), dtype=np.uint16)),
                         ("a8.png", rng.integers(0, 256, (40, 30), dtype=np.uint8))):
        path = tmp_path / name
        cv2.imwrite(str(path), pixels)
        got = source_uint8(read_image(path), str(path))
        np.testing.assert_array_equal(got, cv2.imread(str(path), 0))
    # a 16-bit array not from a raster file (e.g. a 12-bit DICOM) is min-max scaled
    x = np.array([[100, 4095]], dtype=np.uint16)
    np.testing.assert_array_equal(source_uint8(x, "img.dcm"), [[0, 255]])


@pytest.mark.parametrize("photometric, bits", [("MONOCHROME2", 8), ("MONOCHROME1", 12)])
def test_localization_pixels_from_dicom_as_read_from_dicom(tmp_path, monkeypatch, photometric,
                                                           bits):
    """Localization reads a DICOM as GLoRIA's / AFLoc's `read_from_dicom`: convertScaleAbs by
    255 / max, then bitwise_not for MONOCHROME1 (an 8-bit image peaking at 119 is stretched),
    from the decoded sample and the photometry its adapter recorded: the file is not read
    again."""
    import pydicom
    from data_fixtures import write_dicom

    import bench.imaging.recipes as recipes
    from bench.imaging.io import read_image, read_image_meta
    from bench.types import Sample

    top = 119 if bits == 8 else 3000
    dtype = np.uint8 if bits == 8 else np.uint16
    pixels = np.linspace(7, top, 40 * 30).reshape(40, 30).astype(dtype)
    path = write_dicom(tmp_path / "a.dcm", pixels, photometric=photometric, bits_stored=bits)
    dcm = pydicom.dcmread(str(path), force=True)
    x = dcm.pixel_array
    want = cv2.convertScaleAbs(x, alpha=255.0 / x.max())
    if dcm.PhotometricInterpretation == "MONOCHROME1":
        want = cv2.bitwise_not(want)
    image, meta = read_image_meta(path)
    assert meta == {"dicom": {"photometric": photometric, "bits_stored": bits}}
    sample = Sample("a", image, meta={"path": str(path), **meta})
    monkeypatch.setattr(recipes, "read_dicom_gloria", lambda p: pytest.fail("file read again"))
    got = recipes.READERS["read_from_dicom"](sample)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.uint8 and (got.max() == 255 if photometric == "MONOCHROME2"
                                      else got.min() == 0)
    monkeypatch.undo()
    # an adapter that did not record the photometry: the file is read once more, with a warning
    bare = Sample("a", image, meta={"path": str(path)})
    with pytest.warns(UserWarning, match="did not record the DICOM's photometry"):
        np.testing.assert_array_equal(recipes.READERS["read_from_dicom"](bare), want)
    # other files are read as cv2.imread(path, 0) reads them
    png = tmp_path / "a.png"
    cv2.imwrite(str(png), pixels if bits == 8 else (pixels >> 4).astype(np.uint8))
    png_sample = Sample("b", read_image(png), meta={"path": str(png)})
    np.testing.assert_array_equal(recipes.READERS["read_from_dicom"](png_sample),
                                  cv2.imread(str(png), 0))
