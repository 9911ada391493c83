"""MedKLIP's training targets: (entity, position, existence) triplets per image.

**Official files** (``PreTrain_MedKLIP/data_file``, made with AGXNet's RadGraph processing):
``rad_graph_metric_{train,validate,test}.json`` map each image path to an entry whose
``labels_id`` is a row of ``landmark_observation_adj_mtx.npy``, an array [N, 51, 75]
(anatomy x observation; 1 = the observation is present at that anatomy, 0 = said absent,
other values = not said). `read_official` reads them; an image is matched to the harness's
training pairs by its file stem (MIMIC-CXR's dicom_id).

**Per item** (`sample_triplets`, the official ``triplet_extraction``): existence of entity i is
1 if its column holds a 1, else 0 if it holds a 0, else -1 (not mentioned, left out of the
loss); its 8 positions are, for a present entity, one anatomy drawn among its 1s followed by 7
drawn without replacement from the row indices of every entry of the matrix that is not 1
(numpy's ``where`` over the whole matrix, duplicates included, as the official code draws
them); otherwise 8 such indices.

**Synthetic world**: its reports describe exactly what is drawn, so the triplets are read back
from them (`synthetic_matrix`): the CheXpert labels the adapter gives (1 present, 0 absent;
uncertain left out) mapped to MedKLIP entities, and each present entity's anatomy from the
location words of the report sentences that name it (side + zone -> one of the 51 names;
'unspecified' where a sentence names no place).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from bench.errors import UsageError

from .names import ANATOMIES, OBSERVATIONS, query_of

N_POSITIONS = 8


def read_official(json_path: str | Path, npy_path: str | Path
                  ) -> tuple[dict[str, int], np.ndarray]:
    """({file stem: row of the label array}, the label array [N, 51, 75] memory-mapped)."""
    try:
        ann = json.loads(Path(json_path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{json_path}: not a readable MedKLIP triplet index "
                         f"({type(exc).__name__})") from exc
    try:
        labels = np.load(npy_path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{npy_path}: not a readable .npy label array "
                         f"({type(exc).__name__})") from exc
    if labels.ndim != 3 or labels.shape[1:] != (len(ANATOMIES), len(OBSERVATIONS)):
        raise UsageError(f"{npy_path}: label array of shape {labels.shape}, expected "
                         f"(N, {len(ANATOMIES)}, {len(OBSERVATIONS)})")
    out = {}
    for path, entry in ann.items():
        if not isinstance(entry, dict) or "labels_id" not in entry:
            raise UsageError(f"{json_path}: entry {path!r} has no 'labels_id'")
        row = int(entry["labels_id"])
        if not 0 <= row < labels.shape[0]:
            raise UsageError(f"{json_path}: entry {path!r}: labels_id {row} outside the "
                             f"{labels.shape[0]} rows of {npy_path}")
        out[Path(path).stem] = row
    return out, labels


def sample_triplets(matrix: np.ndarray, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(existence [75] in {-1, 0, 1}, positions [75, 8]) of one [51, 75] matrix."""
    m = np.asarray(matrix)
    exist = np.full(m.shape[1], -1.0)
    not_one = np.where(m != 1)[0]
    index = np.zeros((m.shape[1], N_POSITIONS), dtype=np.int64)
    for i in range(m.shape[1]):
        col = m[:, i]
        if (col == 0).any():
            exist[i] = 0
        if (col == 1).any():
            exist[i] = 1
            first = int(rng.choice(np.where(col == 1)[0]))
            rest = rng.choice(not_one, N_POSITIONS - 1, replace=False) if len(not_one) >= 7 \
                else rng.integers(0, m.shape[0], N_POSITIONS - 1)
            index[i] = [first, *rest]
        else:
            index[i] = (rng.choice(not_one, N_POSITIONS, replace=False)
                        if len(not_one) >= N_POSITIONS else rng.integers(0, m.shape[0], 8))
    return exist, index


# -- the synthetic world -----------------------------------------------------------------------
_KEYWORDS = {
    "pneumonia": r"pneumonia", "effusion": r"effusion", "opacity": r"opacit",
    "pneumothorax": r"pneumothora", "edema": r"edema", "atelectasis": r"atelecta",
    "consolidation": r"consolidat", "cardiomegaly": r"cardiomegaly|heart (size )?is enlarged|"
    r"enlarged (heart|cardiac)", "nodule": r"nodul", "mass": r"\bmass", "fracture": r"fractur",
    "enlarge": r"enlarged cardiomediastin|mediastin\w* (is )?widen",
}
_ZONES = (("middle lobe", "middle"), ("apicolateral", "apical"), ("apical", "apical"),
          ("apex", "apical"), ("upper", "upper"), ("perihilar", "hilar"), ("mid", "mid"),
          ("lower", "lower"), ("basilar", "lower"), ("base", "lower"))
_SIDED = {("left", "upper"): "left_upper_lung", ("left", "apical"): "left_apical_lung",
          ("left", "mid"): "left_mid_lung", ("left", "hilar"): "left_hilar",
          ("left", "lower"): "left_lower_lung", ("left", None): "left_lung_unspec",
          ("right", "upper"): "right_upper_lung", ("right", "apical"): "right_apical_lung",
          ("right", "mid"): "right_mid_lung", ("right", "hilar"): "right_hilar",
          ("right", "lower"): "right_lower_lung", ("right", "middle"): "middle_right_lobe",
          ("right", None): "right_lung_unspec",
          ("both", "lower"): "lung_bases", ("both", "upper"): "lung_apices",
          ("both", "apical"): "lung_apices", ("both", "hilar"): "hilar_unspec",
          ("both", "mid"): "pulmonary", ("both", None): "pulmonary"}


def place_of(sentence: str, entity: str) -> str:
    """The anatomy a sentence gives an entity (side + zone words), 'unspecified' if none."""
    s = sentence.lower()
    if entity == "cardiomegaly":
        return "heart_size"
    side = ("both" if re.search(r"bilateral|bibasilar|both", s) else
            "left" if re.search(r"\bleft\b", s) else "right" if re.search(r"\bright\b", s)
            else None)
    if side is None:
        return "unspecified"
    if entity in ("effusion", "pneumothorax") and side != "both":
        return f"{side}_pleural"
    zone = next((z for word, z in _ZONES if word in s), None)
    if s.count("bibasilar"):
        zone = "lower"
    return _SIDED.get((side, zone), _SIDED[(side, None)])


def synthetic_matrix(labels: dict[str, int], report: str | None) -> np.ndarray:
    """The [51, 75] matrix of one synthetic pair: -1 (not said) everywhere, 0 in the
    'unspecified' row of an absent entity, 1 at the anatomy of each present entity."""
    m = np.full((len(ANATOMIES), len(OBSERVATIONS)), -1, dtype=np.int8)
    unspec = ANATOMIES.index("unspecified")
    sentences = [t.strip() for t in re.split(r"(?<=\.)\s+", report or "") if t.strip()]
    for name, value in labels.items():
        entity = query_of(name)
        if entity is None or value not in (0, 1):
            continue
        j = OBSERVATIONS.index(entity)
        if value == 0:
            if not (m[:, j] == 1).any():
                m[unspec, j] = 0
            continue
        m[:, j] = np.where(m[:, j] == 0, -1, m[:, j])
        pattern = _KEYWORDS.get(entity)
        places = {place_of(t, entity) for t in sentences
                  if pattern and re.search(pattern, t.lower())
                  and not re.search(r"\bno\b|without|negative|free of", t.lower())}
        for p in places or {"unspecified"}:
            m[ANATOMIES.index(p), j] = 1
    return m
