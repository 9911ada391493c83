"""Which findings a report sentence mentions, and whether it negates them.

Shared by the report writer (to pick real Open-i sentences that are safe to reuse) and the
consistency tests (every sentence that mentions a finding must agree with what is drawn).
"""

from __future__ import annotations

import re

# CheXpert-style labels a drawn finding sets (COVID-like pattern reads as multifocal pneumonia)
IMPLIES: dict[str, tuple[str, ...]] = {
    "Pneumonia": ("Pneumonia", "Lung Opacity"),
    "Consolidation": ("Consolidation", "Lung Opacity"),
    "COVID-19": ("Pneumonia", "Lung Opacity"),
    "Lung Opacity": ("Lung Opacity",),
}

CHEXPERT_LABELS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
                   "Enlarged Cardiomediastinum", "Fracture", "Lung Lesion", "Lung Opacity",
                   "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
                   "Pneumothorax", "Support Devices")

_CONCEPTS: dict[str, str] = {
    "Pneumonia": r"pneumoni|infecti",
    "Consolidation": r"consolidat",
    "Lung Opacity": r"opacit|airspace disease|airspace process|infiltrat|focal airspace",
    "Atelectasis": r"atelecta|collapse",
    "Cardiomegaly": r"cardiomegaly|\bheart\b|cardiac|cardiomediastinal",
    "Edema": r"edema|congestion|haziness",
    "Enlarged Cardiomediastinum": r"mediastin",
    "Lung Lesion": r"nodul|\bmass(es)?\b|lesion|granulom|neoplas|malignan",
    "Pleural Effusion": r"effusion|costophrenic",
    "Pneumothorax": r"pneumothora",
    "Support Devices": r"\btubes?\b|catheter|\bpicc\b|pacemaker|pacer|\bdevices?\b|\bleads\b|"
                       r"central line|venous line",
    "Calcification": r"calcifi",
    "Fibrosis": r"fibros|fibrotic|reticular",
    "Emphysema": r"emphysem|hyperinfla|hyperexpan|copd",
    "Fracture": r"fractur",
}
_CLEAR = re.compile(r"\blungs? (are|is) (otherwise )?clear|\bclear lungs\b|"
                    r"lungs are well expanded and clear")
_CLEAR_MEANS = ("Pneumonia", "Consolidation", "Lung Opacity", "Edema", "Atelectasis")
_NEG = re.compile(r"^(no|there (is|are) no|without)\b|\bno\b|\bwithout\b|\bnormal\b|"
                  r"\bclear\b|\bnegative\b|\bunremarkable\b|\bwithin normal limits\b|"
                  r"\bfree of\b|\bnot (seen|identified|present)\b")
_HEDGE = re.compile(r"cannot be excluded|cannot exclude|can't exclude|not excluded|possible|"
                    r"possibly|may (represent|reflect)|could (represent|reflect)|"
                    r"questionable|suspected|difficult to exclude")


def mentions(sentence: str) -> set[str]:
    """Finding concepts a sentence talks about (present or negated)."""
    low = sentence.lower()
    out = {name for name, pat in _CONCEPTS.items() if re.search(pat, low)}
    if _CLEAR.search(low):
        out.update(_CLEAR_MEANS)
    return out


def is_negative(sentence: str) -> bool:
    return bool(_NEG.search(sentence.lower()))


def is_hedged(sentence: str) -> bool:
    return bool(_HEDGE.search(sentence.lower()))


def labels_of(drawn_names: list[str] | set[str]) -> set[str]:
    """CheXpert-style labels implied by a set of drawn findings."""
    out: set[str] = set()
    for n in drawn_names:
        out.update(IMPLIES.get(n, (n,)))
    return out


_BANNED_OPENI = re.compile(r"xxxx|\bbut\b|however|except|change|stable|again|prior|previous|"
                           r"interval|since|\bnew\b|\bwith\b|although|\d|recommend|compar|"
                           r"consider|if |follow|status|post|otherwise|remain|persist|resolv|"
                           r"improv|worsen|increas|decreas|significant|large|definite|moderate|"
                           r"sizable|obvious|gross|appreciable|failure|decubitus|exam|layering|"
                           r";|:|/|\(", re.I)
_OPENI_NORMAL = [
    re.compile(r"^(the )?(heart|heart size|cardiac silhouette)( size)? (is|are) "
               r"(normal|within normal limits)( in size)?\.$", re.I),
    re.compile(r"^(the )?(cardiomediastinal silhouette|mediastinal contours?|cardiomediastinal "
               r"contours?)( is| are)? (normal|within normal limits)( in size and contour)?\.$",
               re.I),
    re.compile(r"^(the )?lungs are clear( bilaterally)?\.$", re.I),
]


def safe_openi_sentences(sentences: list[str]) -> list[tuple[str, frozenset[str]]]:
    """Real Open-i sentences that only negate or call normal: (sentence, concepts covered).

    A sentence is reusable in a synthetic report when every concept it names is absent from
    the image; the caller checks that against the drawn findings.
    """
    out = []
    for s in sentences:
        if _BANNED_OPENI.search(s) or len(s.split()) > 14 or "." in s[:-1]:
            continue
        if any(w[:1].isupper() for w in s.split()[1:]) or re.search(r"\bsmall\b", s, re.I):
            continue
        m = mentions(s)
        if not m or "Support Devices" in m:
            continue
        low = s.lower()
        neg_start = low.startswith(("no ", "there is no ", "there are no "))
        normal = any(p.match(s) for p in _OPENI_NORMAL)
        if (neg_start and " and no " not in low) or normal:
            out.append((s, frozenset(m)))
    return out
