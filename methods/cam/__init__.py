"""The Grad-CAM family over a supervised classifier (CheXlocalize's saliency methods), through
the ``grad-cam`` package (pytorch-grad-cam). The methods register from
``bench.methods.cam.method`` (named in ``bench.methods.catalog``); importing this package
imports nothing.
"""
