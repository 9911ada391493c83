"""ReContrast (NeurIPS 2023): one-class anomaly detection by contrastive cross-reconstruction."""
