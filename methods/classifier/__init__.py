"""Supervised multi-label chest X-ray classifiers (CheXlocalize's DenseNet-121, ResNet-50/152):
the model, its checkpoints (the harness's, torchvision-layout state dicts, torchxrayvision's
DenseNet), the training task behind ``bench train classifier`` and the ``classifier`` method.

The method registers from ``bench.methods.classifier.method`` (named in
``bench.methods.catalog``); importing this package imports nothing. The CAM methods over these
classifiers live in ``bench.methods.cam``.
"""
