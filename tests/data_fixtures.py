"""Writers for tiny hand-made files in the real datasets' formats (used by tests/test_data_*).

Written from the documented formats, independently of bench/synth, so that a writer and a
reader cannot share a mistake.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import cv2
import numpy as np

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def write_dicom(path: Path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2",
                bits_stored: int | None = None, jpeg: bool = False,
                transfer_syntax: str | None = None, sop_uid: str | None = None,
                view: str = "PA") -> Path:
    """A minimal single-frame grayscale DICOM (uncompressed, or JPEG baseline encapsulated)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID, generate_uid

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.asarray(pixels)
    alloc = 8 if pixels.dtype == np.uint8 else 16
    bits_stored = bits_stored or alloc
    meta = FileMetaDataset()
    syntax = transfer_syntax or (JPEG_BASELINE if jpeg else EXPLICIT_LE)
    meta.TransferSyntaxUID = UID(syntax)
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")
    sop = sop_uid or generate_uid()
    meta.MediaStorageSOPInstanceUID = UID(sop)
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = sop
    ds.Modality = "CR"
    ds.ViewPosition = view
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = alloc
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if jpeg:
        ok, buf = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 100])
        assert ok
        ds.PixelData = encapsulate([buf.tobytes()])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def write_png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pixels)
    return path


def write_jpg(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pixels, [cv2.IMWRITE_JPEG_QUALITY, 100])
    return path


def blocky(h: int, w: int, seed: int = 0) -> np.ndarray:
    """uint8 image of constant 8x8 blocks: JPEG codes it with DC terms only, so every decoder
    returns exactly these values."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(16, 240, size=(h // 8, w // 8)).astype(np.uint8)
    return np.kron(blocks, np.ones((8, 8), dtype=np.uint8))


def write_csv(path: Path, header: list[str], rows: list[list], gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = (lambda p: gzip.open(p, "wt", newline="")) if gz else \
        (lambda p: open(p, "w", newline=""))
    with opener(path) as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_lines(path: Path, lines: list[str]) -> Path:
    """Raw CSV text (for headers with spaces and hand-made malformed rows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
