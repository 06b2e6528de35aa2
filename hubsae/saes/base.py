"""The contract every SAE architecture shares: config fields, parameters, encode/decode, outputs.

An architecture subclasses `SAEConfig` and `SAE` (directly: shared math lives in `sparse.py` as
functions), implements `activation` and/or `encode_sparse` (the sparse code is the contract), adds
its penalties in `losses`, and calls `register` at the bottom of its file. The base owns the one
`forward`, the dense `encode`, the sparse decode, and the weighting of the losses. An architecture
with a faster training path overrides `reconstruct` (TopK, KronSAE), not `forward`.

Parameter vocabulary (the same in every architecture, so readers of other formats are renames):
`W_enc (d_in, d_sae)`, `b_enc (d_sae,)`, `W_dec (d_sae, d_out)`, `b_dec (d_out,)`, and for a skip
transcoder `W_skip (d_in, d_out)`.

Read -> write: every SAE reads the activation at `hookpoint` and writes a prediction of the one at
`hookpoint_out` (the same place for an ordinary SAE). A transcoder (Dunefsky et al., arXiv 2406.11944)
reads a sublayer's input and predicts its output; a skip transcoder (Paulo et al., arXiv 2501.18823)
adds an affine term: y_hat = f W_dec + b_dec + x W_skip. Any architecture is either: `forward(x,
target=y)` trains it against y, and the architecture only sees the target it must reconstruct
(y minus the skip term), so none of them has transcoder-specific code.
"""

import importlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub.dataclasses import strict
from safetensors import SafetensorError
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from ..files import set_default_mode
from .loading import (
    NO_PICKLES,
    check_config_fields,
    check_finite_weights,
    check_loading_info,
    check_weight_dtypes,
    corrupt_file_error,
    read_config_dict,
    weight_files,
)
from .sparse import SparseCode, decode_rows, mse_loss, weighted_loss

INPUT_NORMS = ("none", "scale", "token")


