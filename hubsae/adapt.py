"""Adapt the LLM to its SAEs with LoRA (Chen, Engels, Tegmark 2025, "Low-Rank Adapting Models for
Sparse Autoencoders").

The SAEs stay frozen and spliced in; low-rank adapters on the LLM's linear layers learn to make the
spliced model's next-token distribution match the clean model's (KL(P_clean || P_spliced+LoRA),
optionally plus next-token cross-entropy), which shrinks the LM-loss gap the splice causes. The
clean reference is the same model with its adapters disabled, so no second copy is held.

On disk, the adapter sits next to the SAEs in peft's own format:

    out/                      one save_pretrained folder per SAE, named by hookpoint
      model.layers.6/
      lora_adapter/           adapter_config.json + adapter_model.safetensors (peft)
"""

import itertools
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub.dataclasses import strict
from peft import LoraConfig, PeftModel, get_peft_model
from torch import Tensor, nn
from tqdm.auto import tqdm

from .auto import AutoSAE
from .eval.metrics import token_cross_entropy, token_kl
from .files import ADAPTER_DIR
from .hooks import layer_list, resolve_hookpoint, splice
from .hooks.interventions import SAEs, attachments
from .saes.base import SAE
from .train.config import Recipe

logger = logging.getLogger(__name__)

OBJECTIVES = ("kl", "ce", "kl+ce")
LAYER_CHOICES = ("all", "after")


