"""Synthetic colour fundus photographs with exact lesion masks and paired reports.

Anatomy: circular field of view, orange-red choroidal background with illumination falloff,
optic disc with cup, darker macula and fovea, a vessel tree (darker, thicker veins and lighter
arteries) leaving the disc in four arcades. Lesions with exact masks: drusen, retinal
hemorrhages, choroidal neovascularization (CNV). The paper's nine diseases get visual cues:
MD (drusen/CNV), retinopathy (hemorrhages, exudates), myopia (tessellation, peripapillary
atrophy), glaucoma (large cup), CODA (tilted disc with pit), RAS (narrow, bright arteries),
cataract (global haze), MEM (cellophane macular sheen), ML (macular scar).
Reports are drawn from fixed sentence templates; `PARAPHRASES` holds five hand-written
paraphrases of each, for the SYNTHETIC paraphrase table the writer puts next to the pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from bench.synth.anatomy import smooth_noise

DISEASES = ("Macular Degeneration", "Retinopathy", "Myopia", "Glaucoma",
            "Congenital Optic Disc Anomalies", "Retinal Arteriosclerosis", "Cataract",
            "Macular Epiretinal Membrane", "Macular Lesion")
ABBREVIATIONS = dict(zip(("MD", "Retinopathy", "Myopia", "Glaucoma", "CODA", "RAS", "Cataract",
                          "MEM", "ML"), DISEASES))
LESIONS = ("Choroidal Neovascularization", "Drusen", "Retinal Hemorrhage")
PREVALENCE = {"Macular Degeneration": 0.16, "Retinopathy": 0.16, "Myopia": 0.14,
              "Glaucoma": 0.1, "Congenital Optic Disc Anomalies": 0.05,
              "Retinal Arteriosclerosis": 0.1, "Cataract": 0.1,
              "Macular Epiretinal Membrane": 0.07, "Macular Lesion": 0.07}


@dataclass
class Fundus:
    image: np.ndarray  # uint8 H x W x 3 (RGB)
    eye: str  # "right" | "left"
    diseases: list[str] = field(default_factory=list)
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # lesion -> bool mask
    attrs: dict = field(default_factory=dict)


def _vessel(layer: np.ndarray, rng: np.random.Generator, p: np.ndarray, ang: float,
            length: float, width: float, curl: float, depth: int) -> None:
    steps = 18
    for _ in range(steps):
        ang += curl + rng.normal(0, 0.06)
        q = p + length / steps * np.array([np.cos(ang), np.sin(ang)])
        cv2.line(layer, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), 1.0,
                 max(1, int(round(width))), cv2.LINE_AA)
        if depth > 0 and rng.random() < 0.12:
            _vessel(layer, rng, q.copy(), ang + rng.choice([-1, 1]) * rng.uniform(0.4, 0.9),
                    length * 0.45, width * 0.65, curl * 0.5, depth - 1)
        p = q
        width = max(width * 0.95, 1.0)


def sample_diseases(rng: np.random.Generator) -> list[str]:
    return [d for d, p in PREVALENCE.items() if rng.random() < p]


def make_fundus(rng: np.random.Generator, size: int, diseases: list[str]) -> Fundus:
    s = size
    eye = "right" if rng.random() < 0.5 else "left"
    yy = np.arange(s, dtype=np.float32)[:, None]
    xx = np.arange(s, dtype=np.float32)[None, :]
    c = s / 2
    r = np.sqrt((xx - c) ** 2 + (yy - c) ** 2) / (0.47 * s)
    fov = r < 1
    sgn = 1 if eye == "right" else -1  # disc nasal: image right for a right eye
    disc = np.array([c + sgn * rng.uniform(0.22, 0.27) * s, c + rng.normal(0, 0.02) * s])
    fovea = np.array([c - sgn * rng.uniform(0.0, 0.04) * s, c + rng.normal(0.02, 0.015) * s])
    base = np.array([0.78, 0.36, 0.16], np.float32) * rng.uniform(0.85, 1.1, 3).astype(np.float32)
    illum = np.clip(1 - 0.55 * r ** 2, 0, 1)
    tex = smooth_noise(rng, s, s, 24)
    img = base[None, None, :] * (illum * (0.85 + 0.25 * tex))[..., None]
    # macula: darker, fovea darkest
    dm = np.sqrt((xx - fovea[0]) ** 2 + (yy - fovea[1]) ** 2) / s
    img *= (1 - 0.35 * np.exp(-(dm / 0.07) ** 2))[..., None]
    if "Myopia" in diseases:  # tessellation: choroidal vessels show through
        stripes = 0.5 + 0.5 * np.sin((xx * 0.8 + yy * 0.3) / (0.012 * s) + 3 * tex)
        img *= (1 - 0.18 * stripes * illum)[..., None]
    # optic disc and cup
    dr = 0.075 * s * rng.uniform(0.9, 1.1)
    tilt = rng.uniform(0.55, 0.75) if "Congenital Optic Disc Anomalies" in diseases else 1.0
    dd = np.sqrt(((xx - disc[0]) / tilt) ** 2 + (yy - disc[1]) ** 2)
    discm = np.clip((dr - dd) / (0.01 * s), 0, 1)
    img = img * (1 - discm[..., None]) + np.array([0.98, 0.78, 0.52], np.float32) * discm[..., None]
    cdr = rng.uniform(0.7, 0.88) if "Glaucoma" in diseases else rng.uniform(0.2, 0.45)
    cupm = np.clip((cdr * dr - dd) / (0.008 * s), 0, 1)
    img = img * (1 - 0.6 * cupm[..., None]) + 0.6 * cupm[..., None] * np.array(
        [1.0, 0.95, 0.85], np.float32)
    if "Myopia" in diseases:  # temporal peripapillary atrophy crescent
        cres = (dd < dr * 1.45) & (dd > dr) & ((xx - disc[0]) * sgn < 0)
        img[cres] = img[cres] * 0.4 + np.array([0.95, 0.85, 0.7], np.float32) * 0.6
    if "Congenital Optic Disc Anomalies" in diseases:  # optic pit
        pit = np.sqrt((xx - disc[0] + sgn * 0.4 * dr * tilt) ** 2 + (yy - disc[1]) ** 2) < 0.2 * dr
        img[pit] *= 0.45
    # vessels: veins (dark, wide) and arteries (lighter, thinner; RAS: thin and bright)
    veins = np.zeros((s, s), np.float32)
    arts = np.zeros((s, s), np.float32)
    wv = 0.011 * s
    for _k, (a0, curl) in enumerate([(-1.25, 0.09), (1.25, -0.09), (-1.9, -0.03), (1.9, 0.03)]):
        ang = (a0 if sgn < 0 else np.pi - a0)
        cu = curl if sgn < 0 else -curl
        for layer, wfac, off in ((veins, 1.0, 0.0), (arts, 0.7, 0.12)):
            if "Retinal Arteriosclerosis" in diseases and layer is arts:
                wfac = 0.45
            _vessel(layer, rng, disc.copy(), ang + off, 0.55 * s, wv * wfac, cu, 3)
    img *= (1 - 0.45 * cv2.GaussianBlur(veins, (0, 0), 0.8))[..., None]
    img *= (1 - 0.25 * cv2.GaussianBlur(arts, (0, 0), 0.8))[..., None]
    if "Retinal Arteriosclerosis" in diseases:  # copper-wire light reflex
        core = cv2.erode((arts > 0.5).astype(np.uint8), np.ones((2, 2), np.uint8)) > 0
        img[core] = img[core] * 0.5 + np.array([0.95, 0.6, 0.35], np.float32) * 0.5
    masks: dict[str, np.ndarray] = {}
    if "Macular Degeneration" in diseases:
        dru = np.zeros((s, s), np.uint8)
        for _ in range(int(rng.integers(12, 40))):
            p = fovea + rng.normal(0, 0.06 * s, 2)
            cv2.circle(dru, (int(p[0]), int(p[1])), max(1, int(rng.uniform(0.004, 0.01) * s)),
                       1, -1)
        masks["Drusen"] = dru > 0
        img[masks["Drusen"]] = img[masks["Drusen"]] * 0.35 + np.array(
            [0.95, 0.85, 0.45], np.float32) * 0.65
        if rng.random() < 0.5:
            cnv = np.zeros((s, s), np.uint8)
            p = fovea + rng.normal(0, 0.02 * s, 2)
            ax = (int(rng.uniform(0.035, 0.06) * s), int(rng.uniform(0.03, 0.05) * s))
            cv2.ellipse(cnv, (int(p[0]), int(p[1])), ax, float(rng.uniform(0, 180)), 0, 360, 1, -1)
            rim = cv2.dilate(cnv, np.ones((5, 5), np.uint8)) - cnv
            masks["Choroidal Neovascularization"] = cnv > 0
            img[cnv > 0] = img[cnv > 0] * 0.4 + np.array([0.55, 0.55, 0.4], np.float32) * 0.6
            img[rim > 0] *= np.array([0.6, 0.3, 0.3], np.float32)
    if "Retinopathy" in diseases:
        hem = np.zeros((s, s), np.uint8)
        for _ in range(int(rng.integers(6, 25))):
            p = np.array([c, c]) + rng.uniform(-0.3, 0.3, 2) * s
            rad = max(1, int(rng.uniform(0.004, 0.016) * s))
            if rng.random() < 0.3:  # flame-shaped
                cv2.ellipse(hem, (int(p[0]), int(p[1])), (rad * 2, max(1, rad // 2)),
                            float(rng.uniform(0, 180)), 0, 360, 1, -1)
            else:
                cv2.circle(hem, (int(p[0]), int(p[1])), rad, 1, -1)
        masks["Retinal Hemorrhage"] = (hem > 0) & fov
        img[masks["Retinal Hemorrhage"]] *= np.array([0.55, 0.25, 0.25], np.float32)
        for _ in range(int(rng.integers(3, 12))):  # hard exudates
            p = fovea + rng.normal(0, 0.08 * s, 2)
            cv2.circle(img, (int(p[0]), int(p[1])), max(1, int(0.004 * s)), (0.95, 0.9, 0.5), -1)
    if "Macular Lesion" in diseases:
        p = fovea + rng.normal(0, 0.01 * s, 2)
        scar = np.sqrt((xx - p[0]) ** 2 + (yy - p[1]) ** 2) < rng.uniform(0.03, 0.05) * s
        mott = smooth_noise(rng, s, s, 40)
        img[scar] = img[scar] * 0.3 + (np.array([0.9, 0.75, 0.55], np.float32)
                                       * mott[scar][:, None]) * 0.7
    if "Macular Epiretinal Membrane" in diseases:
        sheen = np.exp(-(dm / 0.09) ** 2) * smooth_noise(rng, s, s, 30)
        img += (0.25 * sheen)[..., None] * np.array([1, 1, 1], np.float32)
    if "Cataract" in diseases:
        img = cv2.GaussianBlur(img, (0, 0), 0.012 * s)
        img = img * 0.7 + 0.18
    else:
        img = cv2.GaussianBlur(img, (0, 0), 0.6)
    img += rng.standard_normal((s, s, 1), dtype=np.float32) * 0.015
    img *= fov[..., None]
    masks = {k: v & fov for k, v in masks.items() if (v & fov).any()}
    out = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    return Fundus(out, eye, sorted(diseases, key=DISEASES.index), masks,
                  {"cdr": round(float(cdr), 2)})


_DISEASE_SENT = {
    "Macular Degeneration": ["Multiple drusen in the macular region, consistent with age-related "
                             "macular degeneration.", "Findings of macular degeneration with "
                             "drusen at the posterior pole."],
    "Retinopathy": ["Scattered retinal hemorrhages and hard exudates, consistent with "
                    "retinopathy.", "Dot and blot hemorrhages throughout the posterior pole "
                    "suggesting retinopathy."],
    "Myopia": ["Tessellated fundus with temporal peripapillary atrophy, consistent with high "
               "myopia.", "Myopic fundus changes with a peripapillary crescent."],
    "Glaucoma": ["Enlarged optic cup, suspicious for glaucoma.",
                 "Glaucomatous optic disc cupping."],
    "Congenital Optic Disc Anomalies": ["Tilted optic disc with an optic pit, a congenital optic "
                                        "disc anomaly."],
    "Retinal Arteriosclerosis": ["Narrowed retinal arterioles with increased light reflex, "
                                 "consistent with retinal arteriosclerosis."],
    "Cataract": ["Hazy media obscuring fundus detail, consistent with cataract."],
    "Macular Epiretinal Membrane": ["Cellophane reflex over the macula, consistent with an "
                                    "epiretinal membrane."],
    "Macular Lesion": ["Pigmented scar at the macula, a macular lesion."],
}
_NORMAL_SENT = {
    "Glaucoma": "The optic disc is well defined with a normal cup.",
    "Retinopathy": "No retinal hemorrhage or exudate.",
    "Macular Degeneration": "No drusen in the macula.",
    "Cataract": "Clear media.",
}


def fundus_report(f: Fundus, rng: np.random.Generator) -> str:
    eye = f"Color fundus photograph of the {f.eye} eye."
    parts = [eye]
    for d in f.diseases:
        opts = _DISEASE_SENT[d]
        parts.append(opts[int(rng.integers(len(opts)))])
    if "Choroidal Neovascularization" in f.masks:
        parts.append("A greyish subretinal lesion at the fovea with surrounding hemorrhage, "
                     "suggesting choroidal neovascularization.")
    for d, sent in _NORMAL_SENT.items():
        if d not in f.diseases and rng.random() < 0.6:
            parts.append(sent)
    if not f.diseases:
        parts.append("Normal fundus.")
    return " ".join(parts)


# Five paraphrases of every sentence the report generator writes: the synthetic world's stand-in
# for the paper's fundus text augmentation ("five semantically equivalent but differently
# expressed sentences" for each frequent sentence). Written by hand for this world; the writer
# keeps the sentences frequent in its training reports (`frequent_paraphrases`). Each stays one
# sentence after AFLoc's cleaning (no inner full stops, no numbers).
PARAPHRASES: dict[str, tuple[str, ...]] = {
    "Color fundus photograph of the right eye.": (
        "Colour fundus image of the right eye.", "Fundus photograph, right eye.",
        "Right eye, color fundus photography.", "Color photograph of the right ocular fundus.",
        "Colour fundus photo taken of the right eye."),
    "Color fundus photograph of the left eye.": (
        "Colour fundus image of the left eye.", "Fundus photograph, left eye.",
        "Left eye, color fundus photography.", "Color photograph of the left ocular fundus.",
        "Colour fundus photo taken of the left eye."),
    "Multiple drusen in the macular region, consistent with age-related macular degeneration.": (
        "Numerous macular drusen, in keeping with age-related macular degeneration.",
        "Many drusen at the macula consistent with age related macular degeneration.",
        "Drusen scattered across the macula, compatible with age-related macular degeneration.",
        "Age-related macular degeneration with multiple drusen in the macular area.",
        "Several drusen involving the macula, typical of age-related macular degeneration."),
    "Findings of macular degeneration with drusen at the posterior pole.": (
        "Macular degeneration with drusen at the posterior pole.",
        "Posterior pole drusen indicating macular degeneration.",
        "Drusen at the posterior pole, findings of macular degeneration.",
        "Appearance of macular degeneration, with posterior pole drusen.",
        "The posterior pole shows drusen consistent with macular degeneration."),
    "Scattered retinal hemorrhages and hard exudates, consistent with retinopathy.": (
        "Scattered intraretinal hemorrhages with hard exudates, in keeping with retinopathy.",
        "Retinopathy with scattered retinal hemorrhages and hard exudates.",
        "Hard exudates and scattered retinal haemorrhages compatible with retinopathy.",
        "Retinal hemorrhages and hard exudates are scattered, consistent with retinopathy.",
        "Scattered hemorrhages and hard exudates in the retina indicating retinopathy."),
    "Dot and blot hemorrhages throughout the posterior pole suggesting retinopathy.": (
        "Dot-blot hemorrhages across the posterior pole suggestive of retinopathy.",
        "Posterior pole dot and blot haemorrhages, suggesting retinopathy.",
        "Retinopathy suggested by dot and blot hemorrhages at the posterior pole.",
        "Dot and blot hemorrhages over the posterior pole, likely retinopathy.",
        "The posterior pole shows dot and blot hemorrhages suggestive of retinopathy."),
    "Tessellated fundus with temporal peripapillary atrophy, consistent with high myopia.": (
        "Tigroid fundus and temporal peripapillary atrophy, in keeping with high myopia.",
        "High myopia with a tessellated fundus and temporal peripapillary atrophy.",
        "Fundus tessellation with temporal atrophy around the disc, consistent with high myopia.",
        "Temporal peripapillary atrophy and tessellation, compatible with high myopia.",
        "A tessellated fundus with temporal peripapillary atrophy typical of high myopia."),
    "Myopic fundus changes with a peripapillary crescent.": (
        "Myopic changes of the fundus with a peripapillary crescent.",
        "Peripapillary crescent with myopic fundus changes.",
        "Fundus shows myopic changes and a crescent around the disc.",
        "Myopic fundus with a crescent at the optic disc margin.",
        "Changes of myopia in the fundus, with a peripapillary crescent."),
    "Enlarged optic cup, suspicious for glaucoma.": (
        "Large optic cup, suspicious of glaucoma.",
        "Enlarged cup of the optic disc raising suspicion for glaucoma.",
        "Increased optic cup size, glaucoma suspected.",
        "The optic cup is enlarged, concerning for glaucoma.",
        "Enlargement of the optic cup suggestive of glaucoma."),
    "Glaucomatous optic disc cupping.": (
        "Glaucomatous cupping of the optic disc.",
        "Optic disc cupping of glaucomatous appearance.",
        "Cupping of the optic nerve head consistent with glaucoma.",
        "Optic disc shows glaucomatous cupping.",
        "Glaucomatous excavation of the optic disc."),
    "Tilted optic disc with an optic pit, a congenital optic disc anomaly.": (
        "Tilted disc with an optic pit, a congenital anomaly of the optic disc.",
        "Congenital optic disc anomaly with a tilted disc and an optic pit.",
        "Optic pit in a tilted optic disc, consistent with a congenital disc anomaly.",
        "A tilted optic disc and optic pit, indicating a congenital optic disc anomaly.",
        "Tilted optic nerve head with a pit, a congenital optic disc anomaly."),
    "Narrowed retinal arterioles with increased light reflex, consistent with retinal "
    "arteriosclerosis.": (
        "Narrow retinal arterioles with an increased light reflex, in keeping with retinal "
        "arteriosclerosis.",
        "Retinal arteriosclerosis with narrowed arterioles and increased light reflex.",
        "Arteriolar narrowing with a prominent light reflex, consistent with retinal "
        "arteriosclerosis.",
        "Increased arteriolar light reflex and narrowing, compatible with retinal "
        "arteriosclerosis.",
        "Thin retinal arterioles with a bright reflex indicating retinal arteriosclerosis."),
    "Hazy media obscuring fundus detail, consistent with cataract.": (
        "Media opacity blurring fundus detail, in keeping with cataract.",
        "Cataract with hazy media obscuring the fundus.",
        "Fundus details obscured by hazy media, consistent with cataract.",
        "Hazy ocular media obscuring fundus details, compatible with cataract.",
        "Blurred view of the fundus through hazy media, suggesting cataract."),
    "Cellophane reflex over the macula, consistent with an epiretinal membrane.": (
        "Cellophane macular reflex, in keeping with an epiretinal membrane.",
        "Epiretinal membrane with a cellophane reflex over the macula.",
        "Macular cellophane sheen consistent with an epiretinal membrane.",
        "A cellophane reflex at the macula, compatible with epiretinal membrane.",
        "Glistening cellophane reflex over the macula indicating an epiretinal membrane."),
    "Pigmented scar at the macula, a macular lesion.": (
        "Pigmented macular scar, a macular lesion.",
        "Macular lesion with a pigmented scar.",
        "A pigmented scar in the macula, consistent with a macular lesion.",
        "Scarring with pigment at the macula, a macular lesion.",
        "Macular lesion in the form of a pigmented scar."),
    "A greyish subretinal lesion at the fovea with surrounding hemorrhage, suggesting choroidal "
    "neovascularization.": (
        "A grey subretinal lesion at the fovea with surrounding haemorrhage, suggestive of "
        "choroidal neovascularization.",
        "Choroidal neovascularization suggested by a greyish subfoveal lesion with hemorrhage.",
        "Greyish subretinal lesion at the fovea surrounded by hemorrhage, likely choroidal "
        "neovascularization.",
        "Subfoveal greyish lesion with surrounding hemorrhage, concerning for choroidal "
        "neovascularization.",
        "A grey foveal subretinal lesion and surrounding hemorrhage suggesting choroidal "
        "neovascularization."),
    "The optic disc is well defined with a normal cup.": (
        "Well defined optic disc with a normal cup.",
        "The optic disc has clear margins and a normal cup.",
        "Optic disc well demarcated, cup normal.",
        "Normal optic cup in a well defined disc.",
        "The disc is well defined and the cup is normal."),
    "No retinal hemorrhage or exudate.": (
        "No retinal hemorrhages or exudates.",
        "There is no retinal hemorrhage or exudate.",
        "Retinal hemorrhage and exudate are absent.",
        "No haemorrhage or exudate in the retina.",
        "Without retinal hemorrhage or exudate."),
    "No drusen in the macula.": (
        "No macular drusen.",
        "The macula is free of drusen.",
        "There are no drusen at the macula.",
        "Drusen are absent from the macula.",
        "No drusen seen in the macular region."),
    "Clear media.": (
        "The media are clear.",
        "Clear ocular media.",
        "Media clear.",
        "Ocular media are clear.",
        "The optical media are clear."),
    "Normal fundus.": (
        "The fundus is normal.",
        "Normal appearing fundus.",
        "Fundus within normal limits.",
        "Unremarkable fundus.",
        "No abnormality of the fundus."),
}


def frequent_paraphrases(reports: list[str], min_count: int) -> dict[str, dict]:
    """The `PARAPHRASES` entries whose sentence occurs in at least `min_count` of `reports`, as
    the table format of `bench.methods.afloc.paraphrase` ({sentence: {count, paraphrases}})."""
    out = {}
    for sentence, alts in PARAPHRASES.items():
        n = sum(sentence in r for r in reports)
        if n >= min_count:
            out[sentence] = {"count": n, "paraphrases": list(alts)}
    return out
