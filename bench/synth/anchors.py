"""Real-data anchors for the synthetic world, read at run time from the torchxrayvision wheel.

The wheel ships real annotation files (lung masks, RSNA boxes, SIIM pneumothorax RLE, NIH
boxes, Open-i reports). We never copy them into the repository: this module reads them from
the installed package, reduces them to small arrays (lung templates at 128x128, normalized
boxes, downsampled pneumothorax masks, report sentences) and caches the result under
``$BENCH_CACHE/anchors`` (default ``~/.cache/afloc-bench/anchors``) so later runs load in
milliseconds. Without torchxrayvision a procedural fallback is used and a notice is issued.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import warnings
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

ANCHOR_VERSION = 2
TEMPLATE = 128  # lung templates and pneumothorax masks are stored at TEMPLATE x TEMPLATE
MAX_PTX = 300  # pneumothorax instance masks kept (first N positive rows of the SIIM file)
NIH_LABELS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Mass", "Nodule",
              "Pneumonia", "Pneumothorax")


@dataclass
class Anchors:
    """Everything the generator draws from real data; `source` says where it came from."""

    source: str  # "torchxrayvision <version>" or "procedural"
    lungs: np.ndarray  # (n, T, T) uint8: 1 = image-left lung (patient right), 2 = image-right
    rsna_boxes: np.ndarray  # (n, 4) float32 x, y, w, h divided by 1024
    rsna_boxes_per_image: np.ndarray  # (n_pos_images,) int counts of boxes per positive image
    ptx_masks: np.ndarray  # (n, T, T) uint8 0/1 real SIIM instances in image-normalized space
    nih_boxes: dict[str, np.ndarray] = field(default_factory=dict)  # label -> (n, 4) /1024
    sentences: list[str] = field(default_factory=list)  # Open-i FINDINGS/IMPRESSION sentences

    @property
    def real(self) -> bool:
        return self.source != "procedural"


def cache_root() -> Path:
    base = os.environ.get("BENCH_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "afloc-bench"
    return root / "anchors"


def txv_data_dir() -> Path | None:
    """The `data/` folder inside the installed torchxrayvision wheel, or None."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("torchxrayvision")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "data"
    return d if (d / "semantic_masks_v7labs_lungs.zip").exists() else None


def _txv_version() -> str:
    try:
        from importlib.metadata import version

        return version("torchxrayvision")
    except Exception:
        return "unknown"


def _txv_source() -> str:
    return f"torchxrayvision {_txv_version()}"


def anchor_source() -> str:
    """What `load_anchors` will draw from (its `Anchors.source`), without building anything."""
    return _txv_source() if txv_data_dir() is not None else "procedural"


def anchor_tag(source: str | None = None) -> str:
    """A folder-name form of the source ("txv1.5.7" or "procedural"): worlds drawn from
    different anchors are different worlds and must not share a cache folder."""
    source = source or anchor_source()
    if source == "procedural":
        return source
    return "txv" + source.split(" ", 1)[-1]


@lru_cache(maxsize=1)
def load_anchors() -> Anchors:
    """Load (and on first use build and cache) the anchors; cached per process."""
    data = txv_data_dir()
    if data is None:
        warnings.warn("torchxrayvision is not installed: the synthetic world uses procedural "
                      "lung shapes, box and pneumothorax distributions and templated wording "
                      "only (install torchxrayvision for real-data anchors).", stacklevel=2)
        return procedural_anchors()
    source = _txv_source()
    stamp = "-".join(str((data / f).stat().st_size) for f in sorted(os.listdir(data)))
    # the key covers what the arrays depend on, so a change of code constants never reads a
    # stale cache built by another version
    stamp += f"-{TEMPLATE}-{MAX_PTX}"
    key = f"v{ANCHOR_VERSION}-{anchor_tag(source)}-{abs(hash_text(stamp)) % 10**10}"
    folder = cache_root() / key
    if (folder / "arrays.npz").exists() and (folder / "text.json").exists():
        return _read_cache(folder, source)
    from filelock import FileLock

    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder) + ".lock")
    except OSError:
        return build_anchors(data, source)
    with lock:  # one process builds, the others wait and read
        if (folder / "arrays.npz").exists() and (folder / "text.json").exists():
            return _read_cache(folder, source)
        anchors = build_anchors(data, source)
        _write_cache(folder, anchors)
    return anchors


