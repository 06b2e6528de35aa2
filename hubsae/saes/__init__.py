"""SAE architectures: one file each, registered with AutoConfig/AutoModel on import."""

from .base import REGISTRY, SAE, SAEConfig, SAEOutput, register
from .batchtopk import BatchTopKSAE, BatchTopKSAEConfig
from .gated import GatedSAE, GatedSAEConfig
from .jumprelu import JumpReLUSAE, JumpReLUSAEConfig
from .relu import ReLUSAE, ReLUSAEConfig
from .topk import TopKSAE, TopKSAEConfig

__all__ = [
    "REGISTRY",
    "SAE",
    "SAEConfig",
    "SAEOutput",
    "register",
    "BatchTopKSAE",
    "BatchTopKSAEConfig",
    "GatedSAE",
    "GatedSAEConfig",
    "JumpReLUSAE",
    "JumpReLUSAEConfig",
    "ReLUSAE",
    "ReLUSAEConfig",
    "TopKSAE",
    "TopKSAEConfig",
]
