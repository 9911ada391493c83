"""Image decoding shared by every dataset adapter: DICOM, 8/16-bit PNG and JPG, as stored.

Adapters return pixels in the image's original frame with only the photometric fixes the
format requires; methods apply their own preprocessing (letterbox, uint8 mapping) on top.

- DICOM (pydicom): compressed transfer syntaxes decode through pylibjpeg or Pillow (SIIM and
  RSNA are JPEG Baseline, 1.2.840.10008.1.2.4.50). Values are the stored values masked to
  BitsStored (max = 2**BitsStored - 1, as torchxrayvision's `read_xray_dcm`), MONOCHROME1 is
  inverted as `max - x`, and no VOI LUT is applied unless asked. Output is uint8 when
  BitsStored <= 8, else uint16; `to_uint8=True` scales by BitsStored to 0..255.
- PNG/JPG (cv2, the reader GLoRIA and AFLoc use): 8- and 16-bit grayscale are returned
  unchanged; colour files are decoded with cv2's grayscale flag, exactly as AFLoc's
  `cv2.imread(path, 0)`. JPGs are never re-inverted (MIMIC-CXR-JPG already inverted
  MONOCHROME1 when it converted). A file cut short is an error, not a half-grey image.

Two uint8 mappings used by the official code are here too, so methods share one copy:
`gloria_uint8` (GLoRIA/AFLoc localisation) and `minmax_uint8` (hi-ml `remap_to_uint8`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bench.errors import DataError

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg")
DICOM_SUFFIXES = (".dcm", ".dicom")


@dataclass(frozen=True)
class DicomInfo:
    """The header fields that decide how a DICOM decodes (read without pixel data)."""

    rows: int
    columns: int
    bits_stored: int
    photometric: str
    transfer_syntax: str
    transfer_syntax_name: str
    sop_instance_uid: str | None
    view: str | None


def read_image(path: str | Path, *, voi_lut: bool = False) -> np.ndarray:
    """Decode any supported image file to a 2-D array in its original frame."""
    return read_image_meta(path, voi_lut=voi_lut)[0]


def read_image_meta(path: str | Path, *, voi_lut: bool = False) -> tuple[np.ndarray, dict]:
    """`read_image` and what a method needs to know of the file's pixels beside them, for a
    Sample's `meta`: for a DICOM, `{"dicom": {"photometric": ..., "bits_stored": ...}}`, from
    which `stored_values` recovers the file's values exactly (the official DICOM readers start
    from those), so no method has to read the file again."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        arr, photometric, bits = _stored_pixels(p, voi_lut)
        return (_decoded(arr, photometric, bits),
                {"dicom": {"photometric": photometric, "bits_stored": bits}})
    if suffix in RASTER_SUFFIXES:
        return read_raster(p), {}
    raise DataError(f"unsupported image type '{suffix}' (expected .dcm, .png, .jpg)", p)


# -- DICOM -----------------------------------------------------------------------------------