def hash_text(text: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little", signed=True)


def _write_cache(folder: Path, a: Anchors) -> None:
    from bench.store import atomic_write_bytes

    buf = io.BytesIO()
    nih = {f"nih_{k}": v for k, v in a.nih_boxes.items()}
    np.savez_compressed(buf, lungs=a.lungs, rsna_boxes=a.rsna_boxes,
                        rsna_boxes_per_image=a.rsna_boxes_per_image, ptx_masks=a.ptx_masks, **nih)
    try:
        atomic_write_bytes(folder / "arrays.npz", buf.getvalue())
        atomic_write_bytes(folder / "text.json",
                           json.dumps({"sentences": a.sentences}).encode())
    except OSError:  # a read-only home must not stop generation
        pass


def _read_cache(folder: Path, source: str) -> Anchors:
    with np.load(folder / "arrays.npz", allow_pickle=False) as z:
        nih = {k[4:]: z[k] for k in z.files if k.startswith("nih_")}
        out = Anchors(source, z["lungs"], z["rsna_boxes"], z["rsna_boxes_per_image"],
                      z["ptx_masks"], nih)
    out.sentences = json.loads((folder / "text.json").read_text())["sentences"]
    return out


def build_anchors(data: Path, source: str) -> Anchors:
    import pandas as pd

    lungs = _lung_templates(data / "semantic_masks_v7labs_lungs.zip")
    rsna = pd.read_csv(data / "kaggle_stage_2_train_labels.csv.zip")
    pos = rsna[rsna["Target"] == 1]
    rsna_boxes = (pos[["x", "y", "width", "height"]].to_numpy(np.float32) / 1024.0)
    per_image = pos.groupby("patientId").size().to_numpy(np.int64)
    ptx = _ptx_masks(data / "siim-pneumothorax-train-rle.csv.gz")
    bb = pd.read_csv(data / "BBox_List_2017.csv.gz").iloc[:, :6]
    bb.columns = ["image", "label", "x", "y", "w", "h"]
    nih = {lab: (g[["x", "y", "w", "h"]].to_numpy(np.float32) / 1024.0)
           for lab, g in bb.groupby("label") if lab in NIH_LABELS}
    sentences = _openi_sentences(data / "NLMCXR_reports.tgz")
    return Anchors(source, lungs, rsna_boxes, per_image, ptx, nih, sentences)


def _lung_templates(path: Path) -> np.ndarray:
    """Real lung masks -> (n, T, T) label maps cropped to the two lungs' bounding box."""
    with zipfile.ZipFile(path) as z:
        blobs = [z.read(n) for n in sorted(z.namelist()) if not n.endswith("/")]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        out = [t for t in pool.map(_lung_template, blobs) if t is not None]
    return np.stack(out) if out else procedural_anchors().lungs


def _lung_template(blob: bytes) -> np.ndarray | None:
    """One real lung mask -> T x T label map (1 = image-left lung), or None if unusable."""
    buf = np.frombuffer(blob, np.uint8)
    m = cv2.imdecode(buf, cv2.IMREAD_REDUCED_GRAYSCALE_4)  # JPEG: DCT-scaled, fast decode
    if m is not None and min(m.shape) < 160:
        m = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    if m is None:
        return None
    scale = 256.0 / max(m.shape)
    m = cv2.resize(m, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) > 127
    n, lab, stats, cent = cv2.connectedComponentsWithStats(m.astype(np.uint8), 8)
    if n < 3:
        return None
    order = np.argsort(stats[1:, cv2.CC_STAT_AREA])[::-1][:2] + 1
    a1, a2 = stats[order, cv2.CC_STAT_AREA]
    if a2 < 0.35 * a1:
        return None
    both = np.isin(lab, order)
    ys, xs = np.nonzero(both)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    if not 0.6 < (y1 - y0) / (x1 - x0) < 1.3:
        return None
    left, right = sorted(order, key=lambda k: cent[k, 0])
    # the two lungs must be side by side, not one above the other
    if cent[left, 0] > x0 + 0.45 * (x1 - x0) or cent[right, 0] < x0 + 0.55 * (x1 - x0):
        return None
    crop = np.zeros((y1 - y0, x1 - x0), np.uint8)
    crop[lab[y0:y1, x0:x1] == left] = 1
    crop[lab[y0:y1, x0:x1] == right] = 2
    return cv2.resize(crop, (TEMPLATE, TEMPLATE), interpolation=cv2.INTER_NEAREST)


def decode_relative_rle(rle: str, height: int, width: int) -> np.ndarray:
    """SIIM's relative, column-major RLE -> (height, width) uint8 mask (official scheme).

    Pairs (offset, length): a cursor advances by offset, paints length pixels, advances by
    length; pixel p of the flat column-major order is (row p % height, col p // height).
    """
    vals = np.array(rle.split(), dtype=np.int64)
    off, length = vals[0::2], vals[1::2]
    ends = np.cumsum(off + length)
    starts = ends - length
    edges = np.zeros(width * height + 1, np.int32)
    np.add.at(edges, starts, 1)
    np.add.at(edges, ends, -1)
    flat = (np.cumsum(edges[:-1]) > 0).astype(np.uint8)
    return flat.reshape(width, height).T.copy()


def encode_relative_rle(mask: np.ndarray) -> str:
    """(H, W) mask -> SIIM relative column-major RLE; '-1' for an empty mask."""
    flat = np.asarray(mask, bool).T.reshape(-1)
    if not flat.any():
        return "-1"
    padded = np.concatenate([[0], flat.view(np.uint8), [0]])
    d = np.diff(padded.astype(np.int8))
    starts = np.nonzero(d == 1)[0]
    ends = np.nonzero(d == -1)[0]
    parts, prev = [], 0
    for s, e in zip(starts, ends):
        parts += [str(s - prev), str(e - s)]
        prev = e
    return " ".join(parts)


def _ptx_masks(path: Path) -> np.ndarray:
    import pandas as pd

    df = pd.read_csv(path)
    col = [c for c in df.columns if c.strip() == "EncodedPixels"][0]
    vals = df[col].astype(str).str.strip()
    out = []
    f = 1024 // TEMPLATE
    for rle in vals[vals != "-1"].iloc[:MAX_PTX]:
        v = np.array(rle.split(), dtype=np.int64)
        off, length = v[0::2], v[1::2]
        starts = np.cumsum(off + length) - length
        # every painted flat index, without materialising the 1024 x 1024 mask
        idx = np.repeat(starts - np.concatenate([[0], np.cumsum(length)[:-1]]), length)
        idx += np.arange(len(idx))
        small = np.zeros((TEMPLATE, TEMPLATE), np.uint8)
        small[(idx % 1024) // f, (idx // 1024) // f] = 1
        if small.sum() >= 8:
            out.append(small)
    return np.stack(out)


_SPLIT = re.compile(r"(?<=[a-z0-9%)])\.\s+(?=[A-Z])")


def _openi_sentences(path: Path) -> list[str]:
    """Every FINDINGS/IMPRESSION sentence of the Open-i reports, deduplicated, sorted."""
    pat = re.compile(r'<AbstractText Label="(FINDINGS|IMPRESSION)">(.*?)</AbstractText>', re.S)
    seen: set[str] = set()
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            if not member.isfile() or not member.name.endswith(".xml"):
                continue
            text = tar.extractfile(member).read().decode("utf-8", "replace")
            for _, body in pat.findall(text):
                for s in _SPLIT.split(" ".join(body.split())):
                    s = s.strip().rstrip(".").strip()
                    if 3 <= len(s.split()) <= 30:
                        seen.add(s + ".")
    return sorted(seen)


def procedural_anchors() -> Anchors:
    """Stand-ins when torchxrayvision is absent: smooth lung shapes and generic boxes."""
    t = TEMPLATE
    yy, xx = np.mgrid[0:t, 0:t].astype(np.float32) / t
    lungs = []
    for k in range(8):
        m = np.zeros((t, t), np.uint8)
        for side, cx in ((1, 0.24), (2, 0.76)):
            ax = 0.23 + 0.01 * (k % 3)
            inside = ((xx - cx) / ax) ** 2 + ((yy - 0.55) / 0.52) ** 2 < 1
            medial = (xx - 0.5) * (1 if side == 2 else -1) > 0.04 + 0.12 * (yy > 0.55)
            m[inside & medial & (yy < 1 - 0.08 * np.abs(xx - cx) * (k % 2))] = side
        lungs.append(m)
    g = np.random.default_rng(0)
    boxes = np.column_stack([g.uniform(0.12, 0.6, 500), g.uniform(0.2, 0.6, 500),
                             g.uniform(0.12, 0.25, 500), g.uniform(0.15, 0.35, 500)])
    ptx = []
    for k in range(16):
        m = np.zeros((t, t), np.uint8)
        cx = 0.28 if k % 2 else 0.72
        ring = (((xx - cx) / 0.22) ** 2 + ((yy - 0.45) / 0.4) ** 2)
        m[(ring < 1) & (ring > 0.55 + 0.02 * (k % 5)) & (yy < 0.55)] = 1
        ptx.append(m)
    return Anchors("procedural", np.stack(lungs), boxes.astype(np.float32),
                   np.array([1, 2, 2]), np.stack(ptx), {}, [])
