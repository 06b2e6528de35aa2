"""Strict loading: a config file must exist, every weight must match, corrupt files fail loudly.

transformers, left alone, returns a default config for a missing `subfolder/config.json`,
fills a field missing from config.json with its default, initializes missing weights at random,
ignores unexpected ones (`PreTrainedModel.from_pretrained` only warns), casts integer weights to float and loads NaN weights.
For an SAE each of those is a silent wrong answer, so hubsae turns them into errors here.
Weights are read from safetensors only; hubsae never unpickles a file.
"""

import dataclasses
import json
import os
from pathlib import Path

import torch
from huggingface_hub import hf_hub_download
from safetensors import SafetensorError, safe_open
from transformers import PreTrainedConfig

from ..files import hub_errors

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
NO_PICKLES = (
    "hubsae loads weights from safetensors only and never unpickles a file (.bin, .pt, .pth, .ckpt: "
    "loading a pickle can run arbitrary code); convert the checkpoint to model.safetensors first"
)


def _describe(path_or_repo: str | os.PathLike, subfolder: str | None) -> str:
    return f"{path_or_repo}" + (f" (subfolder {subfolder!r})" if subfolder else "")


def resolve_file(
    path_or_repo: str | os.PathLike,
    filename: str,
    subfolder: str | None = None,
    revision: str | None = None,
    **hub_kwargs,
) -> Path:
    """Local path of `filename` in a folder or Hub repo; a clear FileNotFoundError if it is not there."""
    local = Path(path_or_repo)
    if local.is_dir():
        path = local / (subfolder or "") / filename
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: {_describe(path_or_repo, subfolder)} holds no {filename}")
        return path
    with hub_errors(
        str(path_or_repo), f"file {filename}" + (f" in subfolder {subfolder!r}" if subfolder else ""), revision
    ):
        return Path(hf_hub_download(str(path_or_repo), filename, subfolder=subfolder, revision=revision, **hub_kwargs))


def read_config_dict(path_or_repo, subfolder=None, revision=None, **hub_kwargs) -> tuple[dict, Path]:
    path = resolve_file(path_or_repo, CONFIG_NAME, subfolder, revision, **hub_kwargs)
    return read_json_object(path), path


def read_json_object(path: Path) -> dict:
    """A JSON file holding an object; a ValueError naming the file otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object (keys and values), got a JSON {type(data).__name__}")
    return data


def config_fields(config_cls: type[PreTrainedConfig]) -> list[str]:
    """The SAE's own config fields (those of `config_cls` that transformers' base config lacks)."""
    base = {f.name for f in dataclasses.fields(PreTrainedConfig)}
    return [f.name for f in dataclasses.fields(config_cls) if f.name not in base]


def check_config_fields(data: dict, config_cls: type[PreTrainedConfig], path: Path, given=()) -> None:
    """config.json is for `config_cls` and holds every field whose default could change the math.

    `config_cls.defaults_safe_when_missing` names the fields that may be absent; `given` are the
    fields the caller passes explicitly (they override the file).
    """
    model_type = data.get("model_type")
    if model_type != config_cls.model_type:
        raise ValueError(
            f"{path} holds model_type={model_type!r}, not {config_cls.model_type!r}; "
            "load it with hubsae.AutoSAE.from_pretrained, which picks the class from model_type"
        )
    optional = set(config_cls.defaults_safe_when_missing) | set(given)
    missing = [name for name in config_fields(config_cls) if name not in data and name not in optional]
    if missing:
        raise ValueError(
            f"{path} lacks the field(s) {missing} of {config_cls.__name__}; hubsae does not fill them with "
            "defaults, which would silently change the SAE's math: add them with the values it was trained with"
        )


def weight_files(path_or_repo, subfolder=None, revision=None, **hub_kwargs) -> list[Path]:
    """The safetensors file(s) of a hubsae folder: `model.safetensors`, or the shards its index names."""
    try:
        return [resolve_file(path_or_repo, WEIGHTS_NAME, subfolder, revision, **hub_kwargs)]
    except FileNotFoundError as missing:
        try:
            index_path = resolve_file(path_or_repo, WEIGHTS_INDEX_NAME, subfolder, revision, **hub_kwargs)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{_describe(path_or_repo, subfolder)} has no {WEIGHTS_NAME} (nor {WEIGHTS_INDEX_NAME}); {NO_PICKLES}"
            ) from missing
    index = read_json_object(index_path)
    shards = sorted(set((index.get("weight_map") or {}).values()))
    if not shards:
        raise ValueError(f"{index_path} names no shards in its 'weight_map'")
    return [resolve_file(path_or_repo, shard, subfolder, revision, **hub_kwargs) for shard in shards]


def check_weight_dtypes(files: list[Path], where: str) -> None:
    """Every tensor in the files is floating point: an integer or bool weight is a broken file, not a cast."""
    bad = []
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as f:
                dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
        except (SafetensorError, OSError) as e:
            raise corrupt_file_error(e, f"{where} ({file.name})") from e
        bad += [f"{k} ({dtype})" for k, dtype in dtypes.items() if not is_float_dtype_name(dtype)]
    if bad:
        raise ValueError(
            f"{where}: weight tensors that are not floating point: {', '.join(bad)}; an SAE's weights are floats, "
            "and hubsae does not cast integer or bool tensors (the file is broken or not an SAE's)"
        )


def is_float_dtype_name(dtype: str) -> bool:
    """For safetensors' dtype names: F32, F16, BF16, F8_E4M3, ... (not I64, U8, BOOL, C64)."""
    return dtype.startswith("F") or dtype == "BF16"


def check_finite_weights(tensors: dict[str, torch.Tensor], where: str) -> None:
    """No NaN or Inf in any floating-point tensor (meta tensors, which hold no values, are skipped)."""
    for name, tensor in tensors.items():
        if tensor.is_meta or not tensor.is_floating_point():
            continue
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise ValueError(
                f"{where}: weight {name} {tuple(tensor.shape)} ({tensor.dtype}) holds {bad} NaN or Inf value(s); "
                "such an SAE encodes to NaN, so hubsae refuses to load it"
            )


def check_loading_info(info: dict, where: str) -> None:
    problems = []
    if info.get("missing_keys"):
        problems.append(f"missing weights {sorted(info['missing_keys'])}")
    if info.get("unexpected_keys"):
        problems.append(f"unexpected weights {sorted(info['unexpected_keys'])}")
    if info.get("mismatched_keys"):
        mism = ", ".join(f"{k}: file {tuple(a)} vs model {tuple(b)}" for k, a, b in info["mismatched_keys"])
        problems.append(f"weights with the wrong shape ({mism})")
    if problems:
        raise ValueError(f"{where}: " + "; ".join(problems))


def corrupt_file_error(err: SafetensorError | OSError, where: str) -> ValueError:
    return ValueError(f"{where}: the safetensors weights file is truncated or corrupted ({err})")