def _dcmread(path: Path, stop_before_pixels: bool):
    """The dataset, and whether pydicom hit the end of the file inside an element (a file cut
    short: pydicom then drops the element, or warns, instead of failing)."""
    import warnings

    import pydicom
    from pydicom.errors import InvalidDicomError

    if not path.is_file():
        raise DataError("missing file", path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(str(path), stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as exc:
        raise DataError(f"not a DICOM file ({_first_line(exc)})", path) from exc
    except Exception as exc:  # truncated header, bad element lengths, ...
        raise DataError(f"corrupt DICOM ({type(exc).__name__}: {_first_line(exc)})",
                        path) from exc
    cut = any("end of file" in str(w.message).lower() for w in caught)
    return ds, cut


def _transfer_syntax(ds) -> tuple[str, str]:
    meta = getattr(ds, "file_meta", None)
    uid = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if uid is None:
        return "", "unknown"
    return str(uid), getattr(uid, "name", str(uid))


def dicom_info(path: str | Path) -> DicomInfo:
    """Header only (cheap): sizes, bit depth, photometric interpretation, transfer syntax."""
    p = Path(path)
    ds, _ = _dcmread(p, stop_before_pixels=True)
    uid, name = _transfer_syntax(ds)
    return DicomInfo(
        rows=int(getattr(ds, "Rows", 0) or 0),
        columns=int(getattr(ds, "Columns", 0) or 0),
        bits_stored=int(getattr(ds, "BitsStored", 0) or 0),
        photometric=str(getattr(ds, "PhotometricInterpretation", "") or ""),
        transfer_syntax=uid,
        transfer_syntax_name=name,
        sop_instance_uid=str(ds.SOPInstanceUID) if "SOPInstanceUID" in ds else None,
        view=str(ds.ViewPosition) if "ViewPosition" in ds else None,
    )


def read_dicom(path: str | Path, *, voi_lut: bool = False, fix_monochrome: bool = True,
               to_uint8: bool = False) -> np.ndarray:
    """Stored values masked to BitsStored; MONOCHROME1 inverted; uint8 if <= 8 bits else uint16.

    `to_uint8` rescales by BitsStored instead: round(x * 255 / (2**BitsStored - 1)), the
    full-scale mapping torchxrayvision's `read_xray_dcm` uses (identity for 8-bit files)."""
    arr, photometric, bits = _stored_pixels(Path(path), voi_lut)
    maxval = (1 << bits) - 1
    if fix_monochrome and photometric == "MONOCHROME1":
        arr = maxval - arr
    if to_uint8 and bits != 8:
        return np.rint(arr * (255.0 / maxval)).astype(np.uint8)
    return arr.astype(np.uint8 if bits <= 8 else np.uint16)


def _decoded(arr: np.ndarray, photometric: str, bits: int) -> np.ndarray:
    """`read_dicom`'s default output from the stored values (MONOCHROME1 inverted)."""
    if photometric == "MONOCHROME1":
        arr = ((1 << bits) - 1) - arr
    return arr.astype(np.uint8 if bits <= 8 else np.uint16)


def stored_values(image: np.ndarray, dicom: dict) -> np.ndarray:
    """The file's stored values (masked to BitsStored, as `read_dicom(fix_monochrome=False)`
    gives them) from `read_image`'s output and the `dicom` entry of `read_image_meta`: the
    MONOCHROME1 inversion `max - x` undone."""
    bits = int(dicom["bits_stored"])
    dtype = np.uint8 if bits <= 8 else np.uint16
    if dicom["photometric"] == "MONOCHROME1":
        return (((1 << bits) - 1) - np.asarray(image).astype(np.int64)).astype(dtype)
    return np.asarray(image).astype(dtype, copy=False)


def read_dicom_gloria(path: str | Path) -> np.ndarray:
    """A DICOM file as GLoRIA's / AFLoc's `read_from_dicom` maps it, in one read: the stored
    values (as `read_dicom(fix_monochrome=False)`) through `gloria_uint8` with the file's
    photometric interpretation."""
    arr, photometric, bits = _stored_pixels(Path(path), voi_lut=False)
    return gloria_uint8(arr.astype(np.uint8 if bits <= 8 else np.uint16), photometric)


# SOP classes of radiographs (CR; DX, MG and intra-oral under 1.1.1.*; secondary capture)
_IMAGE_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.7")


def _expects_pixels(ds) -> bool:
    """Whether this object should carry pixel data: image attributes, a compressed pixel
    transfer syntax, or a radiograph SOP class (pydicom stops silently when a file is cut at an
    element boundary, so a cut-short image otherwise looks like one without pixels)."""
    if any(k in ds for k in ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation")):
        return True
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None)
    if syntax is not None and getattr(syntax, "is_compressed", False):
        return True
    sop = str(getattr(ds, "SOPClassUID", "") or getattr(meta, "MediaStorageSOPClassUID", ""))
    return any(sop == c or sop.startswith(c + ".") for c in _IMAGE_SOP_CLASSES)


def _stored_pixels(p: Path, voi_lut: bool) -> tuple[np.ndarray, str, int]:
    """(int64 stored values masked to BitsStored, photometric interpretation, BitsStored)."""
    ds, cut = _dcmread(p, stop_before_pixels=False)
    uid, name = _transfer_syntax(ds)
    size = p.stat().st_size
    if cut or ("PixelData" not in ds and _expects_pixels(ds)):
        raise DataError(f"truncated DICOM (an image whose file ends at byte {size}, before the "
                        f"end of its pixel data)", p)
    if "PixelData" not in ds:
        raise DataError("DICOM has no pixel data (not an image)", p)
    try:
        arr = ds.pixel_array
    except Exception as exc:
        if "less than expected" in str(exc):  # uncompressed pixel data cut short
            raise DataError(f"truncated DICOM (fewer pixel bytes than Rows x Columns need; "
                            f"the file is {size} bytes)", p) from exc
        raise DataError(
            f"cannot decode pixel data with transfer syntax {name} ({uid}): "
            f"{_first_line(exc)} (JPEG syntaxes need pylibjpeg-libjpeg or Pillow)", p) from exc
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if arr.ndim != 2 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DataError(f"expected one grayscale frame, got shape {arr.shape} "
                        f"({photometric})", p)
    bits = int(getattr(ds, "BitsStored", 0) or arr.dtype.itemsize * 8)
    maxval = (1 << bits) - 1
    if voi_lut:
        from pydicom.pixels import apply_voi_lut

        arr = np.clip(np.rint(apply_voi_lut(arr, ds)), 0, maxval).astype(np.int64)
    else:  # stored bits only (signed storage keeps its two's-complement bits, as stored)
        arr = np.asarray(arr).astype(np.int64) & maxval
    return arr, photometric, bits


# -- PNG / JPG -------------------------------------------------------------------------------

def read_raster(path: str | Path) -> np.ndarray:
    """8/16-bit grayscale PNG or JPG, unchanged; colour files through cv2's grayscale flag."""
    p = Path(path)
    if not p.is_file():
        raise DataError("missing file", p)
    data = p.read_bytes()
    _check_complete(data, p)
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError("corrupt image (cannot be decoded)", p)
    if img.ndim == 3:  # colour (or alpha) file: AFLoc reads these with cv2.imread(path, 0)
        depth = cv2.IMREAD_ANYDEPTH if img.dtype == np.uint16 else 0
        img = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE | depth)
        if img is None:
            raise DataError("corrupt image (cannot be decoded)", p)
    if img.dtype not in (np.uint8, np.uint16):
        raise DataError(f"unsupported pixel type {img.dtype}", p)
    return img


def _check_complete(data: bytes, path: Path) -> None:
    """A truncated file must fail: cv2 would otherwise return the missing part as grey."""
    if len(data) == 0:
        raise DataError("empty file", path)
    if data[:2] == b"\xff\xd8":  # JPEG: must end with the EOI marker (trailing zeros allowed)
        if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
            raise DataError("truncated JPEG (no end-of-image marker)", path)
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        if b"IEND" not in data[-16:]:
            raise DataError("truncated PNG (no IEND chunk)", path)


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) from the header without decoding pixels (PIL reads headers lazily)."""
    p = Path(path)
    if p.suffix.lower() in DICOM_SUFFIXES:
        info = dicom_info(p)
        return info.rows, info.columns
    from PIL import Image

    try:
        with Image.open(p) as im:
            w, h = im.size
    except FileNotFoundError as exc:
        raise DataError("missing file", p) from exc
    except Exception as exc:
        raise DataError(f"corrupt image ({_first_line(exc)})", p) from exc
    return h, w


# -- uint8 mappings used by the official code -----------------------------------------------

def gloria_uint8(raw: np.ndarray, photometric: str = "MONOCHROME2") -> np.ndarray:
    """GLoRIA/AFLoc localisation: `cv2.convertScaleAbs(x, alpha=255/x.max())`, then invert
    MONOCHROME1 with `bitwise_not`. Takes the raw (not inverted) stored values."""
    x = np.asarray(raw)
    peak = float(x.max())
    alpha = 255.0 / peak if peak else 0.0
    if x.dtype not in (np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64):
        x = x.astype(np.float64)
    out = cv2.convertScaleAbs(x, alpha=alpha)  # on the stored dtype, as GLoRIA calls it
    if photometric == "MONOCHROME1":
        out = cv2.bitwise_not(out)
    return out


def minmax_uint8(image: np.ndarray) -> np.ndarray:
    """hi-ml `remap_to_uint8` (AFLoc classification): (x - min) / (max - min) * 255, truncated."""
    x = np.asarray(image, dtype=np.float64)
    x = x - x.min()
    peak = x.max()
    if peak > 0:
        x = x / peak
    return (x * 255).astype(np.uint8)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
