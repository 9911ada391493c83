"""RD++ (Revisiting Reverse Distillation, CVPR 2023): projection layer, losses, pseudo-anomalies."""
