"""`TrainConfig`: everything a training run needs, loadable from a YAML recipe.

Recipes override defaults only. The configs are huggingface_hub `@strict` dataclasses, like the
SAE configs: a value of the wrong type or out of range is an error naming the field, and an
unknown key in a recipe file an error naming the key and the file; `--override key=value` (value parsed as YAML, `sae.k=64` for a key inside a
dict field) applies on top of the recipe.
"""

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub.dataclasses import strict, type_validator
from huggingface_hub.errors import StrictDataclassError

from .sections import TRAINER_SET, pam_fields, sae_fields

LR_DECAYS = ("none", "linear", "cosine")
DISTRIBUTE = ("auto", "data", "hookpoints")
MIXED_PRECISION = ("no", "fp16", "bf16")
METHODS = ("adam", "pam_sgd")
MODEL_DTYPES = ("float32", "bfloat16", "float16")
TRACKERS = ("auto", "tensorboard", "wandb")
# the numeric ranges of TrainConfig's fields (cross-field checks are in `validate`)
POSITIVE = (
    "expansion_factor", "context_length", "model_batch_size", "buffer_contexts", "batch_size",
    "grad_accum_steps", "max_tokens", "adam_eps", "dead_window_tokens", "norm_estimation_batches",
    "ortho_chunk_size", "ortho_every", "keep_checkpoints",
)  # fmt: skip
POSITIVE_OR_NONE = ("d_sae", "lr", "max_grad_norm", "ortho_chunks")
NON_NEGATIVE = (
    "weight_decay", "lr_warmup_steps", "sparsity_warmup_steps", "ortho_coefficient", "seed",
    "checkpoint_every", "log_every",
)  # fmt: skip
FRACTIONS = ("lr_decay_start", "min_lr_ratio")  # in [0, 1]
# keys that may change between a checkpoint and its resumption without changing the math
RESUMABLE_CHANGES = {"checkpoint_every", "keep_checkpoints", "log_every", "log_with", "progress_bar", "output_dir"}


class Recipe:
    """What the YAML-loadable configs (`@strict` dataclasses, like the SAE configs) share.

    huggingface_hub's `@strict` checks every field's type on construction and assignment and runs
    the `validate_*` methods (cross-field checks). A recipe file adds: unknown keys named with a
    did-you-mean, whole numbers accepted where a float is meant (YAML writes `lr: 1`), and every
    error prefixed with the file it came from.
    """

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "recipe") -> "Recipe":
        names = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in names:
                raise ValueError(f"{where}: unknown key {key!r}{did_you_mean(key, names)}")
        hints = typing.get_type_hints(cls)
        values = {key: floats_where_meant(value, hints[key]) for key, value in data.items()}
        try:
            return cls(**values)
        except StrictDataclassError as err:
            raise ValueError(f"{where}: {err}") from err

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> "Recipe":
        path = Path(path)
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a recipe must be a mapping of keys to values, got {type(data).__name__}")
        for item in overrides or []:
            apply_override(data, item)
        return cls.from_dict(data, where=str(path))