@strict
@dataclass
class LoRAAdaptConfig(Recipe):
    """How to train the adapters.

    r, alpha, dropout: LoRA rank, scaling numerator and dropout (peft's `r`, `lora_alpha`, `lora_dropout`).
    layers: "all" decoder layers, or only those "after" the deepest SAE (the SAE's input then
        stays exactly what it was trained on).
    module_names: suffixes of the linear modules to adapt inside those layers; None = every nn.Linear.
    objective: "kl" to the clean model, "ce" next-token loss, or their sum "kl+ce".
    steps, lr, max_grad_norm: AdamW steps over the (cycled) batches, learning rate, clipping.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    layers: str = "all"
    module_names: list[str] | None = None
    objective: str = "kl"
    steps: int = 100
    lr: float = 1e-4
    max_grad_norm: float = 1.0

    def validate_lora(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective={self.objective!r} is not one of {OBJECTIVES}")
        if self.layers not in LAYER_CHOICES:
            raise ValueError(f"layers={self.layers!r} is not one of {LAYER_CHOICES}")
        if self.r <= 0 or self.steps <= 0 or self.lr <= 0:
            raise ValueError(f"r, steps and lr must be positive, got r={self.r}, steps={self.steps}, lr={self.lr}")


def lora_target_modules(model: nn.Module, saes: SAEs, config: LoRAAdaptConfig) -> list[str]:
    """Full names of the linear modules that get adapters."""
    prefix, layers = layer_list(model)
    first = 0
    if config.layers == "after":
        first = 1 + max(_layer_index(model, hp.module, layers) for hp, _ in attachments(model, saes))
    names = []
    for i in range(first, len(layers)):
        for name, module in layers[i].named_modules():
            if isinstance(module, nn.Linear) and (
                config.module_names is None or name.endswith(tuple(config.module_names))
            ):
                names.append(f"{prefix}.{i}.{name}")
    if not names:
        raise ValueError(f"no linear modules to adapt (layers={config.layers!r}, module_names={config.module_names})")
    return names


def _layer_index(model: nn.Module, module: nn.Module, layers: nn.ModuleList) -> int:
    for i, layer in enumerate(layers):
        if module is layer or any(module is m for m in layer.modules()):
            return i
    raise ValueError(f"{type(module).__name__} is not inside a decoder layer of {type(model).__name__}")


def _unpack(batch: Tensor | Mapping[str, Tensor], device: torch.device) -> tuple[Tensor, Tensor | None]:
    if isinstance(batch, Tensor):
        return batch.to(device), None
    mask = batch.get("attention_mask")
    return batch["input_ids"].to(device), None if mask is None else mask.to(device)


def spliced_loss(model: nn.Module, saes: SAEs, ids: Tensor, mask: Tensor | None, objective: str) -> Tensor:
    """The adaptation objective on one batch; `model` is a PeftModel (its disabled adapters give the clean model)."""
    with torch.no_grad(), model.disable_adapter():
        clean = model(input_ids=ids, attention_mask=mask).logits
    with splice(model, saes):
        logits = model(input_ids=ids, attention_mask=mask).logits
    loss = logits.new_zeros(())
    if "kl" in objective:
        total, count = token_kl(clean, logits, mask)
        loss = loss + (total / count).float()
    if "ce" in objective:
        total, count = token_cross_entropy(logits, ids, mask)
        loss = loss + (total / count).float()
    return loss


def adapt_lora(
    model: nn.Module, saes: SAEs, batches: Iterable[Tensor | Mapping[str, Tensor]], config: LoRAAdaptConfig
) -> tuple[PeftModel, list[float]]:
    """Wrap `model` with LoRA adapters and train them with the SAEs spliced in and frozen.

    `batches` yields token ids (B, T) or dicts with input_ids/attention_mask; it is cycled for
    `config.steps` steps. peft injects the adapters into `model` in place. Returns the PeftModel
    and the loss of each step.
    """
    attachments(model, saes)  # hookpoints and widths checked before anything changes
    targets = lora_target_modules(model, saes, config)
    lora = LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=targets)
    peft_model = get_peft_model(model, lora)
    sae_list = [sae for _, sae in attachments(peft_model, saes)]
    was_trainable = [[p.requires_grad for p in sae.parameters()] for sae in sae_list]
    for sae in sae_list:
        sae.requires_grad_(False)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr)
    device = next(peft_model.parameters()).device
    history = []
    peft_model.train()
    try:
        bar = tqdm(itertools.islice(itertools.cycle(batches), config.steps), total=config.steps, desc="LoRA adapt")
        for batch in bar:
            ids, mask = _unpack(batch, device)
            loss = spliced_loss(peft_model, saes, ids, mask, config.objective)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            history.append(loss.item())
            bar.set_postfix(loss=f"{history[-1]:.4f}")
    finally:
        peft_model.eval()
        for sae, flags in zip(sae_list, was_trainable, strict=True):
            for p, flag in zip(sae.parameters(), flags, strict=True):
                p.requires_grad_(flag)
    return peft_model, history


def save_adapted(peft_model: PeftModel, saes: Mapping[str, SAE] | list[SAE], out_dir: str | os.PathLike) -> Path:
    """Write each SAE to `out_dir/<hookpoint>/` and the adapter to `out_dir/lora_adapter/` (peft format)."""
    out = Path(out_dir)
    named = saes if isinstance(saes, Mapping) else {sae.config.hookpoint: sae for sae in saes}
    for hookpoint, sae in named.items():
        if not hookpoint:
            raise ValueError(f"{type(sae).__name__} has no config.hookpoint: name it in a {{hookpoint: sae}} mapping")
        sae.save_pretrained(out / hookpoint)
    peft_model.save_pretrained(out / ADAPTER_DIR)
    return out


def load_adapted(model: nn.Module, path: str | os.PathLike, **sae_kwargs) -> tuple[PeftModel, dict[str, SAE]]:
    """Inverse of `save_adapted`: the base model with the adapter attached, and {hookpoint: SAE}."""
    root = Path(path)
    adapter = root / ADAPTER_DIR
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter} holds no adapter_config.json: not a folder written by save_adapted")
    saes = {
        sub.name: AutoSAE.from_pretrained(sub, **sae_kwargs)
        for sub in sorted(root.iterdir())
        if sub.is_dir() and (sub / "config.json").is_file()
    }
    if not saes:
        raise FileNotFoundError(f"{root} holds no SAE folder (a subfolder with config.json)")
    peft_model = PeftModel.from_pretrained(model, adapter)
    for hookpoint in saes:
        resolve_hookpoint(peft_model, hookpoint)  # fails now, naming the hookpoint, if the model does not fit
    return peft_model.eval(), saes


@strict
@dataclass
class AdaptRecipe(LoRAAdaptConfig):
    """`hubsae adapt RECIPE.yaml`: the LoRA settings above, plus where model, SAE and text come from.

    model, model_dtype: as in training recipes ("smollm2" is the embedded SmolLM2).
    sae, sae_subfolder: the trained SAE (folder or Hub repo), read where its config.hookpoint says.
    dataset: a text file, a folder of text files, `corpus:shakespeare`, or `hf:NAME`.
    context_length, batch_size: tokens per context, contexts per step.
    output_dir: receives the SAE folder and `lora_adapter/` (see `save_adapted`), plus the loss history.
    """

    model: str = "smollm2"
    model_dtype: str = "float32"
    sae: str = ""
    sae_subfolder: str | None = None
    dataset: str = "corpus:shakespeare"
    context_length: int = 128
    batch_size: int = 8
    output_dir: str = "runs/adapt"

    def validate_adapt_recipe(self) -> None:  # validate_lora runs too (strict runs every validate_*)
        if not self.sae:
            raise ValueError("AdaptRecipe: sae must name the trained SAE (a folder or Hub repo)")
        if self.context_length < 2 or self.batch_size <= 0:
            raise ValueError("AdaptRecipe: context_length must be >= 2 and batch_size positive")