@strict
class SAEConfig(PreTrainedConfig):
    """Fields every SAE has. Subclasses add their own and set a unique `model_type`.

    Args:
        d_in: width of the activation the SAE reads.
        d_sae: number of latents (dictionary size, F).
        hookpoint: module path in the base model where the SAE reads, e.g. `model.layers.6`.
        hookpoint_out: where a transcoder writes; None for an ordinary SAE (it writes where it reads).
        d_out: width of the activation written (W_dec's columns); None means d_in.
        skip_connection: add the affine skip term x W_skip to the output (a skip transcoder).
        base_model_name_or_path: the model the SAE was trained on.
        normalize_decoder: keep decoder rows at unit norm during training.
        input_norm: "none"; "scale" multiplies inputs by `input_scale` (the reconstruction is
            divided by it again); "token" standardizes each token (mean 0, unit norm) and undoes it.
        input_scale: the fixed factor for `input_norm="scale"` (set by the trainer so that the
            mean activation norm is sqrt(d_in)).
        output_scale: the factor of the written activation under `input_norm="scale"` (the output is
            divided by it); None means input_scale, as for an SAE, which writes what it reads.
        subtract_b_dec: subtract b_dec from the input before encoding (the "b_pre" of Gao et al.); an
            ordinary SAE only, since a transcoder's b_dec lives at the write point.
        check_finite: raise on NaN/Inf inputs instead of returning garbage features.

    Loading is strict: a config.json must hold every field except those in
    `defaults_safe_when_missing` (metadata and the input check, none of which changes the math).
    """

    model_type = "hubsae"
    # d_out, skip_connection and output_scale default to what files written before them meant
    defaults_safe_when_missing = (
        "hookpoint", "hookpoint_out", "base_model_name_or_path", "check_finite", "d_out", "skip_connection",
        "output_scale",
    )  # fmt: skip
    d_in: int = 64
    d_sae: int = 256
    hookpoint: str | None = None
    hookpoint_out: str | None = None
    d_out: int | None = None
    skip_connection: bool = False
    base_model_name_or_path: str | None = None
    normalize_decoder: bool = True
    input_norm: str = "none"
    input_scale: float = 1.0
    output_scale: float | None = None
    subtract_b_dec: bool = True
    check_finite: bool = True

    def validate_sizes(self):
        if self.d_in <= 0 or self.d_sae <= 0:
            raise ValueError(f"d_in and d_sae must be positive, got d_in={self.d_in}, d_sae={self.d_sae}")
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm={self.input_norm!r} is not one of {INPUT_NORMS}")
        for name in ("input_scale", "output_scale"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value}")
        if self.d_out is not None and self.d_out <= 0:
            raise ValueError(f"d_out must be positive (or None for d_in), got {self.d_out}")

    def validate_transcoder(self):
        elsewhere = self.hookpoint_out not in (None, self.hookpoint) or self.resolved_d_out != self.d_in
        if elsewhere and self.subtract_b_dec:  # an SAE with a skip term (sparsify's) may subtract it
            raise ValueError(
                f"subtract_b_dec=True on a transcoder (reads {self.hookpoint!r}, writes {self.hookpoint_out!r}, "
                f"d_out={self.resolved_d_out}): b_dec is the bias of the written activation, not of the input; "
                "set subtract_b_dec=False"
            )

    @property
    def resolved_d_out(self) -> int:
        """Width of the written activation: d_out, or d_in for an SAE."""
        return self.d_out if self.d_out is not None else self.d_in

    @property
    def is_transcoder(self) -> bool:
        """Whether this SAE writes something other than what it reads (another place, width, or a skip term)."""
        elsewhere = self.hookpoint_out is not None and self.hookpoint_out != self.hookpoint
        return elsewhere or self.skip_connection or self.resolved_d_out != self.d_in

    @property
    def write_hookpoint(self) -> str | None:
        """Where the output goes: hookpoint_out, or the hookpoint read."""
        return self.hookpoint_out or self.hookpoint

    @property
    def resolved_output_scale(self) -> float:
        return self.output_scale if self.output_scale is not None else self.input_scale

    def loss_weights(self) -> dict[str, float]:
        """Coefficient of each named loss in `SAEOutput.losses` (summed by `sparse.weighted_loss`)."""
        return {"mse": 1.0}

    @property
    def encoder_width(self) -> int:
        """Columns of W_enc: d_sae, except where latents are composed from fewer (KronSAE)."""
        return self.d_sae


@dataclass
class SAEOutput(ModelOutput):
    """What `SAE.forward` returns.

    Args:
        reconstruction: x_hat, same shape as the input.
        features: sparse codes f, shape (..., d_sae), dense storage; None under
            `forward(..., dense_features=False)` when the path produced `code` instead.
        loss: weighted sum of `losses` with the config's weights (None unless losses were asked for).
        losses: named, unweighted loss terms (e.g. "mse", "l1", "auxk").
        code: the active latents as a `SparseCode` (detached), when the path computed them sparsely.
    """

    reconstruction: Tensor | None = None
    features: Tensor | None = None
    loss: Tensor | None = None
    losses: dict[str, Tensor] | None = None
    code: SparseCode | None = None

    def active_latents(self, d_sae: int) -> Tensor:
        """(d_sae,) bool: the latents that fired on any token of this batch."""
        if self.features is not None:
            return (self.features != 0).reshape(-1, d_sae).any(0)
        fired = torch.zeros(d_sae, dtype=torch.bool, device=self.code.values.device)
        return fired.index_fill_(0, self.code.indices[self.code.values != 0], True)

    def active_count(self) -> Tensor:
        """Number of non-zero (token, latent) pairs: L0 times the number of tokens."""
        source = self.features if self.features is not None else self.code.values
        return (source != 0).sum()