@strict
@dataclass
class TrainConfig(Recipe):
    """A training run: model and hookpoints, data, SAE, optimization, checkpoints, logging."""

    model: str = "smollm2"
    """Base LLM: a local folder or Hub id for `AutoModelForCausalLM`, or "smollm2" for the embedded SmolLM2-135M."""
    model_dtype: str = "float32"
    """dtype the LLM runs in ("float32", "bfloat16", "float16"); float32 on CPU (bf16 is ~8x slower there)."""
    hookpoints: list[str] = field(default_factory=lambda: ["model.layers.6"])
    """Modules whose output (or input, with a `:input` suffix) is read; one SAE is trained per hookpoint."""
    hookpoints_out: list[str] = field(default_factory=list)
    """Transcoders: for each hookpoint, the activation its SAE predicts (`model.layers.6.mlp` for the
    MLP whose `model.layers.6.mlp:input` it reads), harvested in the same pass; the loss is the MSE to
    it. Empty: SAEs, each reconstructing what it reads. `sae: {skip_connection: true}` adds W_skip."""
    architecture: str = "hubsae_topk"
    """SAE `model_type`: hubsae_topk, hubsae_batchtopk, hubsae_relu, hubsae_jumprelu, hubsae_gated, ..."""
    expansion_factor: int = 8
    """d_sae = expansion_factor * d_in, unless d_sae is given."""
    d_sae: int | None = None
    """Number of latents; overrides expansion_factor."""
    sae: dict[str, Any] = field(default_factory=dict)
    """Extra fields of the architecture's config, e.g. {k: 32} or {l1_coefficient: 5.0}."""

    dataset: str = ""
    """Text source: a file, a folder of text files, or `hf:NAME` for a Hugging Face dataset."""
    dataset_glob: str = "**/*.txt"
    """Files read inside a dataset folder."""
    dataset_split: str = "train"
    """Split of an `hf:` dataset."""
    dataset_text_column: str = "text"
    """Column holding the text in an `hf:` dataset."""
    dataset_config: str | None = None
    """Configuration name of an `hf:` dataset."""
    dataset_streaming: bool = True
    """Stream an `hf:` dataset instead of downloading it whole."""
    context_length: int = 128
    """Tokens per context fed to the LLM."""
    prepend_bos: bool = True
    """Start every context with BOS (the text then fills context_length - 1 tokens)."""
    exclude_special_tokens: bool = True
    """Leave BOS/EOS/pad positions out of the training activations (BOS is an outlier attention sink)."""
    model_batch_size: int = 8
    """Contexts per LLM forward pass during harvesting."""
    buffer_contexts: int = 130
    """Contexts harvested into one shuffle buffer (a block); batches are drawn from a shuffled block and
    its tail shorter than a batch is dropped, so pick buffer_contexts * (context_length - 1) just above a
    multiple of batch_size (130 * 127 = 16510 wastes 0.8% with batches of 2048 or 4096)."""
    activation_cache: str | None = None
    """Folder of a disk activation cache: read it if it exists, else harvest into it first, then train from it."""

    batch_size: int = 4096
    """Activations (tokens) per micro-batch, summed over all data-parallel processes."""
    grad_accum_steps: int = 1
    """Micro-batches per optimizer step."""
    max_tokens: int = 1_000_000
    """Training tokens; steps = max_tokens // (batch_size * grad_accum_steps)."""
    lr: float | None = None
    """Peak learning rate; None means 2e-4 / sqrt(d_sae / 2**14) (Gao et al. 2024)."""
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    adam_eps: float = 1e-8
    """AdamW epsilon."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    lr_warmup_steps: int = 0
    """Steps of linear learning-rate warmup from 0."""
    lr_decay: str = "linear"
    """Decay after lr_decay_start: "none", "linear" or "cosine" down to min_lr_ratio * lr."""
    lr_decay_start: float = 0.8
    """Fraction of training after which the learning rate decays (Anthropic: the last 20%)."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of the peak."""
    sparsity_warmup_steps: int = 0
    """Steps over which the sparsity-loss weights ramp linearly from 0 to their config value."""
    sparsity_losses: list[str] = field(default_factory=lambda: ["l1", "l0"])
    """Names in `SAEOutput.losses` scaled by the sparsity warmup."""
    max_grad_norm: float | None = None
    """Clip each SAE's gradient norm to this value (None: no clipping)."""
    dead_window_tokens: int = 10_000_000
    """A latent that has not fired for this many tokens is dead (feeds AuxK and the dead % metric)."""
    normalize_activations: bool = True
    """Scale inputs so their mean norm is sqrt(d_in); the factor is stored in the SAE config and undone at inference."""
    norm_estimation_batches: int = 4
    """Batches used to estimate the scale factor and initialize b_dec (they are then trained on)."""
    method: str = "adam"
    """"adam": AdamW on every parameter. "pam_sgd": AdamW on the encoder, the decoder set in closed
    form once per window of batches with a ridge chosen on held-out batches (SplInterp's PAM-SGD,
    `pam.DecoderWindow`); one process, no gradient accumulation."""
    pam: dict[str, Any] = field(default_factory=dict)
    """PAM-SGD coefficients for `PAMSGD` (mu_enc, nu_enc, mu_dec, nu_dec, alpha, beta, tol; n_total
    defaults to max_tokens)."""
    ortho_coefficient: float = 0.0
    """OrtSAE orthogonality penalty weight gamma on the decoder rows (0: off), in the paper's units: 0.25 is the
    paper's setting (arXiv 2509.22033 §3.3, eq. 5). It is scaled by d_in inside, since hubsae's MSE sums over d_in."""
    ortho_chunks: int | None = None
    """Chunks K the latents are split into for the penalty; None: ceil(d_sae / ortho_chunk_size)."""
    ortho_chunk_size: int = 8192
    """Latents per chunk when ortho_chunks is None (8192 in the paper)."""
    ortho_every: int = 1
    """Compute the penalty every N steps with weight gamma * N (the paper's cheaper variant: 5)."""

    distribute: str = "auto"
    """With several processes: "data" (data-parallel SAEs), "hookpoints" (each process trains its
    share of the SAEs on all the data), or "auto" (hookpoints when there are at least as many SAEs as processes)."""
    mixed_precision: str = "no"
    """Accelerate mixed precision for the SAE step: "no", "fp16", "bf16" (GPU)."""
    seed: int = 0
    """Seed for SAE initialization and data shuffling."""
    output_dir: str = "runs/sae"
    """Run folder: the trained SAEs (one subfolder per hookpoint), checkpoints/, logs."""
    checkpoint_every: int = 0
    """Optimizer steps between checkpoints (0: only at the end)."""
    keep_checkpoints: int = 2
    """Most recent checkpoints kept."""
    log_every: int = 50
    """Steps between metric logs (MSE, FVU, L0, dead %); 0: only at the end."""
    log_with: list[str] = field(default_factory=lambda: ["auto"])
    """Trackers: "tensorboard", "wandb", or "auto" (TensorBoard when installed); installed ones only."""
    progress_bar: bool = True
    """Show a tqdm bar with tokens/s on the main process."""

    def validate_train_config(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"TrainConfig: {msg}")

        check_ranges(self)
        need(bool(self.hookpoints), "hookpoints must list at least one hookpoint")
        need(all(self.hookpoints), f"hookpoints must be module paths, got an empty one in {self.hookpoints}")
        need(len(set(self.hookpoints)) == len(self.hookpoints), f"hookpoints has duplicates: {self.hookpoints}")
        need(
            not self.hookpoints_out or len(self.hookpoints_out) == len(self.hookpoints),
            f"hookpoints_out must name one write point per hookpoint ({len(self.hookpoints)}), got {self.hookpoints_out}",
        )
        need(
            all(self.hookpoints_out), f"hookpoints_out must be module paths, got an empty one in {self.hookpoints_out}"
        )
        need(
            not self.hookpoints_out or self.method != "pam_sgd",
            "method='pam_sgd' solves a decoder for the hookpoint's own activation; transcoders (hookpoints_out) use 'adam'",
        )
        need(bool(self.dataset) or bool(self.activation_cache), "dataset (or activation_cache) must be set")
        for name in ("model", "architecture", "dataset_glob", "dataset_split", "dataset_text_column", "output_dir"):
            need(bool(getattr(self, name)), f"{name} must not be empty")
        need(
            self.context_length >= 2 or not self.prepend_bos,
            f"context_length={self.context_length} leaves no text after BOS (prepend_bos: true); use at least 2",
        )
        need(self.max_tokens >= self.batch_size * self.grad_accum_steps, "max_tokens is less than one optimizer step")
        need(self.model_dtype in MODEL_DTYPES, f"model_dtype={self.model_dtype!r} is not one of {MODEL_DTYPES}")
        need(self.lr_decay in LR_DECAYS, f"lr_decay={self.lr_decay!r} is not one of {LR_DECAYS}")
        need(self.distribute in DISTRIBUTE, f"distribute={self.distribute!r} is not one of {DISTRIBUTE}")
        need(self.mixed_precision in MIXED_PRECISION, f"mixed_precision must be one of {MIXED_PRECISION}")
        need(self.method in METHODS, f"method={self.method!r} is not one of {METHODS}")
        need(set(self.log_with) <= set(TRACKERS), f"log_with={self.log_with} may only hold {TRACKERS}")
        need(len(self.adam_betas) == 2, f"adam_betas needs two values, got {self.adam_betas}")
        need(all(0 <= b < 1 for b in self.adam_betas), f"adam_betas must each be in [0, 1), got {self.adam_betas}")
        need(not self.pam or self.method == "pam_sgd", "pam coefficients are set but method is not 'pam_sgd'")
        check_section("sae", self.sae, sae_fields(self.architecture), TRAINER_SET)
        check_section("pam", self.pam, pam_fields(), {})
        need(
            self.method != "pam_sgd" or self.grad_accum_steps == 1,
            "method='pam_sgd' solves the decoder per batch: grad_accum_steps must be 1",
        )

    @property
    def steps(self) -> int:
        return self.max_tokens // (self.batch_size * self.grad_accum_steps)

    def write_point(self, hookpoint: str) -> str | None:
        """The activation the SAE at `hookpoint` predicts, if it is a transcoder."""
        return self.hookpoints_out[self.hookpoints.index(hookpoint)] if self.hookpoints_out else None

    def harvested(self, hookpoints: list[str]) -> list[str]:
        """What one pass must capture for the SAEs at `hookpoints`: each read point and its write point."""
        points = [p for h in hookpoints for p in (h, self.write_point(h)) if p is not None]
        return list(dict.fromkeys(points))


