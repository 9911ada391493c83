"""Normal chest anatomy of a phantom PA radiograph, drawn as an attenuation map.

Brightness stands for attenuation (MONOCHROME2: bone and soft tissue bright, air dark). The
lung fields come from a real lung mask (anchors), scaled to the patient's thorax; heart,
mediastinum, spine, ribs, clavicles, diaphragm and stomach bubble are drawn around them.
Image-left is the patient's right, as on a real PA film.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from bench.synth.anchors import Anchors


@dataclass
class Anatomy:
    h: int
    w: int
    lungs: np.ndarray  # uint8 label map: 1 = patient right (image left), 2 = patient left
    heart: np.ndarray  # bool
    cx: float  # midline x
    lung_box: tuple[int, int, int, int]  # x0, y0, x1, y1 of both lungs
    side_boxes: dict[str, tuple[int, int, int, int]]  # "right"/"left" -> x0, y0, x1, y1
    heart_box: tuple[int, int, int, int]
    mediastinum: np.ndarray  # bool, upper mediastinal silhouette above the heart
    carina: tuple[float, float]
    ctr: float  # cardiothoracic ratio
    base: np.ndarray  # float32 attenuation map before pathologies
    lung_soft: np.ndarray  # float32 0..1 blurred aerated-lung weight

    def lung(self, side: str) -> np.ndarray:
        """Aerated lung of one side ('right' = patient right = image left), minus heart."""
        return (self.lungs == (1 if side == "right" else 2)) & ~self.heart


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur, done at reduced resolution for wide kernels (speed)."""
    if sigma < 4:
        return cv2.GaussianBlur(a, (0, 0), max(sigma, 0.3))
    f = int(max(1, sigma // 3))
    small = cv2.resize(a, (a.shape[1] // f, a.shape[0] // f), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / f)
    return cv2.resize(small, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_LINEAR)


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 (exclusive) of a non-empty mask."""
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1] (bicubic upsampling of a small random grid)."""
    g = rng.random((cells, cells)).astype(np.float32)
    return np.clip(cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC), 0, 1)


def draw_anatomy(rng: np.random.Generator, h: int, w: int, anchors: Anchors,
                 ctr: float | None = None, mediastinum_width: float = 1.0) -> Anatomy:
    """A normal thorax; `ctr` forces the cardiothoracic ratio (cardiomegaly: > 0.5)."""
    s = min(h, w)
    cx = w / 2 + rng.normal(0, 0.015) * w
    tw = w * rng.uniform(0.66, 0.80)  # thoracic (lung) width: patient size
    y0 = h * rng.uniform(0.07, 0.13)
    inspiration = rng.uniform(0.56, 0.70)  # lung height / image height
    lh = h * inspiration
    tpl = anchors.lungs[rng.integers(len(anchors.lungs))]
    x0 = int(round(cx - tw / 2))
    lungs = np.zeros((h, w), np.uint8)
    placed = cv2.resize(tpl, (int(tw), int(lh)), interpolation=cv2.INTER_NEAREST)
    ya, xa = int(y0), max(x0, 0)
    ph, pw = min(placed.shape[0], h - ya), min(placed.shape[1] - (xa - x0), w - xa)
    lungs[ya:ya + ph, xa:xa + pw] = placed[:ph, xa - x0:xa - x0 + pw]
    lung_box = bbox(lungs > 0)
    side_boxes = {side: bbox(lungs == v) for side, v in (("right", 1), ("left", 2))}
    thor_w = lung_box[2] - lung_box[0]
    lh = lung_box[3] - lung_box[1]

    # heart: bulges to the patient's left (image right); width = CTR x thoracic width
    ctr = float(ctr if ctr is not None else rng.uniform(0.38, 0.47))
    hw = ctr * thor_w
    hh = lh * rng.uniform(0.36, 0.42) * (1 + 0.6 * max(ctr - 0.47, 0))
    hcx = cx + hw * rng.uniform(0.10, 0.16)
    hcy = lung_box[1] + rng.uniform(0.70, 0.74) * lh
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    heart = (((xx - hcx) / (hw / 2)) ** 2 + ((yy - hcy) / (hh / 2)) ** 2) < 1
    heart &= yy < lung_box[3] - 0.06 * lh
    heart_box = bbox(heart)
    ctr = (heart_box[2] - heart_box[0]) / thor_w

    med_half = 0.085 * thor_w * mediastinum_width
    mediastinum = ((np.abs(xx - cx - 0.01 * thor_w) < med_half) & (yy > lung_box[1] + 0.04 * lh)
                   & (yy < heart_box[1] + 0.15 * (heart_box[3] - heart_box[1])))
    lungs[mediastinum | heart] = np.where(mediastinum[mediastinum | heart], 0,
                                          lungs[mediastinum | heart])
    air = ((lungs > 0) & ~heart).astype(np.float32)
    lung_soft = _blur(air, 0.012 * s)

    # body: thicker in the middle (brighter), shoulders narrowing toward the neck
    body_half = np.float32(thor_w * rng.uniform(0.62, 0.70))
    shoulder = np.clip((yy - (lung_box[1] - 0.08 * h)) / (0.12 * h), 0, 1)
    # widest at the axillae, tapering a little toward the waist
    waist = 1 - 0.10 * np.clip((yy - lung_box[1] - 0.3 * lh) / (0.9 * lh), 0, 1)
    half = body_half * (0.45 + 0.55 * np.sqrt(shoulder)) * waist
    t = np.clip(1 - ((xx - cx) / half) ** 2, 0, 1)
    base = 0.04 + 0.52 * np.sqrt(t)
    base = cv2.GaussianBlur(base, (0, 0), 0.004 * s)
    # abdomen below the domes a bit denser
    inbody = (t > 0).astype(np.float32)
    base += 0.06 * np.clip((yy - lung_box[3] + 0.05 * h) / (0.1 * h), 0, 1) * inbody

    # spine and mediastinum
    spine = np.exp(-((xx - cx) / (0.045 * thor_w)) ** 4)
    vert = 0.5 + 0.5 * np.cos(2 * np.pi * (yy - y0) / (lh / 11.5))
    fade = np.clip((lung_box[3] - yy) / (0.5 * lh), 0.25, 1)
    base += (spine * ((0.05 + 0.025 * vert) * fade)) * inbody
    medi = _blur(mediastinum.astype(np.float32), 0.006 * s)
    base += 0.05 * medi

    # aerated lungs: darker laterally and at the bases; markings radiate from the hila
    depth = 0.38 + 0.07 * smooth_noise(rng, h, w, 4)
    base -= lung_soft * depth
    markings = np.zeros((h, w), np.float32)
    hilum_y = lung_box[1] + 0.42 * lh
    for side, sgn in (("right", -1), ("left", 1)):
        bx0, by0, bx1, by1 = side_boxes[side]
        hx0 = cx + sgn * 0.13 * thor_w
        n_br = 40
        angs = rng.uniform(-0.45 * np.pi, 0.45 * np.pi, n_br)
        lens = rng.uniform(0.15, 0.45, n_br) * thor_w / 5
        starts = hilum_y + rng.normal(0, 0.06 * lh, n_br)
        turns = rng.normal(0, 0.45, (n_br, 5))
        thick0 = max(1, int(0.006 * s))
        for b in range(n_br):
            ang, px, py, thick = angs[b], hx0, starts[b], thick0
            for k in range(5):
                ang += turns[b, k]
                nx = px + sgn * abs(np.cos(ang)) * lens[b]
                ny = py + np.sin(ang) * lens[b]
                cv2.line(markings, (int(px), int(py)), (int(nx), int(ny)), 1.0, thick, cv2.LINE_AA)
                px, py = nx, ny
                thick = max(1, thick - 1)
    hilar = (np.exp(-((np.abs(xx - cx) - 0.16 * thor_w) / (0.07 * thor_w)) ** 2)
             * np.exp(-((yy - hilum_y) / (0.12 * lh)) ** 2))
    base += (_blur(markings, 0.002 * s) * 0.06 + 0.12 * hilar) * lung_soft
    # soft tissue (breasts, pectorals) over the lower fields
    base += 0.07 * np.clip((yy - lung_box[1] - 0.5 * lh) / (0.5 * lh), 0, 1) * lung_soft

    # heart over the left lower field
    base += _blur(heart.astype(np.float32), 0.006 * s) * 0.015

    # ribs: posterior arcs from the spine, anterior ribs sloping medially downward
    ribs = np.zeros((h, w), np.float32)
    n_ribs = 10
    th = max(2, int(0.019 * h))
    for sgn in (-1, 1):
        for k in range(n_ribs):
            ys0 = lung_box[1] + (k - 0.6) * lh / (n_ribs - 0.8)
            tt = np.linspace(0, 1, 14)
            px = cx + sgn * (0.05 + 0.50 * tt) * thor_w
            py = ys0 - 0.05 * lh * np.sin(np.pi * tt * 0.8) + 0.40 * lh * tt ** 2.2 * (1 - 0.04 * k)
            pts = np.stack([px, py], 1).astype(np.int32)
            cv2.polylines(ribs, [pts], False, 1.0, th, cv2.LINE_AA)
            if k < 7:
                ay = ys0 + 0.16 * lh
                px2 = cx + sgn * (0.50 - 0.34 * tt) * thor_w
                py2 = ay + 0.20 * lh * tt + 0.04 * lh * tt ** 2
                pts2 = np.stack([px2, py2], 1).astype(np.int32)
                cv2.polylines(ribs, [pts2], False, 0.35, max(1, th * 2 // 3), cv2.LINE_AA)
        # clavicle
        tt = np.linspace(0, 1, 10)
        px = cx + sgn * (0.06 + 0.40 * tt) * thor_w
        py = lung_box[1] + (0.04 - 0.09 * tt + 0.04 * tt ** 2) * lh
        pts = np.stack([px, py], 1).astype(np.int32)
        cv2.polylines(ribs, [pts], False, 1.3, max(2, int(0.028 * h)), cv2.LINE_AA)
    ribs = _blur(ribs, 0.0025 * s)
    below = np.clip((lung_box[3] + 0.02 * h - yy) / (0.05 * h), 0, 1)
    base += ribs * inbody * (0.02 + 0.055 * lung_soft) * below

    # stomach bubble under the left hemidiaphragm
    lb = side_boxes["left"]
    gx, gy = lb[0] + 0.55 * (lb[2] - lb[0]), lung_box[3] + 0.06 * h
    bubble = np.zeros((h, w), np.float32)
    cv2.ellipse(bubble, (int(gx), int(gy)), (int(0.06 * thor_w), int(0.03 * h)), 0, 0, 360,
                1.0, -1)
    base -= 0.10 * _blur(bubble, 0.006 * s)

    carina = (cx, lung_box[1] + 0.30 * lh)
    return Anatomy(h, w, lungs, heart, cx, lung_box, side_boxes, heart_box, mediastinum,
                   carina, ctr,
                   base.astype(np.float32), lung_soft)
