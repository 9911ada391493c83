"""MedKLIP: model, query book, checkpoints, recipe, triplets, training task and the ``medklip``
method.

The method registers from ``bench.methods.medklip.method`` (named in ``bench.methods.catalog``);
importing this package imports nothing, so the model modules load with torch, torchvision,
numpy and transformers alone.
"""