def check_ranges(config: TrainConfig) -> None:
    """Each numeric field in its range (and finite): a ValueError naming the field and its value."""
    rules = [(POSITIVE, "positive", lambda v: v > 0), (NON_NEGATIVE, ">= 0", lambda v: v >= 0)]
    rules += [(FRACTIONS, "in [0, 1]", lambda v: 0 <= v <= 1)]
    rules += [(POSITIVE_OR_NONE, "positive (or null for the default)", lambda v: v is None or v > 0)]
    for names, want, ok in rules:
        for name in names:
            value = getattr(config, name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"TrainConfig: {name} must be a finite number ({want}), got {value!r}")
            if not ok(value):
                raise ValueError(f"TrainConfig: {name} must be {want}, got {value!r}")


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply `key=value` (or `dict_field.key=value`) to a recipe dict; the value is parsed as YAML."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ValueError(f"override {item!r} must look like key=value")
    value = yaml.safe_load(raw) if raw else ""
    if "." in key:
        outer, inner = key.split(".", 1)
        sub = data.setdefault(outer, {})
        if not isinstance(sub, dict):
            raise ValueError(f"override {item!r}: {outer!r} is not a mapping")
        sub[inner] = value
    else:
        data[key] = value


def did_you_mean(key: object, names) -> str:
    """ " (did you mean a, b?)" with the closest of `names`, or "" when none is close."""
    near = difflib.get_close_matches(str(key), list(names), n=3)
    return f" (did you mean {', '.join(near)}?)" if near else ""


