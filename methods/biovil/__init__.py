"""BioViL: model, text pipeline, imaging, presets, checkpoints, training task and the ``biovil``
method.

The method registers from ``bench.methods.biovil.method`` (named in ``bench.methods.catalog``);
importing this package imports nothing, so the model modules load with torch, torchvision,
numpy and transformers alone.
"""
