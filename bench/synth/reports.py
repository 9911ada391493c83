"""Radiology reports that describe exactly what a phantom shows.

Positive sentences come from several templates per finding, filled with location, size and
severity words taken from the drawn region (so words correlate with where and what is drawn);
negations name only absent findings, and about half of them are real Open-i sentences chosen
by `lexicon.safe_openi_sentences`. Subtle findings are sometimes hedged ("cannot be excluded"),
which the CheXpert CSV records as uncertain (-1). The COVID-19-like pattern is described as
multifocal pneumonia: the pretraining corpus never names COVID.

Each finding has one template that says "suggesting", as MIMIC-CXR reports often do. Without
them the only "suggest" in the corpus came from Open-i negations ("no focal consolidation to
suggest pneumonia"), so a model pretrained here read the official prompt "Findings suggesting
pneumonia." as a negation and drew maps anti-correlated with the finding. Templates are only
ever added to a `_pick` list, which draws one integer whatever its length, so the images and
everything drawn after a report (the MS-CXR phrases) stay as they were.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import numpy as np

from bench.synth.lexicon import labels_of, safe_openi_sentences
from bench.synth.pathologies import Drawn

POSITIVE = "positive"
HEDGED = "hedged"
NEGATIVE = "negative"


@dataclass
class Sentence:
    text: str
    section: str  # "findings" | "impression"
    polarity: str  # positive | hedged | negative
    finding: str | None = None  # the drawn finding a positive/hedged sentence describes
    source: str = "template"  # "template" | "open-i"


@dataclass
class Report:
    sentences: list[Sentence] = field(default_factory=list)

    def section(self, name: str) -> str:
        return " ".join(s.text for s in self.sentences if s.section == name)

    @property
    def findings(self) -> str:
        return self.section("findings")

    @property
    def impression(self) -> str:
        return self.section("impression")

    def mimic_text(self, view: str) -> str:
        """The report as a MIMIC-CXR .txt file (FINAL REPORT header, wrapped sections)."""
        tech = "Chest PA and lateral" if view == "PA" else "Portable AP chest"
        lines = ["                                 FINAL REPORT",
                 " EXAMINATION:  CHEST (PA AND LAT)" if view == "PA"
                 else " EXAMINATION:  CHEST (PORTABLE AP)", " ",
                 " INDICATION:  ___ year old with cough, evaluate for acute process.  SYNTHETIC.",
                 " ", f" TECHNIQUE:  {tech}", " ", " COMPARISON:  None.", " ", " FINDINGS:", " "]
        lines += [" " + ln for ln in textwrap.wrap(self.findings, 76)]
        lines += [" ", " IMPRESSION:", " "]
        lines += [" " + ln for ln in textwrap.wrap(self.impression, 76)]
        return "\n".join(lines) + "\n"


SEV = {"mild": ["mild", "minimal", "subtle"], "moderate": ["moderate"],
       "severe": ["severe", "extensive", "marked"]}


def location(attrs: dict, rng: np.random.Generator) -> str:
    """Side + zone words, e.g. 'right lower lobe', 'left basilar', 'bilateral lower lung'."""
    side, zone = attrs.get("side", ""), attrs.get("zone", "")
    if side == "bilateral":
        if zone == "lower":
            return str(rng.choice(["bibasilar", "bilateral lower lung", "bilateral basilar"]))
        if zone == "upper":
            return str(rng.choice(["bilateral upper lobe", "bilateral apical"]))
        return str(rng.choice(["bilateral perihilar", "bilateral mid lung"]))
    opts = {"upper": ["upper lobe", "upper lung", "apical"],
            "mid": ["mid lung", "perihilar", "mid zone"],
            "lower": ["lower lobe", "basilar", "lung base"],
            "apical": ["apical", "apex"], "lateral": ["lateral", "apicolateral"],
            "perihilar": ["perihilar"]}.get(zone, ["lung"])
    if zone == "mid" and side == "right":
        opts = opts + ["middle lobe"]
    return f"{side} {rng.choice(opts)}"


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return str(options[rng.integers(len(options))])


def positive_sentences(d: Drawn, rng: np.random.Generator, mm_per_px: float,
                       hedge: bool) -> tuple[str, str]:
    """(findings sentence, impression sentence) for one drawn finding."""
    a = d.attrs
    loc = location(a, rng)
    sev = _pick(rng, SEV.get(a.get("severity", "moderate"), ["moderate"]))
    size = a.get("size", "moderate")
    side = a.get("side", "")
    n = d.name
    if n == "Pneumonia" and hedge:
        return (f"Subtle {loc} opacity; early pneumonia cannot be excluded.",
                f"Possible early {loc} pneumonia.")
    if n == "Pneumonia":
        multi = "multifocal " if a.get("multifocal") else ""
        f = _pick(rng, [f"{_cap(sev)} {loc} opacity concerning for {multi}pneumonia.",
                        f"{_cap(loc)} airspace opacity compatible with {multi}pneumonia.",
                        f"Patchy {loc} opacities consistent with {multi}pneumonia.",
                        f"There is a {sev} {loc} opacity, likely pneumonia.",
                        f"{_cap(sev)} {loc} opacity suggesting {multi}pneumonia."])
        return f, _pick(rng, [f"{_cap(loc)} pneumonia.", f"Findings concerning for {loc} "
                                                          "pneumonia.",
                              f"Findings suggesting {loc} pneumonia."])
    if n == "COVID-19":
        f = _pick(rng, ["Patchy bilateral peripheral opacities in the lower lungs concerning for "
                        "multifocal pneumonia.",
                        f"{_cap(sev)} bilateral lower zone peripheral airspace opacities "
                        "compatible with multifocal pneumonia.",
                        "Bilateral basilar peripheral opacities, likely atypical pneumonia."])
        return f, "Bilateral peripheral lower lung opacities, likely multifocal pneumonia."
    if n == "Consolidation":
        f = _pick(rng, [f"Dense consolidation in the {loc}.",
                        f"{_cap(loc)} consolidation with air bronchograms.",
                        f"There is {sev} consolidation of the {loc}.",
                        f"Findings suggesting {loc} consolidation."])
        return f, f"{_cap(loc)} consolidation."
    if n == "Lung Opacity" and hedge:
        return (f"Subtle {loc} opacity, possibly artifactual.", f"Possible {loc} opacity.")
    if n == "Lung Opacity":
        f = _pick(rng, [f"Ill-defined {loc} opacity.", f"Hazy opacity in the {loc}.",
                        f"{_cap(sev)} {loc} airspace opacity.",
                        f"Findings suggesting {sev} {loc} lung opacity."])
        return f, f"{_cap(loc)} opacity."
    if n == "Atelectasis":
        if a.get("pattern") == "platelike":
            f = _pick(rng, [f"Plate-like atelectasis in the {loc}.",
                            f"Linear {loc} atelectasis.",
                            f"Subsegmental atelectasis at the {loc}."])
        else:
            f = _pick(rng, [f"{_cap(loc)} atelectasis.", f"Streaky {loc} atelectasis.",
                            f"Mild {loc} atelectasis.",
                            f"{_cap(loc)} volume loss suggesting atelectasis."])
        if hedge:
            return f, f"Possible {loc} atelectasis."
        return f, f"{_cap(loc)} atelectasis."
    if n == "Cardiomegaly":
        adverb = _pick(rng, {"mild": ["mildly"], "moderate": ["moderately"],
                             "severe": ["severely", "markedly"]}[a.get("severity", "mild")])
        f = _pick(rng, [f"The heart is {adverb} enlarged.", f"{_cap(sev)} cardiomegaly.",
                        "The cardiac silhouette is enlarged.",
                        "Enlarged cardiac silhouette suggesting cardiomegaly."])
        return f, f"{_cap(sev)} cardiomegaly."
    if n == "Edema" and hedge:
        return ("Mild perihilar haziness; mild edema cannot be excluded.",
                "Possible mild pulmonary edema.")
    if n == "Edema":
        f = _pick(rng, [f"{_cap(sev)} pulmonary edema.",
                        f"Bilateral perihilar haziness and vascular congestion consistent with "
                        f"{sev} pulmonary edema.",
                        f"{_cap(sev)} interstitial edema, most pronounced in the perihilar "
                        "regions.",
                        f"Perihilar haziness suggesting {sev} pulmonary edema."])
        return f, f"{_cap(sev)} pulmonary edema."
    if n == "Enlarged Cardiomediastinum":
        f = _pick(rng, ["The mediastinum is widened.", "Widening of the superior mediastinum.",
                        "The upper mediastinal contour is enlarged."])
        return f, "Widened mediastinum."
    if n == "Lung Lesion":
        ys, xs = np.nonzero(d.mask)
        diam_mm = max(np.ptp(xs) + 1, np.ptp(ys) + 1) * mm_per_px
        if a.get("kind") == "nodule":
            f = _pick(rng, [f"A {diam_mm:.0f} mm nodule projects over the {loc}.",
                            f"{_cap(loc)} pulmonary nodule measuring {diam_mm:.0f} mm.",
                            f"Rounded {diam_mm:.0f} mm nodular density in the {loc}."])
            return f, f"{_cap(loc)} pulmonary nodule."
        f = _pick(rng, [f"A {diam_mm / 10:.1f} cm mass in the {loc}.",
                        f"Large {loc} mass measuring {diam_mm / 10:.1f} cm.",
                        f"There is a {diam_mm / 10:.1f} cm {loc} mass concerning for malignancy."])
        return f, f"{_cap(loc)} mass."
    if n == "Pleural Effusion":
        if side == "bilateral":
            f = _pick(rng, [f"{_cap(size)} bilateral pleural effusions.",
                            f"{_cap(size)} bilateral effusions with blunting of both "
                            "costophrenic angles.",
                            f"Findings suggesting {size} bilateral pleural effusions."])
            return f, f"{_cap(size)} bilateral pleural effusions."
        f = _pick(rng, [f"{_cap(size)} {side} pleural effusion.",
                        f"Blunting of the {side} costophrenic angle due to a {size} effusion.",
                        f"There is a {size} {side} pleural effusion with a basal meniscus.",
                        f"Findings suggesting a {size} {side} pleural effusion."])
        return f, f"{_cap(size)} {side} pleural effusion."
    if n == "Pneumothorax":
        z = a.get("zone", "apical")
        f = _pick(rng, [f"{_cap(size)} {side} {z} pneumothorax.",
                        f"There is a {size} {side} pneumothorax with a visible pleural line "
                        f"at the {'apex' if z == 'apical' else 'lateral chest wall'}.",
                        f"{_cap(side)} {z} pneumothorax, {size} in size.",
                        f"Visible {side} pleural line suggesting a {size} pneumothorax."])
        return f, f"{_cap(size)} {side} pneumothorax."
    if n == "Support Devices":
        parts = []
        for dev, info in a.get("devices", []):
            if dev == "ett":
                parts.append(_pick(rng, [f"Endotracheal tube terminates {info['cm']} cm above "
                                         "the carina.",
                                         f"The endotracheal tube tip is {info['cm']} cm above "
                                         "the carina."]))
            elif dev == "ngt":
                parts.append(_pick(rng, ["Enteric tube courses below the diaphragm into the "
                                         "stomach.", "Nasogastric tube tip is in the stomach."]))
            elif dev == "cvc":
                parts.append(f"{_cap(info['side'])} internal jugular central venous catheter "
                             "terminates in the mid SVC.")
            else:
                parts.append("Left chest wall pacemaker with leads in the right atrium and "
                             "right ventricle.")
        return " ".join(parts), "Support devices in standard position."
    if n == "Calcification":
        return f"Calcified granuloma in the {loc}.", "Calcified granuloma."
    if n == "Fibrosis":
        return f"Reticular fibrotic changes in the {loc}.", f"{_cap(loc)} fibrosis."
    if n == "Emphysema":
        return "The lungs are hyperinflated with emphysematous changes.", "Emphysema."
    if n == "Fracture":
        return f"Fracture of a {side} lateral rib.", f"{_cap(side)} rib fracture."
    raise ValueError(f"no template for finding {n!r}")


# negation sentences: (text, concepts it negates)
NEGATIONS: list[tuple[str, frozenset[str]]] = [
    ("No pleural effusion or pneumothorax.", frozenset({"Pleural Effusion", "Pneumothorax"})),
    ("No focal consolidation.", frozenset({"Consolidation", "Lung Opacity"})),
    ("There is no focal consolidation, pleural effusion or pneumothorax.",
     frozenset({"Consolidation", "Lung Opacity", "Pleural Effusion", "Pneumothorax"})),
    ("No pulmonary edema.", frozenset({"Edema"})),
    ("There is no pneumothorax.", frozenset({"Pneumothorax"})),
    ("No pleural effusion.", frozenset({"Pleural Effusion"})),
    ("Heart size is normal.", frozenset({"Cardiomegaly"})),
    ("The cardiomediastinal silhouette is within normal limits.",
     frozenset({"Cardiomegaly", "Enlarged Cardiomediastinum"})),
    ("The lungs are clear.", frozenset({"Pneumonia", "Consolidation", "Lung Opacity", "Edema",
                                        "Atelectasis"})),
    ("No pulmonary nodules or masses.", frozenset({"Lung Lesion"})),
]
NORMAL_IMPRESSIONS = ["No acute cardiopulmonary process.",
                      "No acute cardiopulmonary abnormality.",
                      "No acute intrathoracic process."]


def write_report(drawn: list[Drawn], rng: np.random.Generator, sentences: list[str],
                 mm_per_px: float, hedge_rate: float = 0.25) -> tuple[Report, set[str]]:
    """A report for the drawn findings; returns it and the set of hedged finding names."""
    rep = Report()
    present = labels_of([d.name for d in drawn])
    hedged: set[str] = set()
    order = list(drawn)
    rng.shuffle(order)  # real reports do not follow one fixed order
    imps = []
    for d in order:
        subtle = d.attrs.get("severity") == "mild" and d.name in (
            "Pneumonia", "Lung Opacity", "Edema", "Atelectasis")
        hedge = subtle and rng.random() < hedge_rate
        f, imp = positive_sentences(d, rng, mm_per_px, hedge)
        pol = HEDGED if hedge else POSITIVE
        if hedge:
            hedged.add(d.name)
        rep.sentences.append(Sentence(f, "findings", pol, d.name))
        if d.name != "Support Devices" or rng.random() < 0.5:
            imps.append(Sentence(imp, "impression", pol, d.name))
    # negations of absent findings: real Open-i sentences or templates
    real = [(s, c) for s, c in _safe_cache(sentences) if not (c & present)]
    tmpl = [(s, c) for s, c in NEGATIONS if not (c & present)]
    covered: set[str] = set()
    for _ in range(int(rng.integers(2, 4)) + (3 if not drawn else 0)):
        pool = real if (real and rng.random() < 0.5) else tmpl
        if not pool:
            break
        s, c = pool[int(rng.integers(len(pool)))]
        if c <= covered:
            continue
        covered |= c
        rep.sentences.append(Sentence(s, "findings", NEGATIVE, None,
                                      "open-i" if pool is real else "template"))
    if not drawn:
        imps.append(Sentence(_pick(rng, NORMAL_IMPRESSIONS), "impression", NEGATIVE))
    rep.sentences.extend(imps[:3] if imps else [])
    return rep, hedged


_SAFE: dict[int, list[tuple[str, frozenset[str]]]] = {}


def _safe_cache(sentences: list[str]) -> list[tuple[str, frozenset[str]]]:
    key = id(sentences)
    if key not in _SAFE:
        _SAFE[key] = safe_openi_sentences(sentences)
    return _SAFE[key]


def precise_phrase(d: Drawn, rng: np.random.Generator) -> str:
    """MS-CXR-like phrase ('Small right basilar opacity concerning for pneumonia')."""
    a = d.attrs
    loc = location(a, rng)
    size = a.get("size", "")
    n = d.name
    if n == "Pneumonia":
        return _pick(rng, [f"{_cap(loc)} opacity concerning for pneumonia",
                           f"{_cap(size)} {loc} opacity concerning for pneumonia",
                           f"{_cap(loc)} pneumonia"])
    if n == "Consolidation":
        return _pick(rng, [f"{_cap(loc)} consolidation", f"Dense {loc} consolidation"])
    if n == "Lung Opacity":
        return _pick(rng, [f"{_cap(loc)} opacity", f"Ill-defined {loc} opacity"])
    if n == "Atelectasis":
        return _pick(rng, [f"{_cap(loc)} atelectasis", f"Linear {loc} atelectasis"])
    if n == "Cardiomegaly":
        return _pick(rng, ["Enlarged cardiac silhouette", "Cardiomegaly", "Enlarged heart"])
    if n == "Edema":
        return _pick(rng, ["Pulmonary edema", "Bilateral perihilar edema",
                           "Mild pulmonary vascular congestion"])
    if n == "Pleural Effusion":
        s = a.get("side", "")
        return (f"{_cap(size)} bilateral pleural effusions" if s == "bilateral"
                else _pick(rng, [f"{_cap(size)} {s} pleural effusion", f"{_cap(s)} effusion"]))
    if n == "Pneumothorax":
        return _pick(rng, [f"{_cap(size)} {a.get('side')} pneumothorax",
                           f"{_cap(a.get('side', ''))} {a.get('zone')} pneumothorax"])
    return positive_sentences(d, rng, 0.7, False)[1].rstrip(".")
