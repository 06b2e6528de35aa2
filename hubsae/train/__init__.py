"""Training: trainer, training config, losses (orthogonality), PAM-SGD."""

from .config import TrainConfig
from .trainer import NonFiniteLossError, Trainer

__all__ = ["NonFiniteLossError", "TrainConfig", "Trainer"]
