"""Radiology report text: MIMIC-CXR sections and AFLoc's sentence split.

Sections follow the main rules of MIT-LCP `mimic-cxr/txt/section_parser.py` (reimplemented,
not copied): a header is an ALL-CAPS name after a newline and one space, ending in a colon
(`\\n NAME:`); the next header is searched only after the first newline following the
header's colon; names are lower-cased and mapped through the frequent variants and typos
("conclusion", "findings and impression" -> impression; view titles such as "pa and lateral"
-> findings); empty findings/impression sections are removed; the *last* section of a name
wins; when neither findings nor impression exists, the text after the last section's first
blank line becomes `last_paragraph`. MIT-LCP's per-study manual fixes (keyed by study id) are
not applied.

The report the official pipelines want is FINDINGS followed by IMPRESSION (`report_text`).

`split_sentences` is the sentence splitting of AFLoc's (GLoRIA's) caption cleaning: newlines to
spaces, split on `[0-9]+\\.` and then on '.', lower-case, `\\w+` tokens, drop sentences of <= 1
token, strip non-ASCII characters from the tokens. It does not stop at the official 5-word
cutoff; AFLoc training uses `methods/_shared/bert_text.clean_report`, which does.
"""

from __future__ import annotations

import re

SECTION_HEADER = re.compile(r"\n ([A-Z ()/,-]+):\s", re.DOTALL)

FREQUENT_SECTIONS = {
    "preamble": "preamble", "impression": "impression", "comparison": "comparison",
    "indication": "indication", "findings": "findings", "examination": "examination",
    "technique": "technique", "history": "history", "comparisons": "comparison",
    "clinical history": "history", "reason for examination": "indication",
    "notification": "notification", "reason for exam": "indication",
    "clinical information": "history", "exam": "examination",
    "clinical indication": "indication", "conclusion": "impression",
    "chest, two views": "findings", "recommendation(s)": "recommendations",
    "type of examination": "examination", "reference exam": "comparison",
    "patient history": "history", "addendum": "addendum", "comparison exam": "comparison",
    "date": "date", "comment": "comment", "findings and impression": "impression",
    "wet read": "wet read", "comparison film": "comparison",
    "recommendations": "recommendations", "findings/impression": "impression", "pfi": "history",
    "recommendation": "recommendations", "wetread": "wet read", "ndication": "impression",
    "impresson": "impression", "imprression": "impression", "imoression": "impression",
    "impressoin": "impression", "imprssion": "impression", "impresion": "impression",
    "imperssion": "impression", "mpression": "impression", "impession": "impression",
    "findings/ impression": "impression", "finding": "findings", "findins": "findings",
    "findindgs": "findings", "findgings": "findings", "findngs": "findings",
    "findnings": "findings", "finidngs": "findings", "idication": "indication",
    "reference findings": "findings", "comparision": "comparison", "comparsion": "comparison",
    "comparrison": "comparison", "comparisions": "comparison",
}
MAIN_SECTIONS = ("impression", "findings", "history", "comparison", "addendum")
VIEW_TITLES = re.compile(
    "(chest|portable|pa and lateral|lateral and pa|ap and lateral|lateral and ap|frontal and|"
    "two views|frontal view|pa view|ap view|one view|lateral view|bone window|frontal upright|"
    "frontal semi-upright|ribs|pa and lat)")


def normalize_section_name(name: str) -> str:
    s = name.lower().strip()
    if s in FREQUENT_SECTIONS:
        return FREQUENT_SECTIONS[s]
    for main in MAIN_SECTIONS:
        if main in s:
            return main
    if VIEW_TITLES.search(s):
        return "findings"
    return s


def section_text(text: str) -> list[tuple[str, str]]:
    """(normalized name, raw text) for every section in order, as the MIT-LCP parser splits."""
    out: list[tuple[str, str]] = []
    m = SECTION_HEADER.search(text, 0)
    if not m:
        out.append(("full report", text))
    else:
        out.append(("preamble", text[:m.start(1)]))
        while m:
            name = m.group(1)
            start = m.end()
            skip = text[start:].find("\n")
            m = SECTION_HEADER.search(text, start + max(skip, 0))
            out.append((normalize_section_name(name), text[start:m.start() if m else len(text)]))
    out = [(n, t) for n, t in out if not (n in ("impression", "findings") and not t.strip())]
    names = {n for n, _ in out}
    if "impression" not in names and "findings" not in names:
        last_name, last = out[-1]
        if "\n \n" in last:
            head, *rest = last.split("\n \n")
            out[-1] = (last_name, head)
            out.append(("last_paragraph", "\n \n".join(rest)))
    return out


def mimic_sections(text: str) -> dict[str, str | None]:
    """The columns of MIT-LCP's mimic_cxr_sectioned.csv: last section of each name, stripped."""
    secs = section_text(text)
    out: dict[str, str | None] = {}
    for key in ("impression", "findings", "last_paragraph", "comparison"):
        hits = [t for n, t in secs if n == key]
        out[key] = hits[-1].strip() if hits else None
    return out


def report_text(findings: str | None, impression: str | None,
                last_paragraph: str | None = None) -> str:
    """FINDINGS then IMPRESSION (whitespace collapsed); last_paragraph when both are missing."""
    parts = [p for p in (findings, impression) if p and p.strip()]
    if not parts and last_paragraph and last_paragraph.strip():
        parts = [last_paragraph]
    return " ".join(" ".join(p.split()) for p in parts)


_NUMBERED = re.compile(r"[0-9]+\.")
_TOKEN = re.compile(r"\w+")


def split_sentences(text: str) -> list[str]:
    """AFLoc's sentence splitting, without its 5-word cutoff: lower-cased sentences of `\\w+`
    tokens (> 1 token each, counted before non-ASCII characters are stripped from the tokens)."""
    out = []
    for chunk in _NUMBERED.split(text.replace("\n", " ")):
        for sent in chunk.split("."):
            tokens = _TOKEN.findall(sent.replace("\ufffd\ufffd", " ").lower())
            if len(tokens) <= 1:
                continue
            kept = [t.encode("ascii", "ignore").decode("ascii") for t in tokens]
            out.append(" ".join(t for t in kept if t))
    return out
