"""`AutoSAE`: load any SAE from a folder or Hub repo, hubsae's own or a published format, and get
the right class. The format is detected from the folder's files (`hubsae.formats`)."""

import os

import torch

from .formats import NATIVE, detect, load_converted, open_folder
from .saes.base import REGISTRY, SAE, SAEConfig
from .saes.loading import read_config_dict

# What a converted (non-hubsae) checkpoint accepts besides the location arguments.
_CONVERTED_KWARGS = {"dtype", "device_map", "token", "cache_dir", "local_files_only"}


def _architecture(path_or_repo, subfolder, revision, hub_kwargs) -> tuple[type[SAE], str]:
    config, path = read_config_dict(path_or_repo, subfolder, revision, **hub_kwargs)
    model_type = config.get("model_type")
    if model_type not in REGISTRY:
        known = ", ".join(sorted(REGISTRY))
        raise ValueError(f"{path}: unknown SAE architecture model_type={model_type!r}; known: {known}")
    return REGISTRY[model_type][1], str(path)


class AutoSAE:
    """Dispatches on the files (format) and on `model_type` in config.json. Not instantiable; use
    `from_pretrained`/`from_config`."""

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
        """Load an SAE: a hubsae folder, or SAELens, sparsify, Gemma Scope (1 and 2) or Llama Scope files.

        `kwargs` go to `PreTrainedModel.from_pretrained` for hubsae folders (dtype, device_map, token,
        ...); converted formats accept `dtype`, `device_map` (one device), `token` and `cache_dir`.
        """
        hub_kwargs = {k: kwargs[k] for k in ("token", "cache_dir") if kwargs.get(k) is not None}
        local_only = bool(kwargs.get("local_files_only"))
        folder = open_folder(path_or_repo, subfolder, revision, local_files_only=local_only, **hub_kwargs)
        fmt = detect(folder)
        if fmt == NATIVE:
            if local_only and folder.local_root is not None:  # the cached snapshot: no request at all
                path_or_repo, subfolder, revision = folder.local_root, None, None
                kwargs = {k: v for k, v in kwargs.items() if k not in ("local_files_only", "token", "cache_dir")}
            model_cls, _ = _architecture(path_or_repo, subfolder, revision, hub_kwargs)
            return model_cls.from_pretrained(path_or_repo, subfolder=subfolder, revision=revision, **kwargs)
        unsupported = sorted(set(kwargs) - _CONVERTED_KWARGS)
        if unsupported:
            raise TypeError(f"{folder.where} is a {fmt.name} checkpoint; it does not take {unsupported}")
        sae = load_converted(fmt, folder)
        dtype, device = kwargs.get("dtype"), kwargs.get("device_map")
        if isinstance(dtype, str) and dtype != "auto":
            dtype = getattr(torch, dtype)
        if isinstance(device, dict):
            raise TypeError(f"{folder.where}: a converted SAE goes to one device; pass device_map='cpu' or 'cuda:0'")
        return sae.to(device=device, dtype=dtype if isinstance(dtype, torch.dtype) else None)

    @classmethod
    def from_config(cls, config: SAEConfig) -> SAE:
        if config.model_type not in REGISTRY:
            raise ValueError(f"unknown SAE architecture {config.model_type!r}; known: {', '.join(sorted(REGISTRY))}")
        return REGISTRY[config.model_type][1](config)