def floats_where_meant(value: Any, annotation: Any) -> Any:
    """`value` with whole numbers turned into floats where the annotation wants a float
    (`float`, `float | None`, `list[float]`): YAML and `--override` write `1` for 1.0, and the
    strict configs refuse an int for a float."""
    if isinstance(value, bool) or value is None:
        return value
    wants = (
        set(typing.get_args(annotation))
        if typing.get_origin(annotation) in (typing.Union, types.UnionType)
        else {annotation}
    )
    if isinstance(value, int) and float in wants and int not in wants:
        return float(value)
    if isinstance(value, list):
        item_types = [typing.get_args(a) for a in wants if typing.get_origin(a) is list]
        if item_types and item_types[0] == (float,):
            return [floats_where_meant(v, float) for v in value]
    return value


def check_section(where: str, values: dict[str, Any], fields: dict[str, Any], reserved: dict[str, str]) -> None:
    """A nested recipe section (`sae:`, `pam:`): every key a known field, of its field's type (the
    same type check as `@strict`; whole numbers become floats in place where a float is meant).

    `reserved` maps keys the trainer sets itself to the recipe key to use instead.
    """
    for key, value in values.items():
        if key in reserved:
            raise ValueError(f"{where}.{key} is set by the trainer; {reserved[key]}")
        if key not in fields:
            takes = sorted(set(fields) - set(reserved))
            raise ValueError(f"{where}: unknown key {key!r}{did_you_mean(key, fields)}; it takes {takes}")
        values[key] = floats_where_meant(value, fields[key])
        type_validator(f"{where}.{key}", values[key], fields[key])
