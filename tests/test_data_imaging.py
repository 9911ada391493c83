"""bench.imaging.io and bench.imaging.masks on tiny hand-made files, pixel by pixel."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.errors import DataError
from bench.imaging.io import (
    dicom_info,
    gloria_uint8,
    image_size,
    minmax_uint8,
    read_dicom,
    read_image,
    read_raster,
)
from bench.imaging.masks import (
    box_problem,
    boxes_to_mask,
    boxes_xyxy_to_mask,
    coco_rle_to_mask,
    mask_to_coco_rle,
    mask_to_siim_rle,
    polygon_problem,
    polygons_to_mask,
    siim_rle_problem,
    siim_rle_to_mask,
    siim_rles_to_mask,
)

try:
    from tests.data_fixtures import blocky, write_dicom, write_jpg, write_png
except ImportError:  # tests/ is not always a package
    from data_fixtures import blocky, write_dicom, write_jpg, write_png

# -- DICOM -----------------------------------------------------------------------------------


def test_dicom_jpeg_baseline_decodes_exactly(tmp_path):
    img = blocky(32, 48)
    p = write_dicom(tmp_path / "a.dcm", img, jpeg=True)
    out = read_image(p)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, img)
    info = dicom_info(p)
    assert info.transfer_syntax == "1.2.840.10008.1.2.4.50"
    assert (info.rows, info.columns, info.bits_stored) == (32, 48, 8)


def test_dicom_monochrome1_inverted_with_bits_stored(tmp_path):
    img = np.array([[0, 1, 4095], [100, 2048, 7]], dtype=np.uint16)
    p = write_dicom(tmp_path / "m1.dcm", img, photometric="MONOCHROME1", bits_stored=12)
    out = read_dicom(p)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, 4095 - img)
    np.testing.assert_array_equal(read_dicom(p, fix_monochrome=False), img)
    # BitsStored scaling: [4095, 4094, 0, 3995, 2047, 4088] * 255 / 4095, rounded
    np.testing.assert_array_equal(read_dicom(p, to_uint8=True), [[255, 255, 0], [249, 127, 255]])


def test_dicom_bits_above_bits_stored_are_masked(tmp_path):
    img = np.array([[0x1005, 0xF00F]], dtype=np.uint16)  # garbage above bit 11
    p = write_dicom(tmp_path / "hb.dcm", img, bits_stored=12)
    np.testing.assert_array_equal(read_dicom(p), [[0x005, 0x00F]])


def test_dicom_unreadable_transfer_syntax_is_one_line(tmp_path):
    img = blocky(16, 16)
    p = write_dicom(tmp_path / "x.dcm", img, jpeg=True, transfer_syntax="1.2.840.10008.1.2.4.100")
    with pytest.raises(DataError) as exc:
        read_dicom(p)
    msg = str(exc.value)
    assert str(p) in msg and "transfer syntax" in msg and "\n" not in msg


def test_dicom_truncated_and_not_dicom(tmp_path):
    p = write_dicom(tmp_path / "t.dcm", blocky(64, 64))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=str(p)):
        read_dicom(p)
    q = tmp_path / "n.dcm"
    q.write_bytes(b"hello, not a dicom")
    with pytest.raises(DataError, match="n.dcm"):
        read_dicom(q)
    with pytest.raises(DataError, match="missing file"):
        read_dicom(tmp_path / "absent.dcm")


# -- PNG / JPG -------------------------------------------------------------------------------


def test_png_8_and_16_bit_unchanged(tmp_path):
    a8 = np.arange(60, dtype=np.uint8).reshape(6, 10)
    a16 = (np.arange(60, dtype=np.uint16) * 1000).reshape(6, 10)
    out8 = read_raster(write_png(tmp_path / "a8.png", a8))
    out16 = read_raster(write_png(tmp_path / "a16.png", a16))
    assert out8.dtype == np.uint8 and out16.dtype == np.uint16
    np.testing.assert_array_equal(out8, a8)
    np.testing.assert_array_equal(out16, a16)
    assert image_size(tmp_path / "a16.png") == (6, 10)


def test_jpg_gray_not_reinverted_and_colour_as_cv2_flag0(tmp_path):
    import cv2

    img = blocky(16, 24)
    np.testing.assert_array_equal(read_raster(write_jpg(tmp_path / "g.jpg", img)), img)
    colour = np.dstack([img, 255 - img, img // 2])
    p = write_jpg(tmp_path / "c.jpg", colour)
    np.testing.assert_array_equal(read_raster(p), cv2.imread(str(p), 0))


def test_truncated_and_corrupt_rasters(tmp_path):
    p = write_jpg(tmp_path / "t.jpg", blocky(64, 64))
    p.write_bytes(p.read_bytes()[:-200])
    with pytest.raises(DataError, match="truncated JPEG"):
        read_raster(p)
    q = write_png(tmp_path / "t.png", blocky(64, 64))
    q.write_bytes(q.read_bytes()[:-30])
    with pytest.raises(DataError, match="t.png"):
        read_raster(q)
    r = tmp_path / "junk.png"
    r.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40 + b"IEND\xaeB`\x82")
    with pytest.raises(DataError, match="corrupt image"):
        read_raster(r)
    with pytest.raises(DataError, match="unsupported image type"):
        read_image(tmp_path / "x.gif")


def test_uint8_mappings_hand_values():
    x = np.array([[0, 40, 100, 20]], dtype=np.uint16)  # alpha 2.55: 0, 102, 255, 51
    np.testing.assert_array_equal(gloria_uint8(x), [[0, 102, 255, 51]])
    np.testing.assert_array_equal(gloria_uint8(x, "MONOCHROME1"), [[255, 153, 0, 204]])
    y = np.array([[10, 20, 30]], dtype=np.int32)
    np.testing.assert_array_equal(minmax_uint8(y), [[0, 127, 255]])  # 127.5 truncated


# -- boxes -----------------------------------------------------------------------------------


def test_boxes_to_mask_hand_computed():
    m = boxes_to_mask([(1.7, 0.2, 2.9, 2.0), (4, 3, 1, 1)], (5, 6))
    want = np.zeros((5, 6), np.uint8)
    want[0:2, 1:3] = 1  # floor: x=1, y=0, w=2, h=2
    want[3, 4] = 1
    np.testing.assert_array_equal(m, want)
    np.testing.assert_array_equal(boxes_xyxy_to_mask([(1, 0, 3, 2), (4, 3, 5, 4)], (5, 6)), want)


def test_box_problems():
    assert box_problem((0, 0, 1024, 1024), (1024, 1024)) is None
    assert "zero-area" in box_problem((5, 5, 0, 3), (10, 10))
    assert "zero-area" in box_problem((5, 5, 0.5, 3), (10, 10))
    # an overhang is clipped (official slicing); a box off the image is refused
    assert box_problem((8, 5, 3, 3), (10, 10)) is None
    assert box_problem((-1, 5, 3, 3), (10, 10)) is None
    assert "outside" in box_problem((10, 5, 3, 3), (10, 10))
    assert "outside" in box_problem((-3, 5, 3, 3), (10, 10))
    assert "non-numeric" in box_problem(("a", 5, 3, 3), (10, 10))
    assert "non-numeric" in box_problem((float("nan"), 5, 3, 3), (10, 10))


# -- polygons --------------------------------------------------------------------------------


def test_polygon_filled_with_outline_as_chexlocalize():
    m = polygons_to_mask([[[1, 1], [4, 1], [4, 3], [1, 3]], [[0, 5], [2, 5], [0, 7]]], (8, 6))
    want = np.zeros((8, 6), np.uint8)
    want[1:4, 1:5] = 1  # outline=1 includes both edges
    want[5, 0:3] = 1
    want[6, 0:2] = 1
    want[7, 0] = 1
    np.testing.assert_array_equal(m, want)


def test_polygon_problems():
    assert "empty polygon" in polygon_problem([])
    assert "empty polygon" in polygon_problem([[1, 2], [3, 4]])
    assert "malformed" in polygon_problem([[1], [2], [3]])
    assert "outside" in polygon_problem([[20, 20], [30, 20], [30, 30]], (10, 10))
    assert polygon_problem([[1, 1], [2, 1], [2, 2]], (10, 10)) is None


# -- COCO RLE --------------------------------------------------------------------------------


def test_coco_rle_hand_made_uncompressed_and_roundtrip():
    # column-major counts on a 3x4 mask: 4 zeros, 2 ones, 6 zeros
    m = coco_rle_to_mask({"size": [3, 4], "counts": [4, 2, 6]})
    want = np.zeros((3, 4), np.uint8)
    want[1, 1] = want[2, 1] = 1  # flat (Fortran) 4, 5 -> (1,1), (2,1)
    np.testing.assert_array_equal(m, want)
    rle = mask_to_coco_rle(want)
    assert isinstance(rle["counts"], str) and rle["size"] == [3, 4]
    np.testing.assert_array_equal(coco_rle_to_mask(rle), want)
    with pytest.raises(ValueError):
        coco_rle_to_mask({"size": [3, 4], "counts": [4, 2]})
    with pytest.raises(ValueError):
        coco_rle_to_mask({"counts": "abc"})


# -- SIIM RLE --------------------------------------------------------------------------------


def test_siim_relative_rle_hand_computed():
    # 4x4, pairs (1, 2), (3, 1): cursor 1 -> paint 1,2; cursor 3 + 3 = 6 -> paint 6
    m = siim_rle_to_mask("1 2 3 1", (4, 4))
    want = np.zeros((4, 4), np.uint8)
    want[1, 0] = want[2, 0] = 1  # column-major: p -> (p mod 4, p div 4)
    want[2, 1] = 1
    np.testing.assert_array_equal(m, want)
    np.testing.assert_array_equal(siim_rle_to_mask("-1", (4, 4)), np.zeros((4, 4)))
    both = siim_rles_to_mask(["1 2 3 1", "15 1"], (4, 4))
    want[3, 3] = 1
    np.testing.assert_array_equal(both, want)


def test_siim_rle_problems():
    assert siim_rle_problem(" -1 ") is None
    assert "odd" in siim_rle_problem("1 2 3", (4, 4))
    assert "non-integer" in siim_rle_problem("1 x", (4, 4))
    assert "past the end" in siim_rle_problem("10 7", (4, 4))
    assert "negative" in siim_rle_problem("-3 2", (4, 4))
    with pytest.raises(ValueError):
        siim_rle_to_mask("1 2 3")


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.data())
def test_siim_and_coco_rle_roundtrip(h, w, data):
    bits = data.draw(st.lists(st.booleans(), min_size=h * w, max_size=h * w))
    mask = np.array(bits, dtype=np.uint8).reshape(h, w)
    np.testing.assert_array_equal(siim_rle_to_mask(mask_to_siim_rle(mask), (h, w)), mask)
    np.testing.assert_array_equal(coco_rle_to_mask(mask_to_coco_rle(mask)), mask)


# -- issue 18, item 13: every message names the file and says what is wrong ------------------

@pytest.mark.parametrize("jpeg", [True, False])
def test_truncated_dicom_says_truncated(tmp_path, jpeg):
    """A DICOM cut short (in its header or its pixel data) says so, not "no pixel data"."""
    p = write_dicom(tmp_path / "t.dcm", blocky(64, 64), jpeg=jpeg)
    data = p.read_bytes()
    for cut in (len(data) - 600, len(data) - 40, len(data) - 9):
        p.write_bytes(data[:cut])
        with pytest.raises(DataError) as exc:
            read_dicom(p)
        assert str(exc.value).startswith(f"{p}: truncated DICOM"), (cut, str(exc.value))
        assert "\n" not in str(exc.value)
