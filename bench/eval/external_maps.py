"""Heatmaps produced elsewhere, scored like any method's (`bench score`).

Two layouts are read:

* NumPy: one `<sample_id>__<query_id>.npy` per (sample, query) — a 2-D float map on the frame
  given with `--frame` (default `original`: resized straight to the image's native size). Run
  `bench score --print-names ...` to list the exact file names a dataset expects.
* CheXlocalize: `<cxr_id>_<task>_map.pkl` with keys `map` (tensor 1x1xhxw), `prob` (float or a
  14-vector in CheXlocalize's CHEXPERT_TASKS order) and `cxr_dims` (w, h); the map is resized
  straight to the native size, as `heatmap_to_segmentation.pkl_to_mask` does. `prob` keeps
  its own type where the official scripts compare it: a Python float as a float; a float32
  tensor (or array) in float32 when cutoffs are tuned (torch compares a tensor with a numpy
  float64 cutoff in the tensor's dtype), and in the gate too unless it is the 14-vector, whose
  entry `pkl_to_mask` takes with `.item()` (a Python float).

Pickles are untrusted: they are read with an unpickler that only rebuilds tensors, arrays and
plain containers (tensor storages go through `torch.load(weights_only=True)`); anything else is
refused. A missing map is no prediction, counted in run.json: an empty prediction for IoU and
Dice, which leaves it out under the protocols' default empty-mask rule (`only_pos`,
`true_pos_only`; it scores 0 where those are off and the GT is not empty, as CheXlocalize's
`eval.py` scores a CXR missing from its predictions), and no hit rate or CNR (CheXlocalize's
`get_hitrates` iterates the maps it finds). A NaN or inf pixel in a map is an error unless
`nan_padding` says such pixels are padding the method never saw (then they are left out of
every metric, as the harness's own letterbox padding is).
"""

from __future__ import annotations

import io
import pickle
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import DataError
from bench.imaging.geometry import LETTERBOX, ORIGINAL, SQUARE, Frame
from bench.methods.base import Method
from bench.types import Capabilities, Query, Sample

# CheXlocalize eval_constants.CHEXPERT_TASKS: the order of a 14-element `prob`.
CHEXPERT_TASKS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion",
    "Airspace Opacity", "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax",
    "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices",
)
ALIASES = {"Lung Opacity": "Airspace Opacity"}
MISSING_MAP = "missing map (no prediction)"


def parse_frame(text: str) -> Frame:
    """`original`, `letterbox:224`, `letterbox:256/224` (letterbox 256, crop 224), `square:320`."""
    if text == "original":
        return Frame(ORIGINAL)
    kind, _, size = text.partition(":")
    if kind not in (LETTERBOX, SQUARE) or not size:
        raise DataError(f"unknown frame '{text}' (original, letterbox:224, letterbox:256/224, "
                        f"square:320)")
    pre, _, crop = size.partition("/")
    if crop:
        return Frame(kind, int(crop), int(pre))
    return Frame(kind, int(pre))


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        import torch

        allowed = {
            ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
            ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
            ("collections", "OrderedDict"): __import__("collections").OrderedDict,
            ("numpy.core.multiarray", "_reconstruct"): np.core.multiarray._reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): np.core.multiarray._reconstruct,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("numpy.core.multiarray", "scalar"): np.core.multiarray.scalar,
            ("numpy._core.multiarray", "scalar"): np.core.multiarray.scalar,
        }
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return lambda b: torch.load(io.BytesIO(b), map_location="cpu", weights_only=True)
        if (module, name) in allowed:
            return allowed[(module, name)]
        if module == "torch" and name.endswith("Storage"):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from an untrusted pickle")


