"""SAE architectures: one file each, registered with AutoConfig/AutoModel on import."""

from .base import REGISTRY, SAE, SAEConfig, SAEOutput, register
from .batchtopk import BatchTopKSAE, BatchTopKSAEConfig
from .gated import GatedSAE, GatedSAEConfig
from .jumprelu import JumpReLUSAE, JumpReLUSAEConfig
from .kron import KronSAE, KronSAEConfig
from .matryoshka import MatryoshkaSAE, MatryoshkaSAEConfig
from .relu import ReLUSAE, ReLUSAEConfig
from .switch import SwitchSAE, SwitchSAEConfig
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
    "KronSAE",
    "KronSAEConfig",
    "MatryoshkaSAE",
    "MatryoshkaSAEConfig",
    "ReLUSAE",
    "ReLUSAEConfig",
    "SwitchSAE",
    "SwitchSAEConfig",
    "TopKSAE",
    "TopKSAEConfig",
]