def _own_aligned_storage(model: nn.Module) -> None:
    """Copy weights that sit at an unaligned address into fresh tensors.

    Weights loaded from safetensors can be views into the file buffer, 8 bytes past a 64-byte
    boundary (the header length prefix). CPU GEMM kernels then take a different vector path and
    round differently, so a reloaded SAE (and a resumed run) stopped matching the one in memory
    by ~1e-8. Freshly allocated tensors are 64-byte aligned, as in the run that saved them.
    """
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.device.type == "cpu" and tensor.numel() and tensor.data_ptr() % 64:
                tensor.data = tensor.data.clone(memory_format=torch.contiguous_format)


class SAE(PreTrainedModel):
    """Base SAE: f = activation(W_enc^T (x - b_dec) + b_enc), x_hat = f W_dec + b_dec."""

    config_class = SAEConfig
    base_model_prefix = "sae"
    main_input_name = "hidden_states"
    _no_split_modules = []

    def __init__(self, config: SAEConfig):
        super().__init__(config)
        self.W_enc = nn.Parameter(torch.empty(config.d_in, config.encoder_width))
        self.b_enc = nn.Parameter(torch.empty(config.encoder_width))
        self.W_dec = nn.Parameter(torch.empty(config.d_sae, config.resolved_d_out))
        self.b_dec = nn.Parameter(torch.empty(config.resolved_d_out))
        if config.skip_connection:
            self.W_skip = nn.Parameter(torch.empty(config.d_in, config.resolved_d_out))
        self.add_parameters(config)
        self.post_init()

    def add_parameters(self, config: SAEConfig) -> None:
        """Create an architecture's extra parameters and buffers (shapes only; values in `_init_weights`)."""

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Unit-norm random decoder rows, encoder = decoder transpose, zero biases (Gao et al.). A transcoder
        whose input and output widths differ gets its own unit-norm random encoder columns; W_skip starts
        at zero (sparsify's skip transcoder)."""
        if module is not self:
            return
        init.normal_(self.W_dec)
        init.copy_(self.W_dec, self.W_dec / self.W_dec.norm(dim=-1, keepdim=True) * self._decoder_init_norm())
        if self.W_enc.shape == self.W_dec.t().shape:
            init.copy_(self.W_enc, self.W_dec.t())
        else:
            init.normal_(self.W_enc)
            init.copy_(self.W_enc, self.W_enc / self.W_enc.norm(dim=0, keepdim=True) * self._decoder_init_norm())
        init.zeros_(self.b_enc)
        init.zeros_(self.b_dec)
        if self.config.skip_connection:
            init.zeros_(self.W_skip)

    def _decoder_init_norm(self) -> float:
        return 1.0

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, subfolder: str | None = None, **kwargs):
        """Like `PreTrainedModel.from_pretrained`, but strict: no default config for a missing config.json
        or a missing field in it, no randomly initialized missing weights, no ignored extra weights, no
        cast of integer weights, no NaN/Inf weights, and safetensors only (never a pickle)."""
        where = f"{pretrained_model_name_or_path}" + (f"/{subfolder}" if subfolder else "")
        if kwargs.pop("use_safetensors", True) is False:
            raise ValueError(f"{where}: use_safetensors=False is not supported; {NO_PICKLES}")
        cls._check_files(pretrained_model_name_or_path, subfolder, kwargs, where)
        want_info = kwargs.pop("output_loading_info", False)
        try:
            model, info = super().from_pretrained(
                pretrained_model_name_or_path,
                *args,
                subfolder=subfolder or "",
                output_loading_info=True,
                ignore_mismatched_sizes=True,  # mismatches are reported by check_loading_info, naming each key
                use_safetensors=True,
                **kwargs,
            )
        except (SafetensorError, OSError) as e:
            if "safetensors" in str(e).lower() or isinstance(e, SafetensorError):
                raise corrupt_file_error(e, where) from e
            raise
        check_loading_info(info, where)
        check_finite_weights(model.state_dict(), where)
        _own_aligned_storage(model)
        return (model, info) if want_info else model

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        """`PreTrainedModel.save_pretrained`, with the weights readable like any file the user writes
        (safetensors creates them 0600; here they get the umask's mode, 0644 under umask 022)."""
        super().save_pretrained(save_directory, *args, **kwargs)
        set_default_mode(*Path(save_directory).glob("model*.safetensors*"))

    def push_to_hub(self, repo_id: str, **kwargs):
        """Push this SAE as `hubsae.push_to_hub` does: one commit with its model card and the repo's
        `hubsae_index.json` (into the subfolder named after its hookpoint). Keyword arguments are
        `hubsae.push_to_hub`'s (metrics, revision, create_pr, private, token, ...)."""
        # the Hub layer sits above the architectures, so it is looked up at call time, not imported
        return importlib.import_module("hubsae.hub").push_to_hub(self, repo_id, **kwargs)

    @classmethod
    def _check_files(cls, path_or_repo, subfolder: str | None, kwargs: dict, where: str) -> None:
        """The config.json and weights checks transformers does not make (see `loading.py`)."""
        keys = ("revision", "token", "cache_dir", "local_files_only")
        hub_kwargs = {k: kwargs[k] for k in keys if kwargs.get(k) is not None}
        data, config_path = read_config_dict(path_or_repo, subfolder, **hub_kwargs)
        if not isinstance(kwargs.get("config"), PreTrainedConfig):  # a config object given replaces the file
            check_config_fields(data, cls.config_class, config_path, given=kwargs)
        check_weight_dtypes(weight_files(path_or_repo, subfolder, **hub_kwargs), where)

    # ---- input handling -------------------------------------------------------------------

    def check_input(self, x: Tensor) -> None:
        if x.shape[-1] != self.config.d_in:
            where = f" at hookpoint {self.config.hookpoint!r}" if self.config.hookpoint else ""
            raise ValueError(
                f"{type(self).__name__} expects inputs with last dimension d_in={self.config.d_in}{where}, "
                f"got shape {tuple(x.shape)}"
            )
        self.check_dtype(x)
        if self.config.check_finite and not torch.isfinite(x).all():
            raise ValueError(
                f"{type(self).__name__} got NaN or Inf in its input of shape {tuple(x.shape)}; "
                "features of non-finite activations are meaningless (set config.check_finite=False to skip this check)"
            )

    def check_dtype(self, x: Tensor) -> None:
        """Inputs in the SAE's dtype (under autocast, where matmuls cast themselves, any float dtype)."""
        dtype = self.W_enc.dtype
        if x.dtype == dtype or (x.is_floating_point() and torch.is_autocast_enabled(x.device.type)):
            return
        other = (
            f" or the SAE (sae.to({x.dtype}), or from_pretrained(..., dtype={x.dtype}))"
            if x.is_floating_point()
            else ""
        )
        raise TypeError(
            f"{type(self).__name__} has {dtype} weights but got {x.dtype} activations of shape {tuple(x.shape)}; "
            f"cast the input (x.to({dtype})){other}"
        )

    def normalize_input(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """Apply the config's input normalization; returns the input and what `denormalize` needs."""
        if self.config.input_norm == "scale":
            return x * self.config.input_scale, None
        if self.config.input_norm == "token":
            mean = x.mean(-1, keepdim=True)
            centered = x - mean
            norm = centered.norm(dim=-1, keepdim=True).clamp_min(1e-8)
            return centered / norm, (mean, norm)
        return x, None

    def normalize_target(self, y: Tensor, stats: tuple[Tensor, Tensor] | None) -> Tensor:
        """The written activation in the units the SAE computes in: the inverse of `denormalize`."""
        if self.config.input_norm == "scale":
            return y * self.config.resolved_output_scale
        if self.config.input_norm == "token" and stats is not None:
            mean, norm = stats
            return (y - mean) / norm
        return y

    def denormalize(self, x_hat: Tensor, stats: tuple[Tensor, Tensor] | None) -> Tensor:
        if self.config.input_norm == "scale":
            return x_hat / self.config.resolved_output_scale
        if self.config.input_norm == "token" and stats is not None:
            mean, norm = stats
            return x_hat * norm + mean
        return x_hat

    # ---- the architecture-specific part ---------------------------------------------------

    def pre_acts(self, x: Tensor) -> Tensor:
        """Pre-activations a = (x - b_dec) W_enc + b_enc on a normalized input; (..., d_sae)."""
        if self.config.subtract_b_dec:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def activation(self, pre_acts: Tensor) -> Tensor:
        """Dense features from pre-activations; every architecture with a dense code defines it."""
        raise NotImplementedError(
            f"{type(self).__name__} has no dense activation of pre-activations alone: its features come "
            "from encode_sparse (use encode / encode_sparse / forward)"
        )

    def losses(self, x: Tensor, pre_acts: Tensor, features: Tensor, x_hat: Tensor, **kw) -> dict[str, Tensor]:
        """Named, unweighted training losses on the normalized input. Subclasses add their penalties."""
        return {"mse": mse_loss(x, x_hat)}

    # ---- public API -------------------------------------------------------------------------

    def encode(self, x: Tensor) -> Tensor:
        """Features f of activations x: (..., d_in) -> (..., d_sae)."""
        self.check_input(x)
        x, _ = self.normalize_input(x)
        return self.activation(self.pre_acts(x))

    def encode_sparse(self, x: Tensor) -> SparseCode:
        """The active latents of x: `SparseCode(indices, values)`, (..., width) each; `to_dense` equals
        `encode(x)`. This default reads the dense features; sparse architectures compute it directly."""
        return SparseCode.from_dense(self.encode(x))

    def skip_term(self, x: Tensor) -> Tensor | None:
        """x W_skip of a normalized input (..., d_in) -> (..., d_out); None without a skip connection."""
        return x @ self.W_skip if self.config.skip_connection else None

    def decode(self, features: Tensor) -> Tensor:
        """Reconstruction in the written activation's units: (..., d_sae) -> (..., d_out).

        With `input_norm="token"` the per-token statistics are not known here; use `forward`. A skip
        transcoder's output also has the skip term of its input, which features alone do not give:
        `forward` adds it.
        """
        return self.denormalize(self._decode_normalized(features), None)

    def _decode_normalized(self, features: Tensor) -> Tensor:
        return features @ self.W_dec + self.b_dec

    def decode_sparse(self, indices: Tensor, values: Tensor) -> Tensor:
        """Decode a sparse code without materializing (..., d_sae): indices/values (..., width).

        Costs O(width * d_in) per token instead of O(d_sae * d_in).
        """
        return self.denormalize(decode_rows(indices, values, self.W_dec) + self.b_dec, None)

    def forward(
        self,
        hidden_states: Tensor,
        target: Tensor | None = None,
        compute_losses: bool | None = None,
        dense_features: bool = True,
        **loss_kwargs,
    ) -> SAEOutput:
        """Encode and decode. Losses are computed in training mode or when `compute_losses=True`.

        `target` is the activation to predict (..., d_out): the one at `hookpoint_out` for a transcoder
        (required for its losses); None means the input itself (an SAE). `loss_kwargs` go to `losses`
        (e.g. `dead_mask` for AuxK). `dense_features=False` lets a sparse path skip the (..., d_sae)
        features (`SAEOutput.code` holds them): the trainer's setting, since filling an (N, d_sae)
        tensor costs more than KronSAE's whole encoder at large d_sae.
        """
        self.check_input(hidden_states)
        x, stats = self.normalize_input(hidden_states)
        wants_losses = compute_losses if compute_losses is not None else self.training
        skip = self.skip_term(x)
        aim = self._architecture_target(hidden_states, target, stats, skip, wants_losses)
        extra = {} if aim is None else {"target": aim}
        x_hat, features, losses = self.reconstruct(x, wants_losses, **extra, **loss_kwargs)
        code = features if isinstance(features, SparseCode) else None
        if code is not None:
            features = code.to_dense(self.config.d_sae) if dense_features else None
        loss = weighted_loss(losses, self.config.loss_weights()) if losses is not None else None
        x_hat = self.denormalize(x_hat if skip is None else x_hat + skip, stats)
        return SAEOutput(reconstruction=x_hat, features=features, loss=loss, losses=losses, code=code)

    def _architecture_target(self, x: Tensor, target: Tensor | None, stats, skip: Tensor | None, wants_losses: bool):
        """What the architecture's own decoder must reconstruct, in its units: the normalized target minus
        the skip term (so its MSE is the whole output's); None when that is the input itself."""
        if target is None:
            if wants_losses and self.config.is_transcoder:
                raise ValueError(
                    f"{type(self).__name__} is a transcoder (writes {self.config.write_hookpoint!r}): its losses "
                    "need the written activation, forward(x, target=y)"
                )
            return None
        want = (*x.shape[:-1], self.config.resolved_d_out)
        if tuple(target.shape) != want:
            raise ValueError(f"target has shape {tuple(target.shape)}, expected {want} (the input's tokens, d_out)")
        self.check_dtype(target)
        aim = self.normalize_target(target, stats)
        return aim if skip is None else aim - skip

    def reconstruct(
        self, x: Tensor, wants_losses: bool, target: Tensor | None = None, **loss_kwargs
    ) -> tuple[Tensor, Tensor | SparseCode, dict | None]:
        """(x_hat, features, named losses or None) of a normalized input: the dense reference path.
        A sparse path may return its features as a (detached) `SparseCode`. `target` (normalized, skip
        term removed) is what the losses compare x_hat with; None means x."""
        pre = self.pre_acts(x)
        features = self.activation(pre)
        x_hat = self._decode_normalized(features)
        aim = x if target is None else target
        losses = self.losses(aim, pre, features, x_hat, **loss_kwargs) if wants_losses else None
        return x_hat, features, losses

    # ---- decoder norm handling (called by the trainer around each optimizer step) -----------

    @torch.no_grad()
    def set_decoder_norm_to_unit_norm(self) -> None:
        if self.config.normalize_decoder:
            self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(self.W_dec.dtype).eps))

    @torch.no_grad()
    def remove_gradient_parallel_to_decoder_directions(self) -> None:
        """Project out the radial part of W_dec's gradient, so Adam does not fight the norm constraint."""
        if not self.config.normalize_decoder or self.W_dec.grad is None:
            return
        unit = self.W_dec / self.W_dec.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(self.W_dec.dtype).eps)
        parallel = (self.W_dec.grad * unit).sum(-1, keepdim=True)
        self.W_dec.grad.sub_(parallel * unit)


REGISTRY: dict[str, tuple[type[SAEConfig], type[SAE]]] = {}


def register(config_cls: type[SAEConfig], model_cls: type[SAE]) -> None:
    """Make an architecture loadable by `AutoSAE`, `AutoConfig` and `AutoModel`."""
    name = config_cls.model_type
    if name in REGISTRY and REGISTRY[name] != (config_cls, model_cls):
        raise ValueError(f"SAE architecture {name!r} is already registered to {REGISTRY[name][1].__name__}")
    if model_cls.config_class is not config_cls:
        raise ValueError(f"{model_cls.__name__}.config_class must be {config_cls.__name__}")
    REGISTRY[name] = (config_cls, model_cls)
    AutoConfig.register(name, config_cls, exist_ok=True)
    AutoModel.register(config_cls, model_cls, exist_ok=True)