def load_pkl(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            obj = _SafeUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, RuntimeError) as exc:
        raise DataError(f"cannot read saliency pickle: {exc}", path) from exc
    if not isinstance(obj, dict) or "map" not in obj:
        raise DataError("saliency pickle has no 'map' key", path)
    return obj


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _checked_map(m: Any, path: Path, nan_padding: bool = False) -> np.ndarray:
    """One 2-D float32 map (size-1 axes squeezed), or a DataError naming the file. Non-finite
    pixels are an error unless they are declared padding (then NaN: left out of metrics)."""
    arr = np.asarray(m)
    squeezed = np.squeeze(arr)
    if squeezed.ndim != 2 or min(squeezed.shape) < 1:
        raise DataError(f"map has shape {arr.shape}; expected one 2-D (H x W) map", path)
    if arr.dtype.kind not in "fiub":
        raise DataError(f"map has dtype {arr.dtype}; expected numbers", path)
    out = squeezed.astype(np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        if not nan_padding:
            raise DataError(f"map has {int(bad.sum())} non-finite pixels (NaN or inf); pass "
                            f"--nan-padding if they mark padding the method never saw", path)
        out[bad] = np.nan
    return out


def map_files(folder: Path) -> list[Path]:
    """The files `ExternalMaps` reads from a folder: `*.npy` and `*_map.pkl`."""
    if not folder.is_dir():
        return []
    return sorted([*folder.glob("*.npy"), *folder.glob("*_map.pkl")])


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def read_prob(prob: Any, pathology: str) -> tuple[float, bool, bool]:
    """(value, tuning compares in float32, the gate compares in float32) of a pkl's `prob`.

    The value is exact (a float32 is exactly a float64). `tune_probability_threshold.py` takes
    `prob[idx]` of a 14-vector tensor (a 0-d tensor) or the tensor itself and compares it with
    a numpy float64 cutoff, which torch does in the tensor's dtype; `pkl_to_mask` takes
    `.item()` of the 14-vector's entry (a Python float) but compares any other tensor as is.
    A Python or numpy scalar is compared as a float64.
    """
    if hasattr(prob, "detach") or (isinstance(prob, np.ndarray) and prob.ndim > 0):
        arr = prob.detach().cpu().numpy() if hasattr(prob, "detach") else prob
        flat = np.asarray(arr).reshape(-1)
        if flat.size == 0:
            raise ValueError("empty prob")
        low = flat.dtype.kind == "f" and flat.dtype.itemsize <= 4  # float32 (or float16)
        if flat.size == len(CHEXPERT_TASKS):
            name = ALIASES.get(pathology, pathology)
            return float(flat[CHEXPERT_TASKS.index(name)]), low, False
        return float(flat[0]), low, low
    return float(prob), False, False


class ExternalMaps(Method):
    """A folder of maps, served through the Method contract so the evaluator treats it alike."""

    capabilities = Capabilities(localize=True, classify=True, free_text=True)

    def __init__(self, folder: str | Path, frame: Frame | None = None,
                 nan_padding: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.folder = Path(folder)
        self.nan_padding = bool(nan_padding)
        if not self.folder.is_dir():
            raise DataError("maps folder not found", self.folder)
        self.frame = frame or Frame(ORIGINAL)
        self.missing: Counter[str] = Counter()
        # (sample id, pathology) -> (tuning in float32, gate in float32), see `read_prob`
        self._prob_f32: dict[tuple[str, str], tuple[bool, bool]] = {}
        self._npy = {p.stem: p for p in self.folder.glob("*.npy")}
        self._pkl = {p.name[: -len("_map.pkl")]: p for p in self.folder.glob("*_map.pkl")}
        if not self._npy and not self._pkl:
            raise DataError("no .npy or *_map.pkl files", self.folder)

    @staticmethod
    def npy_name(sample_id: str, query_id: str) -> str:
        return f"{sample_id}__{query_id}.npy"

    def _pkl_key(self, sample_id: str, pathology: str) -> str:
        return f"{sample_id}_{ALIASES.get(pathology, pathology)}"

    def _read(self, sample: Sample, q: Query) -> tuple[np.ndarray | None, float | None]:
        p = self._npy.get(f"{sample.id}__{q.id}")
        if p is not None:
            try:
                m = np.load(p, allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                raise DataError(f"unreadable map ({_first_line(exc)})", p) from exc
            return _checked_map(m, p, self.nan_padding), None
        p = self._pkl.get(self._pkl_key(sample.id, q.pathology))
        if p is not None:
            d = load_pkl(p)
            try:
                raw = _to_numpy(d["map"])
            except (TypeError, ValueError, RuntimeError) as exc:
                raise DataError(f"unreadable map ({_first_line(exc)})", p) from exc
            m = _checked_map(raw, p, self.nan_padding)
            prob = d.get("prob")
            if prob is not None:
                try:
                    prob, *f32 = read_prob(prob, q.pathology)
                except (TypeError, ValueError, IndexError) as exc:
                    raise DataError(f"unreadable prob ({exc})", p) from exc
                self._prob_f32[(sample.id, q.pathology)] = (f32[0], f32[1])
            return m, prob
        return None, None

    def localize(self, samples: list[Sample], queries: list[list[Query]]) -> list[list[np.ndarray]]:
        out = []
        for s, qs in zip(samples, queries):
            maps = []
            for q in qs:
                m, _ = self._read(s, q)
                if m is None:  # no value anywhere: the protocols read it as no prediction
                    self.missing[MISSING_MAP] += 1
                    m = np.full((8, 8), np.nan, np.float32)
                maps.append(m)
            out.append(maps)
        return out

    def classify(self, samples: list[Sample], pathologies: list[str]) -> np.ndarray:
        out = np.zeros((len(samples), len(pathologies)))
        for i, s in enumerate(samples):
            for j, p in enumerate(pathologies):
                _, prob = self._read(s, Query(p, p, p))
                out[i, j] = np.nan if prob is None else prob
        return out

    def prob_precision(self, sample: Sample, pathology: str) -> tuple[bool, bool]:
        """(tuning compares in float32, the gate compares in float32) for a prob already read
        by `classify`; (False, False) for a float or a missing prob."""
        return self._prob_f32.get((sample.id, pathology), (False, False))

    def config(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "frame": self.frame.describe(),
                "nan_padding": self.nan_padding,
                "n_npy": len(self._npy), "n_pkl": len(self._pkl)}
