"""Chest pathologies: each drawer paints its visual signature onto the attenuation map and
returns the exact region it painted (the ground truth) with the words that describe it.

Attributes use radiology conventions: `side` is the patient's side ("right" = image left),
`zone` one of upper/mid/lower (plus apical/basilar/perihilar wording chosen by the report).
Lesion positions and sizes are drawn from real box distributions (RSNA for pneumonia-like
opacities, NIH for nodules, masses, atelectasis) and pneumothorax shapes from real SIIM masks,
mapped into this phantom's lung box.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from bench.synth.anatomy import Anatomy, _blur, smooth_noise
from bench.synth.anchors import Anchors

# typical lung box of a real 1024 film, used to map real boxes into this phantom's lungs
_REAL_LUNG_BOX = (0.12, 0.10, 0.88, 0.82)


@dataclass
class Drawn:
    """One drawn finding: canonical name, exact mask, per-instance masks and attributes."""

    name: str
    mask: np.ndarray  # bool H x W
    instances: list[np.ndarray] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.instances:
            self.instances = [self.mask]


def zone_of(an: Anatomy, side: str, y: float) -> str:
    x0, y0, x1, y1 = an.side_boxes[side]
    f = (y - y0) / max(y1 - y0, 1)
    return "upper" if f < 0.36 else ("mid" if f < 0.64 else "lower")


def side_of(an: Anatomy, x: float) -> str:
    return "right" if x < an.cx else "left"


def _size_word(frac: float, cuts: tuple[float, float]) -> str:
    return "small" if frac < cuts[0] else ("moderate" if frac < cuts[1] else "large")


def _blob(an: Anatomy, rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float,
          rough: float = 0.35) -> np.ndarray:
    """An irregular ellipse-like region (bool, full frame)."""
    h, w = an.h, an.w
    out = np.zeros((h, w), bool)
    x0, x1 = int(max(cx - rx * 1.5, 0)), int(min(cx + rx * 1.5 + 1, w))
    y0, y1 = int(max(cy - ry * 1.5, 0)), int(min(cy + ry * 1.5 + 1, h))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return out
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    d = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
    n = smooth_noise(rng, y1 - y0, x1 - x0, 5)
    out[y0:y1, x0:x1] = d < 1 + rough * (n - 0.5) * 2
    return out


def _nearest_lung_point(an: Anatomy, rng, side: str, x: float, y: float) -> tuple[float, float]:
    lung = an.lung(side)
    xi, yi = int(np.clip(x, 0, an.w - 1)), int(np.clip(y, 0, an.h - 1))
    if lung[yi, xi]:
        return x, y
    ys, xs = np.nonzero(lung)
    k = np.argmin((xs - x) ** 2 + (ys - y) ** 2)
    return float(xs[k]), float(ys[k])


def _real_box(an: Anatomy, box: np.ndarray) -> tuple[float, float, float, float]:
    """A real normalized (x, y, w, h) box -> centre and half-sizes in this phantom."""
    rx0, ry0, rx1, ry1 = _REAL_LUNG_BOX
    lx0, ly0, lx1, ly1 = an.lung_box
    sx = (lx1 - lx0) / (rx1 - rx0)
    sy = (ly1 - ly0) / (ry1 - ry0)
    cx = lx0 + (box[0] + box[2] / 2 - rx0) * sx
    cy = ly0 + (box[1] + box[3] / 2 - ry0) * sy
    return cx, cy, box[2] * sx / 2, box[3] * sy / 2


def _paint(img: np.ndarray, mask: np.ndarray, amp: float, rng, s: int, texture: float = 0.4,
           soft: float = 0.006) -> None:
    dens = _blur(mask.astype(np.float32), soft * s)
    tex = 1 - texture + texture * smooth_noise(rng, img.shape[0], img.shape[1], 12)
    img += amp * dens * tex


def opacity(an: Anatomy, img: np.ndarray, rng: np.random.Generator, anchors: Anchors,
            name: str, side: str | None = None) -> Drawn:
    """Pneumonia / consolidation / lung opacity at a real RSNA box position and size."""
    s = min(an.h, an.w)
    for _ in range(20):
        box = anchors.rsna_boxes[rng.integers(len(anchors.rsna_boxes))]
        cx, cy, rx, ry = _real_box(an, box)
        if side is None or side_of(an, cx) == side:
            break
    side = side_of(an, cx)
    cx, cy = _nearest_lung_point(an, rng, side, cx, cy)
    scale = {"Consolidation": 0.9, "Pneumonia": 0.8, "Lung Opacity": 0.7}[name]
    rx, ry = max(rx * scale, 0.03 * s), max(ry * scale, 0.035 * s)
    mask = _blob(an, rng, cx, cy, rx, ry, 0.45) & an.lung(side)
    if mask.sum() < 0.0004 * an.h * an.w:
        mask = _blob(an, rng, cx, cy, 0.06 * s, 0.07 * s) & an.lung(side)
    sev = rng.choice(["mild", "moderate", "severe"], p=[0.35, 0.45, 0.2])
    amp = {"mild": 0.15, "moderate": 0.21, "severe": 0.28}[sev]
    if name == "Consolidation":
        amp += 0.06
    _paint(img, mask, amp, rng, s, texture=0.4 if name == "Pneumonia" else 0.25)
    if name == "Consolidation":  # air bronchograms
        ys, xs = np.nonzero(mask)
        lines = np.zeros_like(img)
        for _ in range(3):
            k = rng.integers(len(xs))
            ang = rng.uniform(0, np.pi)
            ln = 0.04 * s
            p0 = (int(xs[k]), int(ys[k]))
            p1 = (int(xs[k] + ln * np.cos(ang)), int(ys[k] + ln * np.sin(ang)))
            cv2.line(lines, p0, p1, 1.0, max(1, s // 256), cv2.LINE_AA)
        img -= 0.08 * _blur(lines, 0.6) * mask
    ys, xs = np.nonzero(mask)
    zone = zone_of(an, side, float(ys.mean()))
    area = mask.sum() / max(an.lung(side).sum(), 1)
    return Drawn(name, mask, attrs={"side": side, "zone": zone, "severity": str(sev),
                                    "size": _size_word(area, (0.08, 0.2)),
                                    "pattern": "patchy" if name != "Consolidation" else "dense"})


def covid_pattern(an: Anatomy, img: np.ndarray, rng: np.random.Generator) -> Drawn:
    """Bilateral peripheral lower-zone ground-glass opacities (COVID-19-like)."""
    s = min(an.h, an.w)
    k = max(3, int(0.10 * (an.lung_box[2] - an.lung_box[0])))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    patches = smooth_noise(rng, an.h, an.w, 14) > 0.42
    mask = np.zeros((an.h, an.w), bool)
    instances = []
    for side in ("right", "left"):
        lung = an.lung(side)
        core = cv2.erode(lung.astype(np.uint8), kernel).astype(bool)
        x0, y0, x1, y1 = an.side_boxes[side]
        lower = np.zeros_like(lung)
        lower[int(y0 + 0.42 * (y1 - y0)):] = True
        m = lung & ~core & lower & patches
        instances.append(m)
        mask |= m
    sev = rng.choice(["mild", "moderate", "severe"], p=[0.3, 0.5, 0.2])
    _paint(img, mask, {"mild": 0.10, "moderate": 0.14, "severe": 0.19}[sev], rng, s, 0.5)
    return Drawn("COVID-19", mask, instances, {"side": "bilateral", "zone": "lower",
                                                "pattern": "peripheral", "severity": str(sev)})


def atelectasis(an: Anatomy, img: np.ndarray, rng: np.random.Generator) -> Drawn:
    """Plate-like (linear) bands or basilar subsegmental collapse, one side or both."""
    s = min(an.h, an.w)
    kind = rng.choice(["platelike", "basilar"], p=[0.45, 0.55])
    sides = ["right", "left"] if rng.random() < 0.35 else [str(rng.choice(["right", "left"]))]
    mask = np.zeros((an.h, an.w), bool)
    instances = []
    for side in sides:
        x0, y0, x1, y1 = an.side_boxes[side]
        lung = an.lung(side)
        if kind == "platelike":
            band = np.zeros((an.h, an.w), np.uint8)
            yc = y0 + rng.uniform(0.62, 0.8) * (y1 - y0)
            xa, xb = x0 + 0.2 * (x1 - x0), x0 + 0.8 * (x1 - x0)
            tilt = rng.uniform(-0.05, 0.05) * (y1 - y0)
            cv2.line(band, (int(xa), int(yc - tilt)), (int(xb), int(yc + tilt)), 1,
                     max(3, int(0.028 * s)))
            m = band.astype(bool) & lung
        else:
            xc = x0 + (0.7 if side == "right" else 0.3) * (x1 - x0)
            yl = y0 + 0.86 * (y1 - y0)
            m = _blob(an, rng, xc, yl, 0.2 * (x1 - x0), 0.1 * (y1 - y0), 0.3) & lung
        if m.sum() == 0:
            continue
        instances.append(m)
        mask |= m
    _paint(img, mask, 0.2, rng, s, 0.2, soft=0.003)
    side = "bilateral" if len(instances) > 1 else sides[0]
    return Drawn("Atelectasis", mask, instances, {"side": side, "zone": "lower",
                                                   "pattern": str(kind)})


def edema(an: Anatomy, img: np.ndarray, rng: np.random.Generator) -> Drawn:
    """Bilateral perihilar haze fading to the periphery (pulmonary edema)."""
    min(an.h, an.w)
    sev = rng.choice(["mild", "moderate", "severe"], p=[0.4, 0.4, 0.2])
    yy = np.arange(an.h, dtype=np.float32)[:, None]
    xx = np.arange(an.w, dtype=np.float32)[None, :]
    tw = an.lung_box[2] - an.lung_box[0]
    lh = an.lung_box[3] - an.lung_box[1]
    hy = an.lung_box[1] + 0.48 * lh
    spread = {"mild": 0.16, "moderate": 0.21, "severe": 0.27}[str(sev)]
    g = (np.exp(-((np.abs(xx - an.cx) - 0.12 * tw) / (spread * tw)) ** 2)
         * np.exp(-((yy - hy) / (1.9 * spread * lh)) ** 2))
    lungs = an.lung("right") | an.lung("left")
    mask = (g > 0.5) & lungs
    amp = {"mild": 0.14, "moderate": 0.19, "severe": 0.25}[str(sev)]
    img += amp * g * an.lung_soft * (0.7 + 0.3 * smooth_noise(rng, an.h, an.w, 16))
    # Kerley-like interstitial lines at the bases
    return Drawn("Edema", mask, [mask & an.lung("right"), mask & an.lung("left")],
                 {"side": "bilateral", "zone": "perihilar", "severity": str(sev)})


def lesion(an: Anatomy, img: np.ndarray, rng: np.random.Generator, anchors: Anchors) -> Drawn:
    """A round nodule (< 3 cm) or mass, placed from real NIH nodule/mass boxes."""
    s = min(an.h, an.w)
    kind = "nodule" if rng.random() < 0.65 else "mass"
    src = anchors.nih_boxes.get("Nodule" if kind == "nodule" else "Mass")
    if src is not None and len(src):
        cx, cy, _, _ = _real_box(an, src[rng.integers(len(src))])
    else:
        cx = rng.uniform(*an.lung_box[0::2])
        cy = rng.uniform(an.lung_box[1], an.lung_box[3])
    side = side_of(an, cx)
    cx, cy = _nearest_lung_point(an, rng, side, cx, cy)
    r = (rng.uniform(0.012, 0.022) if kind == "nodule" else rng.uniform(0.035, 0.06)) * s
    mask = _blob(an, rng, cx, cy, r, r * rng.uniform(0.85, 1.15), 0.15)
    _paint(img, mask, 0.22 if kind == "nodule" else 0.26, rng, s, 0.15, soft=0.002)
    return Drawn("Lung Lesion", mask, attrs={"side": side, "zone": zone_of(an, side, cy),
                                             "kind": kind,
                                             "size": "small" if kind == "nodule" else "large"})


def effusion(an: Anatomy, img: np.ndarray, rng: np.random.Generator) -> Drawn:
    """Basal fluid with a meniscus rising laterally, blunting the costophrenic angle."""
    s = min(an.h, an.w)
    r = rng.random()
    sides = ["right", "left"] if r < 0.4 else [str(rng.choice(["right", "left"]))]
    size = str(rng.choice(["small", "moderate", "large"], p=[0.5, 0.35, 0.15]))
    frac = {"small": 0.14, "moderate": 0.28, "large": 0.45}[size] * rng.uniform(0.85, 1.15)
    yy = np.arange(an.h, dtype=np.float32)[:, None]
    xx = np.arange(an.w, dtype=np.float32)[None, :]
    mask = np.zeros((an.h, an.w), bool)
    instances = []
    for side in sides:
        x0, y0, x1, y1 = an.side_boxes[side]
        lung = (an.lungs == (1 if side == "right" else 2))
        lateral = (x0 - xx) / (x1 - x0) if side == "left" else (xx - x0) / (x1 - x0)
        lat = np.clip(1 - np.abs(lateral) if side == "right" else 1 + lateral, 0, 1)
        level = y1 - frac * (y1 - y0) - 0.10 * (y1 - y0) * lat ** 2
        m = lung & (yy > level) & ~an.heart
        if m.sum() == 0:
            continue
        instances.append(m)
        mask |= m
    dens = _blur(mask.astype(np.float32), 0.012 * s)
    img += 0.36 * dens * an.lung_soft + 0.03 * dens
    side = "bilateral" if len(instances) > 1 else sides[0]
    return Drawn("Pleural Effusion", mask, instances, {"side": side, "zone": "lower",
                                                       "size": size})


def pneumothorax(an: Anatomy, img: np.ndarray, rng: np.random.Generator,
                 anchors: Anchors) -> Drawn:
    """A lucent rim without lung markings and a visible pleural line; shape from real SIIM."""
    s = min(an.h, an.w)
    mask = None
    for _ in range(8):
        tpl = anchors.ptx_masks[rng.integers(len(anchors.ptx_masks))]
        m = cv2.resize(tpl, (an.w, an.h), interpolation=cv2.INTER_NEAREST).astype(bool)
        ys, xs = np.nonzero(m)
        side = side_of(an, float(xs.mean()))
        lung = an.lungs == (1 if side == "right" else 2)
        inter = m & lung
        if inter.sum() >= 0.5 * m.sum() and inter.sum() > 0.002 * an.h * an.w:
            mask = inter
            break
    if mask is None:  # procedural apicolateral rim
        side = str(rng.choice(["right", "left"]))
        lung = (an.lungs == (1 if side == "right" else 2)).astype(np.uint8)
        x0, y0, x1, y1 = an.side_boxes[side]
        k = max(3, int(rng.uniform(0.06, 0.16) * (x1 - x0)))
        shift = k if side == "right" else -k
        core = np.roll(cv2.erode(lung, np.ones((k, k), np.uint8)), (k // 2, shift // 2), (0, 1))
        mask = lung.astype(bool) & ~core.astype(bool)
        mask[int(y0 + 0.6 * (y1 - y0)):] = False
    # lucent, featureless: replace with a smooth, darker background
    smooth = _blur(img, 0.02 * s)
    fm = _blur(mask.astype(np.float32), 0.002 * s)
    img[:] = img * (1 - fm) + (smooth - 0.08) * fm
    edge = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~mask
    edge &= an.lungs > 0
    img += 0.07 * _blur(edge.astype(np.float32), 0.6)
    frac = mask.sum() / max((an.lungs == (1 if side == "right" else 2)).sum(), 1)
    ys, xs = np.nonzero(mask)
    zone = "apical" if ys.mean() < an.side_boxes[side][1] + 0.35 * (
        an.side_boxes[side][3] - an.side_boxes[side][1]) else "lateral"
    return Drawn("Pneumothorax", mask, attrs={"side": side, "zone": zone,
                                              "size": _size_word(frac, (0.08, 0.2))})


def support_devices(an: Anatomy, img: np.ndarray, rng: np.random.Generator) -> Drawn:
    """Endotracheal tube, enteric tube, central venous line and/or pacemaker."""
    s = min(an.h, an.w)
    layer = np.zeros((an.h, an.w), np.float32)
    th = max(2, int(0.008 * s))
    devices = []
    instances = []
    opts = ["ett", "ngt", "cvc", "pacemaker"]
    chosen = [d for d in opts if rng.random() < 0.35] or [str(rng.choice(opts))]
    cx, (_crx, cry) = an.cx, an.carina
    lh = an.lung_box[3] - an.lung_box[1]
    tw = an.lung_box[2] - an.lung_box[0]
    for dev in chosen:
        one = np.zeros_like(layer)
        if dev == "ett":
            cm = float(rng.uniform(2.5, 6))
            tip = cry - cm * 0.025 * lh
            cv2.line(one, (int(cx), 0), (int(cx + 0.005 * tw), int(tip)), 1.0, th)
            devices.append(("ett", {"cm": round(cm)}))
        elif dev == "ngt":
            gx = an.side_boxes["left"][0] + 0.4 * (an.side_boxes["left"][2]
                                                   - an.side_boxes["left"][0])
            pts = np.array([[cx - 0.01 * tw, 0], [cx - 0.01 * tw, an.lung_box[3]],
                            [gx, an.lung_box[3] + 0.08 * an.h]], np.int32)
            cv2.polylines(one, [pts], False, 1.0, th)
            devices.append(("ngt", {}))
        elif dev == "cvc":
            sgn = -1 if rng.random() < 0.6 else 1
            side = "right" if sgn < 0 else "left"
            pts = np.array([[cx + sgn * 0.22 * tw, 0], [cx + sgn * 0.12 * tw, an.lung_box[1]],
                            [cx - 0.04 * tw, cry + 0.08 * lh]], np.int32)
            cv2.polylines(one, [pts], False, 1.0, max(1, th - 1))
            devices.append(("cvc", {"side": side}))
        else:
            px = an.side_boxes["left"][0] + 0.5 * (an.side_boxes["left"][2]
                                                   - an.side_boxes["left"][0])
            py = an.lung_box[1] + 0.02 * lh
            cv2.rectangle(one, (int(px - 0.05 * tw), int(py - 0.035 * lh)),
                          (int(px + 0.05 * tw), int(py + 0.035 * lh)), 1.0, -1)
            hx = (an.heart_box[0] + an.heart_box[2]) / 2
            pts = np.array([[px, py], [cx + 0.05 * tw, cry], [hx, an.heart_box[3] - 0.1 * lh]],
                           np.int32)
            cv2.polylines(one, [pts], False, 1.0, th)
            devices.append(("pacemaker", {}))
        instances.append(one > 0)
        layer = np.maximum(layer, one)
    mask = layer > 0
    img += 0.45 * _blur(layer, 0.6)
    return Drawn("Support Devices", mask, instances, {"devices": devices, "side": "bilateral"})


def cardiomegaly(an: Anatomy) -> Drawn:
    """The enlarged heart itself (the anatomy was drawn with CTR > 0.5)."""
    sev = "mild" if an.ctr < 0.56 else ("moderate" if an.ctr < 0.62 else "severe")
    return Drawn("Cardiomegaly", an.heart.copy(), attrs={"ctr": round(an.ctr, 3),
                                                          "severity": sev, "side": "bilateral"})


def enlarged_cardiomediastinum(an: Anatomy) -> Drawn:
    return Drawn("Enlarged Cardiomediastinum", an.mediastinum.copy(),
                 attrs={"side": "bilateral", "zone": "upper"})


# --- ChestX-Det10 extras -----------------------------------------------------------------

def calcification(an: Anatomy, img: np.ndarray, rng: np.random.Generator) -> Drawn:
    s = min(an.h, an.w)
    side = str(rng.choice(["right", "left"]))
    ys, xs = np.nonzero(an.lung(side))
    k = rng.integers(len(xs))
    r = rng.uniform(0.006, 0.011) * s
    mask = _blob(an, rng, float(xs[k]), float(ys[k]), r, r, 0.1)
    img += 0.35 * _blur(mask.astype(np.float32), 0.5)
    return Drawn("Calcification", mask, attrs={"side": side, "zone": zone_of(an, side, ys[k])})


def fibrosis(an: Anatomy, img: np.ndarray, rng: np.random.Generator) -> Drawn:
    s = min(an.h, an.w)
    side = str(rng.choice(["right", "left"]))
    x0, y0, x1, y1 = an.side_boxes[side]
    region = _blob(an, rng, (x0 + x1) / 2, y0 + 0.25 * (y1 - y0), 0.3 * (x1 - x0),
                   0.18 * (y1 - y0), 0.4) & an.lung(side)
    lines = np.zeros((an.h, an.w), np.float32)
    ys, xs = np.nonzero(region)
    for _ in range(40 if len(xs) else 0):
        k = rng.integers(len(xs))
        a = rng.uniform(0, np.pi)
        ln = rng.uniform(0.02, 0.05) * s
        cv2.line(lines, (int(xs[k]), int(ys[k])),
                 (int(xs[k] + ln * np.cos(a)), int(ys[k] + ln * np.sin(a))), 1.0, 1, cv2.LINE_AA)
    img += 0.10 * _blur(lines, 0.7) * region + 0.04 * _blur(region.astype(np.float32), 2)
    return Drawn("Fibrosis", region, attrs={"side": side, "zone": "upper"})


def emphysema(an: Anatomy, img: np.ndarray, rng: np.random.Generator) -> Drawn:
    mask = an.lung("right") | an.lung("left")
    upper = np.zeros_like(mask)
    upper[: int(an.lung_box[1] + 0.6 * (an.lung_box[3] - an.lung_box[1]))] = True
    mask &= upper
    img -= 0.07 * _blur(mask.astype(np.float32), 3)
    return Drawn("Emphysema", mask, [mask & an.lung("right"), mask & an.lung("left")],
                 {"side": "bilateral", "zone": "upper"})


def fracture(an: Anatomy, img: np.ndarray, rng: np.random.Generator) -> Drawn:
    s = min(an.h, an.w)
    side = str(rng.choice(["right", "left"]))
    x0, y0, x1, y1 = an.side_boxes[side]
    fx = x0 + (0.08 if side == "right" else 0.92) * (x1 - x0)
    fy = y0 + rng.uniform(0.3, 0.7) * (y1 - y0)
    r = 0.025 * s
    mask = np.zeros((an.h, an.w), bool)
    mask[int(fy - r):int(fy + r), int(fx - r):int(fx + r)] = True
    line = np.zeros((an.h, an.w), np.float32)
    cv2.line(line, (int(fx - r * 0.6), int(fy - r * 0.8)), (int(fx + r * 0.6), int(fy + r * 0.8)),
             1.0, max(1, s // 200))
    bump = _blob(an, rng, fx, fy, r * 0.5, r * 0.35, 0.2).astype(np.float32)
    img += 0.10 * _blur(bump, 1.0) - 0.12 * _blur(line, 0.6)
    return Drawn("Fracture", mask, attrs={"side": side, "zone": zone_of(an, side, fy)})
