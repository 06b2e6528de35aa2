"""Training: trainer, training config, losses (orthogonality), PAM-SGD."""
