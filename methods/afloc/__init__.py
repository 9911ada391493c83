"""AFLoc: model, text pipeline, losses, checkpoints, presets and the ``afloc`` method.

Importing the package registers the method; the model/loss/text modules themselves need only
torch, torchvision, numpy and transformers (``benchmarks/train_step.py`` relies on that).
"""

from . import method  # noqa: F401  (registers "afloc")
