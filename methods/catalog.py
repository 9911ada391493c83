"""Every method of the paper, in one table: display name, colour, family, learning type, and the
module of its adapter (None where the harness has none yet).

Tables and figures take names and colours from here; `bench list methods` shows it without
importing any model (the registry imports an adapter's module only when a run asks for it); the
paper's tables it appears in come from `bench.report.specs` (`paper_tables`). A test checks
that each adapter's class says the same as its row.

Colours are distinct and colour-blind safe: the paper's image-text rows, RD++ and `random`
take Okabe and Ito's colours, the others Paul Tol's (muted, light and dark schemes), chosen so
that every pair stays at least 13 CIELAB units apart in normal vision and under simulated
protanopia, deuteranopia and tritanopia (Machado et al. 2009; tests/test_method_catalog.py
measures it). The human benchmark is drawn white and hatched.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_TEXT = "image-text"
SALIENCY = "saliency (CAM)"
ANOMALY = "anomaly detection"
FINE_TUNED = "fine-tuned with labels"
REFERENCES = "reference"
FAMILIES = (IMAGE_TEXT, SALIENCY, ANOMALY, FINE_TUNED, REFERENCES)


@dataclass(frozen=True)
class MethodInfo:
    name: str  # registry name
    display: str
    colour: str
    family: str
    learning: str  # bench.methods.base.LEARNING_TYPES
    module: str | None = None  # the adapter's module; None: the paper's numbers only
    capabilities: tuple[str, ...] = ()  # as Capabilities.as_list() gives them
    query_agnostic: bool = False
    description: str = ""
    hatch: str | None = None
    # how the method's maps are made when it has no official localization: a footnote of every
    # table that shows its localization results
    map_note: str = ""


_ROWS = (
    # the paper's chest-X-ray rows (Okabe-Ito; ReContrast in Tol's dark red)
    MethodInfo("recontrast", "ReContrast", "#663333", ANOMALY, "one-class"),
    MethodInfo("rdpp", "RD++", "#CC79A7", ANOMALY, "one-class"),
    MethodInfo("convirt", "ConVIRT", "#F0E442", IMAGE_TEXT, "zero-shot image-text",
               module="bench.methods.convirt.method",
               capabilities=("localize", "classify", "free-text", "trainable"),
               description="ConVIRT: global image-report contrastive (ViLMedic convirt-mimic); "
                           "maps are the harness's adaptation (vis_proj at each layer4 cell x "
                           "text), not official",
               map_note="ConVIRT is global-only; its maps here are the harness's adaptation, "
                        "not an official method: vis_proj applied at each layer4 location "
                        "(7 x 7) and the cosine with lin_proj(text)."),
    MethodInfo("gloria", "GLoRIA", "#56B4E9", IMAGE_TEXT, "zero-shot image-text",
               module="bench.methods.gloria.method",
               capabilities=("localize", "classify", "free-text", "trainable"),
               description="GLoRIA: global-local image-report alignment (maps: report x layer3 "
                           "regions as AFLoc's code makes them, or word attention)",
               map_note="GLoRIA has no official zero-shot localization; its maps here are the "
                        "ones AFLoc's evaluation code makes from its modules (report embedding "
                        "x layer3 regions); --method-arg gloria.map=attention gives GLoRIA's "
                        "own word attention."),
    MethodInfo("biovil", "BioViL", "#009E73", IMAGE_TEXT, "zero-shot image-text"),
    MethodInfo("chexzero", "CheXzero", "#0072B2", IMAGE_TEXT, "zero-shot image-text"),
    MethodInfo("medklip", "MedKLIP", "#E69F00", IMAGE_TEXT, "zero-shot image-text"),
    MethodInfo("afloc", "AFLoc", "#D55E00", IMAGE_TEXT, "zero-shot image-text",
               module="bench.methods.afloc.method",
               capabilities=("localize", "classify", "free-text", "trainable"),
               description="AFLoc: annotation-free localization (word/sentence/report "
                           "alignment)"),
    # CheXlocalize's saliency methods over a supervised classifier, RETFound (Tol muted)
    MethodInfo("gradcam", "Grad-CAM", "#332288", SALIENCY, "supervised"),
    MethodInfo("gradcampp", "Grad-CAM++", "#882255", SALIENCY, "supervised"),
    MethodInfo("eigencam", "Eigen-CAM", "#117733", SALIENCY, "supervised"),
    MethodInfo("retfound", "RETFound", "#999933", FINE_TUNED, "supervised"),
    MethodInfo("human", "Human benchmark", "#FFFFFF", REFERENCES, "reference",
               module="bench.methods.human", capabilities=("localize",), hatch="////",
               description="CheXlocalize human benchmark (test split): radiologist masks and "
                           "points"),
    # references (Okabe-Ito black, Tol's light cyan and pink)
    MethodInfo("random", "Random (baseline)", "#000000", REFERENCES, "reference",
               module="bench.methods.baselines",
               capabilities=("localize", "classify", "free-text"), query_agnostic=True,
               description="uniform noise maps (seeded per sample and query), constant 0.5 "
                           "scores"),
    MethodInfo("center", "Centre prior (baseline)", "#99DDFF", REFERENCES, "reference",
               module="bench.methods.baselines", capabilities=("localize", "free-text"),
               query_agnostic=True, description="fixed centred Gaussian prior (sigma = size/4)"),
    MethodInfo("oracle", "Oracle (GT)", "#FFAABB", REFERENCES, "reference",
               module="bench.methods.baselines", capabilities=("localize", "classify"),
               description="ground-truth mask as heatmap, labels as scores"),
)

CATALOG: dict[str, MethodInfo] = {m.name: m for m in _ROWS}


def builtin_modules() -> dict[str, str]:
    """Registry name -> module of every built-in adapter."""
    return {m.name: m.module for m in _ROWS if m.module}


def display_name(name: str) -> str:
    info = CATALOG.get(name)
    return info.display if info else name


def colour(name: str, default: str = "#777777") -> str:
    info = CATALOG.get(name)
    return info.colour if info else default
