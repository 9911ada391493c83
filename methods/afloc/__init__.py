"""AFLoc: model, text pipeline, presets, checkpoints, training task and the ``afloc`` method.

The method registers from ``bench.methods.afloc.method`` (named in ``bench.methods.catalog``);
importing this package imports nothing, so the model modules load with torch, torchvision,
numpy and transformers alone (``benchmarks/train_step.py`` relies on that).
"""
