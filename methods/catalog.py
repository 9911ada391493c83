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
    MethodInfo("recontrast", "ReContrast", "#663333", ANOMALY, "one-class",
               module="bench.methods.recontrast.method",
               capabilities=("localize", "classify", "free-text", "trainable"),
               query_agnostic=True,
               description="ReContrast: one-class anomaly detection (trainable + frozen WRN50-2, "
                           "cross-reconstruction); trained on normal images; one anomaly map "
                           "per image (query-agnostic), score = map max",
               map_note="ReContrast sees no query: every pathology of an image gets the same "
                        "anomaly map (sum over 6 feature pairs of 1 - cosine, Gaussian sigma 4, "
                        "as the official test code), and its diagnosis score is the map's "
                        "maximum for every pathology; trained on normal images, checkpoint "
                        "chosen on validation images (the official code picks it on test)."),
    MethodInfo("rdpp", "RD++", "#CC79A7", ANOMALY, "one-class",
               module="bench.methods.rdpp.method",
               capabilities=("localize", "classify", "free-text", "trainable"),
               query_agnostic=True,
               description="RD++: one-class anomaly detection (frozen WRN50-2 teacher, "
                           "multi-projection, OCBE, reverse-distillation student); trained on "
                           "normal images; one anomaly map per image (query-agnostic), score "
                           "= map max",
               map_note="RD++ sees no query: every pathology of an image gets the same anomaly "
                        "map (sum over 3 scales of 1 - cosine, Gaussian sigma 4, as the official "
                        "test code), and its diagnosis score is the map's maximum for every "
                        "pathology; trained on normal images, checkpoint chosen on validation "
                        "images (the official code picks it on test)."),
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
    MethodInfo("biovil", "BioViL", "#009E73", IMAGE_TEXT, "zero-shot image-text",
               module="bench.methods.biovil.method",
               capabilities=("localize", "classify", "free-text", "trainable"),
               description="BioViL: ResNet-50 + CXR-BERT image-text model (hi-ml-multimodal); "
                           "maps are the official inference engine's (patch x text cosine, "
                           "Gaussian 1.5, NaN outside the crop)",
               map_note="BioViL's maps are the official ImageTextInferenceEngine's: cosine of "
                        "the normalised projected patch (15 x 15 at 480) and text embeddings, "
                        "Gaussian sigma 1.5 in patch units, resized (nearest) to the centre "
                        "crop's footprint and NaN outside it; protocols score only the pixels "
                        "the crop saw."),
    MethodInfo("chexzero", "CheXzero", "#0072B2", IMAGE_TEXT, "zero-shot image-text",
               module="bench.methods.chexzero.method",
               capabilities=("localize", "classify", "free-text", "trainable"),
               description="CheXzero: OpenAI CLIP ViT-B/32 trained on MIMIC-CXR impressions "
                           "(open_clip ViT-B-32-quickgelu; checkpoint ensembles averaged); maps "
                           "are the harness's adaptation (patch tokens x text), not official",
               map_note="CheXzero has no localization; its maps here are the harness's "
                        "adaptation, not an official method: the cosine of the text embedding "
                        "with each ViT-B/32 patch token taken through ln_post and proj (7 x 7 "
                        "at 224); an ensemble's maps are averaged."),
    MethodInfo("medklip", "MedKLIP", "#E69F00", IMAGE_TEXT, "zero-shot image-text",
               module="bench.methods.medklip.method",
               capabilities=("localize", "classify", "free-text", "trainable"),
               description="MedKLIP: knowledge-enhanced entity queries decoded against image "
                           "patches; grounding = mean decoder cross-attention (official)",
               map_note="official RSNA grounding map: mean of the 4 decoder layers' "
                        "cross-attention of the query, 14x14 blocks repeated 16x on "
                        "Resize((224, 224)); free text and unseen classes go in as new queries "
                        "through the text encoder (the paper's route)"),
    MethodInfo("afloc", "AFLoc", "#D55E00", IMAGE_TEXT, "zero-shot image-text",
               module="bench.methods.afloc.method",
               capabilities=("localize", "classify", "free-text", "trainable"),
               description="AFLoc: annotation-free localization (word/sentence/report "
                           "alignment)"),
    # CheXlocalize's saliency methods over a supervised classifier, RETFound (Tol muted)
    MethodInfo("gradcam", "Grad-CAM", "#332288", SALIENCY, "supervised",
               module="bench.methods.cam.method", capabilities=("localize", "classify"),
               description="Grad-CAM over a supervised classifier (pytorch-grad-cam; logit "
                           "targets)",
               map_note="targets are the classifier's logits (one per image and "
                        "pathology); Grad-CAM is invariant to the sigmoid, Grad-CAM++ is not "
                        "(its maps here are the logit's)."),
    MethodInfo("gradcampp", "Grad-CAM++", "#882255", SALIENCY, "supervised",
               module="bench.methods.cam.method", capabilities=("localize", "classify"),
               description="Grad-CAM++ over a supervised classifier (pytorch-grad-cam; logit "
                           "targets)",
               map_note="targets are the classifier's logits (one per image and "
                        "pathology); Grad-CAM is invariant to the sigmoid, Grad-CAM++ is not "
                        "(its maps here are the logit's); the package's eq. 19 weights."),
    MethodInfo("eigencam", "Eigen-CAM", "#117733", SALIENCY, "supervised",
               module="bench.methods.cam.method", capabilities=("localize", "classify"),
               query_agnostic=True,
               description="Eigen-CAM over a supervised classifier (pytorch-grad-cam; ignores "
                           "the target: one map per image)",
               map_note="ignores the target: every pathology of an image gets the "
                        "same map (the first principal component of the last features; its "
                        "sign is arbitrary)."),
    # the classifier the CAMs run over (bench train classifier); its own vivid violet, the one
    # colour outside Tol's and Okabe-Ito's palettes, the farthest from all the others
    MethodInfo("classifier", "Supervised classifier", "#9933FF", FINE_TUNED, "supervised",
               module="bench.methods.classifier.method",
               capabilities=("classify", "trainable"),
               description="Supervised multi-label classifier (DenseNet-121 / ResNet-50 / "
                           "ResNet-152, CheXpert uncertainty policies); probabilities = "
                           "sigmoid(logits)"),
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
               module="bench.methods.baselines",
               capabilities=("localize", "classify", "free-text"),
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
