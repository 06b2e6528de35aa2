"""`AutoSAE`: load any hubsae SAE from a folder or Hub repo and get the right class."""

import os

from .saes.base import REGISTRY, SAE, SAEConfig
from .saes.loading import read_config_dict


def _architecture(path_or_repo, subfolder, revision, hub_kwargs) -> tuple[type[SAE], str]:
    config, path = read_config_dict(path_or_repo, subfolder, revision, **hub_kwargs)
    model_type = config.get("model_type")
    if model_type not in REGISTRY:
        known = ", ".join(sorted(REGISTRY))
        raise ValueError(f"{path}: unknown SAE architecture model_type={model_type!r}; known: {known}")
    return REGISTRY[model_type][1], str(path)


class AutoSAE:
    """Dispatches on `model_type` in config.json. Not instantiable; use `from_pretrained`/`from_config`."""

    def __init__(self):
        raise TypeError("AutoSAE is a factory: use AutoSAE.from_pretrained(...) or AutoSAE.from_config(...)")

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo: str | os.PathLike,
        subfolder: str | None = None,
        revision: str | None = None,
        **kwargs,
    ) -> SAE:
        """Load an SAE. `kwargs` go to `PreTrainedModel.from_pretrained` (dtype, device_map, token, ...)."""
        hub_kwargs = {k: kwargs[k] for k in ("token", "cache_dir") if kwargs.get(k) is not None}
        model_cls, _ = _architecture(path_or_repo, subfolder, revision, hub_kwargs)
        return model_cls.from_pretrained(path_or_repo, subfolder=subfolder, revision=revision, **kwargs)

    @classmethod
    def from_config(cls, config: SAEConfig) -> SAE:
        if config.model_type not in REGISTRY:
            raise ValueError(f"unknown SAE architecture {config.model_type!r}; known: {', '.join(sorted(REGISTRY))}")
        return REGISTRY[config.model_type][1](config)
