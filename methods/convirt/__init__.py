"""ConVIRT: model, text pipeline, presets, checkpoints, training task and the ``convirt`` method.

The method registers from ``bench.methods.convirt.method`` (named in ``bench.methods.catalog``);
importing this package imports nothing, so the model modules load with torch, torchvision,
numpy and transformers alone.
"""
