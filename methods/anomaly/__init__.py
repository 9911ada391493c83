"""One-class anomaly detectors by reverse distillation (RD++, ReContrast): networks, checkpoints."""
