"""CheXzero: the OpenAI-CLIP ViT-B/32 model (through open_clip), its checkpoints, recipe,
presets, training task and the ``chexzero`` method.

The method registers from ``bench.methods.chexzero.method`` (named in ``bench.methods.catalog``);
importing this package imports nothing. open_clip is imported only where a model is built.
"""
