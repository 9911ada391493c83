"""The synthetic world: procedural chest X-ray and fundus phantoms with exact ground truth and
matching reports, written in the real datasets' native formats (see docs/synthetic.md).

Modules: `anchors` (real-data anchors from torchxrayvision), `anatomy` and `pathologies`
(drawing), `chest` and `fundus` (one image), `lexicon` and `reports` (text), `writers/` (one
module per on-disk format), `world` (scales and orchestration), `preview` (contact sheet).
"""
