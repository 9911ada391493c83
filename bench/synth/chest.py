"""One synthetic chest radiograph: sample findings, draw anatomy and pathologies, then apply
patient rotation, film blur, exposure and noise. Masks go through the same geometry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from bench.synth import pathologies as P
from bench.synth.anatomy import draw_anatomy, smooth_noise
from bench.synth.anchors import Anchors

# drawn findings (canonical names); the CheXpert label set is derived from them in labels.py
FINDINGS = ("Pneumonia", "Consolidation", "Lung Opacity", "Atelectasis", "Cardiomegaly",
            "Edema", "Enlarged Cardiomediastinum", "Lung Lesion", "Pleural Effusion",
            "Pneumothorax", "Support Devices", "COVID-19", "Calcification", "Fibrosis",
            "Emphysema", "Fracture")

# per-image probability of each finding, by the dataset a phantom is made for
PROFILES: dict[str, dict[str, float]] = {
    # MIMIC-like prevalence (CheXpert labeler rates on MIMIC-CXR, rounded); COVID-like
    # pattern appears rarely and is never called COVID in the reports
    "mimic": {"Support Devices": 0.26, "Pleural Effusion": 0.22, "Atelectasis": 0.2,
              "Cardiomegaly": 0.18, "Lung Opacity": 0.12, "Edema": 0.11, "Pneumonia": 0.1,
              "Consolidation": 0.06, "Pneumothorax": 0.06, "Lung Lesion": 0.05,
              "Enlarged Cardiomediastinum": 0.05, "COVID-19": 0.02},
    "rsna": {"Support Devices": 0.1, "Pleural Effusion": 0.08, "Cardiomegaly": 0.08,
             "Atelectasis": 0.06},
    "siim": {"Pneumothorax": 0.3, "Support Devices": 0.12, "Pleural Effusion": 0.06,
             "Atelectasis": 0.05},
    "mscxr": {"Atelectasis": 0.2, "Cardiomegaly": 0.2, "Consolidation": 0.15, "Edema": 0.15,
              "Lung Opacity": 0.2, "Pleural Effusion": 0.2, "Pneumonia": 0.25,
              "Pneumothorax": 0.15},
    "chexlocalize": {"Lung Opacity": 0.3, "Atelectasis": 0.3, "Cardiomegaly": 0.25,
                     "Consolidation": 0.12, "Edema": 0.15, "Enlarged Cardiomediastinum": 0.15,
                     "Lung Lesion": 0.1, "Pleural Effusion": 0.25, "Pneumothorax": 0.06,
                     "Support Devices": 0.35},
    "covid": {"COVID-19": 1.0},
    "det10": {"Atelectasis": 0.15, "Calcification": 0.15, "Consolidation": 0.2,
              "Pleural Effusion": 0.2, "Emphysema": 0.08, "Fibrosis": 0.15, "Fracture": 0.12,
              "Lung Lesion": 0.25, "Pneumothorax": 0.08},
}
# sets where most images must carry at least one finding of the profile
MIN_ONE = {"mscxr": 1.0, "chexlocalize": 0.85, "covid": 1.0, "det10": 0.9}
DRAW_ORDER = ("Pneumothorax", "Pleural Effusion", "Emphysema", "Consolidation", "Pneumonia",
              "Lung Opacity", "COVID-19", "Edema", "Atelectasis", "Lung Lesion",
              "Calcification", "Fibrosis", "Fracture", "Support Devices")


@dataclass
class Phantom:
    image: np.ndarray  # uint8 H x W
    findings: list[P.Drawn] = field(default_factory=list)
    view: str = "PA"
    ctr: float = 0.0

    def names(self) -> list[str]:
        return [f.name for f in self.findings]

    def get(self, name: str) -> P.Drawn | None:
        return next((f for f in self.findings if f.name == name), None)


def sample_findings(rng: np.random.Generator, profile: str) -> list[str]:
    prev = PROFILES[profile]
    names = [n for n, p in prev.items() if rng.random() < p]
    if not names and rng.random() < MIN_ONE.get(profile, 0.0):
        keys = list(prev)
        w = np.array([prev[k] for k in keys])
        names = [keys[rng.choice(len(keys), p=w / w.sum())]]
    if "Consolidation" in names and "Pneumonia" in names and rng.random() < 0.5:
        names.remove("Consolidation")
    return names


def make_chest(rng: np.random.Generator, h: int, w: int, anchors: Anchors,
               names: list[str], n_opacities: int = 1) -> Phantom:
    """Draw a phantom with exactly the findings in `names` (`n_opacities` boxes of pneumonia).

    Anatomy and pathologies are drawn at half resolution (at least 256 px) and the image and
    masks are brought to (h, w) together, so masks stay exact for the drawn regions; film
    noise is added at full resolution. This keeps generation above 50 images/s at 512 px.
    """
    out_hw = (h, w)
    f = max(256 / min(h, w), 0.5) if min(h, w) > 256 else 1.0
    h, w = int(round(h * f)), int(round(w * f))
    ctr = float(rng.uniform(0.53, 0.66)) if "Cardiomegaly" in names else None
    med = float(rng.uniform(1.7, 2.2)) if "Enlarged Cardiomediastinum" in names else 1.0
    an = draw_anatomy(rng, h, w, anchors, ctr=ctr, mediastinum_width=med)
    img = an.base.copy()
    drawn: list[P.Drawn] = []
    for name in DRAW_ORDER:
        if name not in names:
            continue
        if name in ("Pneumonia", "Consolidation", "Lung Opacity"):
            parts = [P.opacity(an, img, rng, anchors, name)
                     for _ in range(n_opacities if name == "Pneumonia" else 1)]
            d = parts[0]
            if len(parts) > 1:
                inst = [p.mask for p in parts]
                sides = {p.attrs["side"] for p in parts}
                d = P.Drawn(name, np.logical_or.reduce(inst), inst, dict(parts[0].attrs))
                if len(sides) > 1:
                    d.attrs["side"] = "bilateral"
                d.attrs["multifocal"] = True
        elif name == "COVID-19":
            d = P.covid_pattern(an, img, rng)
        elif name == "Atelectasis":
            d = P.atelectasis(an, img, rng)
        elif name == "Edema":
            d = P.edema(an, img, rng)
        elif name == "Lung Lesion":
            d = P.lesion(an, img, rng, anchors)
        elif name == "Pleural Effusion":
            d = P.effusion(an, img, rng)
        elif name == "Pneumothorax":
            d = P.pneumothorax(an, img, rng, anchors)
        elif name == "Support Devices":
            d = P.support_devices(an, img, rng)
        else:
            d = getattr(P, name.lower())(an, img, rng)
        drawn.append(d)
    if "Cardiomegaly" in names:
        drawn.append(P.cardiomegaly(an))
    if "Enlarged Cardiomediastinum" in names:
        drawn.append(P.enlarged_cardiomediastinum(an))
    drawn = [d for d in drawn if d.mask.any()]
    image, drawn = _film(rng, img, drawn, out_hw)
    view = "AP" if ("Support Devices" in names and rng.random() < 0.7) else "PA"
    return Phantom(image, drawn, view, round(an.ctr, 3))


def _film(rng: np.random.Generator, img: np.ndarray, drawn: list[P.Drawn],
          out_hw: tuple[int, int]):
    """Patient rotation, detector blur, exposure and noise; masks follow the geometry."""
    h, w = img.shape
    oh, ow = out_hw
    ang = rng.normal(0, 2.0)
    sc = rng.uniform(0.96, 1.04)
    mat = cv2.getRotationMatrix2D((w / 2, h / 2), ang, sc)
    mat[:, 2] += rng.normal(0, 0.012, 2) * (w, h)
    img = cv2.warpAffine(img, mat, (w, h), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0.04)

    def warp(m: np.ndarray) -> np.ndarray:
        m = cv2.warpAffine(m.astype(np.uint8), mat, (w, h), flags=cv2.INTER_NEAREST)
        if (h, w) != (oh, ow):
            m = cv2.resize(m, (ow, oh), interpolation=cv2.INTER_NEAREST)
        return m.astype(bool)

    out = []
    for d in drawn:
        inst = [warp(m) for m in d.instances]
        inst = [m for m in inst if m.any()]
        if not inst:
            continue
        out.append(P.Drawn(d.name, np.logical_or.reduce(inst), inst, d.attrs))
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.1) * min(h, w) / 512)
    gamma = rng.uniform(0.8, 1.2)
    lo, hi = rng.uniform(-0.12, -0.04), rng.uniform(0.78, 0.92)
    img = np.clip((img - lo) / (hi - lo), 0, 1) ** gamma
    img += (smooth_noise(rng, h, w, 6) - 0.5) * 0.04
    if (h, w) != (oh, ow):
        img = cv2.resize(img, (ow, oh), interpolation=cv2.INTER_LINEAR)
    tile = _noise_tile()
    oy = int(rng.integers(0, tile.shape[0] - oh + 1))
    ox = int(rng.integers(0, tile.shape[1] - ow + 1))
    img = cv2.scaleAdd(tile[oy:oy + oh, ox:ox + ow], float(rng.uniform(0.008, 0.02)), img)
    return cv2.convertScaleAbs(cv2.max(img, 0.0), alpha=255.0), out


_NOISE: list[np.ndarray] = []


def _noise_tile() -> np.ndarray:
    """A fixed field of unit Gaussian film noise; each image takes a random window of it."""
    if not _NOISE:
        _NOISE.append(np.random.default_rng(20240601).standard_normal((1100, 1100),
                                                                       dtype=np.float32))
    return _NOISE[0]
