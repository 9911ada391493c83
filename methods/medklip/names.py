"""MedKLIP's vocabularies: the 75 observation queries, the 51 anatomy positions, and how a
harness pathology name maps to a query.

The names and their order are facts of the official code (``model_MedKLIP.py``, ``test.py``,
``dataset.py``); the description strings the official query book embeds are not shipped here:
`queries.load_descriptions` reads them from the user's copy of ``observation explanation.json``.
"""

from __future__ import annotations

OBSERVATIONS: tuple[str, ...] = (
    "normal", "clear", "sharp", "sharply", "unremarkable", "intact", "stable", "free",
    "effusion", "opacity", "pneumothorax", "edema", "atelectasis", "tube", "consolidation",
    "process", "abnormality", "enlarge", "tip", "low", "pneumonia", "line", "congestion",
    "catheter", "cardiomegaly", "fracture", "air", "tortuous", "lead", "disease",
    "calcification", "prominence", "device", "engorgement", "picc", "clip", "elevation",
    "expand", "nodule", "wire", "fluid", "degenerative", "pacemaker", "thicken", "marking",
    "scar", "hyperinflate", "blunt", "loss", "widen", "collapse", "density", "emphysema",
    "aerate", "mass", "crowd", "infiltrate", "obscure", "deformity", "hernia", "drainage",
    "distention", "shift", "stent", "pressure", "lesion", "finding", "borderline", "hardware",
    "dilation", "chf", "redistribution", "aspiration", "tail_abnorm_obs", "excluded_obs",
)
assert len(OBSERVATIONS) == 75

ANATOMIES: tuple[str, ...] = (
    "trachea", "left_hilar", "right_hilar", "hilar_unspec", "left_pleural", "right_pleural",
    "pleural_unspec", "heart_size", "heart_border", "left_diaphragm", "right_diaphragm",
    "diaphragm_unspec", "retrocardiac", "lower_left_lobe", "upper_left_lobe",
    "lower_right_lobe", "middle_right_lobe", "upper_right_lobe", "left_lower_lung",
    "left_mid_lung", "left_upper_lung", "left_apical_lung", "left_lung_unspec",
    "right_lower_lung", "right_mid_lung", "right_upper_lung", "right_apical_lung",
    "right_lung_unspec", "lung_apices", "lung_bases", "left_costophrenic", "right_costophrenic",
    "costophrenic_unspec", "cardiophrenic_sulcus", "mediastinal", "spine", "clavicle", "rib",
    "stomach", "right_atrium", "right_ventricle", "aorta", "svc", "interstitium", "parenchymal",
    "cavoatrial_junction", "cardiopulmonary", "pulmonary", "lung_volumes", "unspecified",
    "other",
)
assert len(ANATOMIES) == 51

# the official JSON keys of the RSNA / CXR14 copies misspell index 20 ('pneumonia')
KEY_ALIASES = {"eumonia": "pneumonia"}

# harness pathology name (lower-cased) -> MedKLIP query; CXR14's mapping is the official
# classification script's (Fibrosis -> tail_abnorm_obs, Pleural Thickening -> thicken)
PATHOLOGY_TO_QUERY: dict[str, str] = {
    "pneumonia": "pneumonia", "pleural effusion": "effusion", "effusion": "effusion",
    "lung opacity": "opacity", "opacity": "opacity", "pneumothorax": "pneumothorax",
    "cardiomegaly": "cardiomegaly", "atelectasis": "atelectasis", "edema": "edema",
    "consolidation": "consolidation", "infiltration": "infiltrate", "infiltrate": "infiltrate",
    "mass": "mass", "nodule": "nodule", "emphysema": "emphysema",
    "fibrosis": "tail_abnorm_obs", "pleural thickening": "thicken", "hernia": "hernia",
    "no finding": "normal", "normal": "normal", "fracture": "fracture",
    "enlarged cardiomediastinum": "enlarge", "lung lesion": "lesion",
    "support devices": "device", "calcification": "calcification",
}


def query_of(pathology: str) -> str | None:
    """The MedKLIP query a harness pathology name stands for (None: a new query)."""
    key = pathology.strip().lower()
    if key in PATHOLOGY_TO_QUERY:
        return PATHOLOGY_TO_QUERY[key]
    return key if key in OBSERVATIONS else None
