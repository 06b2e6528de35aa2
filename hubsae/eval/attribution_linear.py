"""Freeze attention patterns and norm scales for the backward pass, leaving every forward value as is.

circuit-tracer's local replacement model (Ameisen et al. 2025, "Circuit tracing", transformer-
circuits.pub) makes a transformer linear in its nodes by holding the attention patterns and the
normalization denominators at their values on the prompt. Here that is done with forward hooks:
- the outputs of `q_proj` and `k_proj` are detached, so the pattern softmax(q k^T) is a constant of
  the backward (values still flow through `v_proj` and `o_proj`);
- an RMSNorm's output n = c * x (c = weight / rms(x), per token) becomes
  n.detach() + c.detach() * (x - x.detach()): the same value, with the Jacobian diag(c);
  a LayerNorm likewise keeps its centering and freezes its standard deviation.
Attention with fused query/key projections (GPT-2's `c_attn`, GPT-NeoX's `query_key_value`)
cannot be frozen this way; `freeze_hooks` says so instead of silently leaving it live.
"""

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

_QK = ("q_proj", "k_proj")


def _detach_output(module: nn.Module, args: tuple, output):
    return output.detach() if isinstance(output, Tensor) else None


def _frozen_norm(module: nn.Module, args: tuple, output):
    if not args or not isinstance(args[0], Tensor) or not isinstance(output, Tensor):
        raise TypeError(f"{type(module).__name__} was called without its input as a tensor argument; cannot freeze it")
    x = args[0]
    dx = (x - x.detach()).to(output.dtype)  # zero in value, the identity in the backward
    if isinstance(module, nn.LayerNorm):
        dx = dx - dx.mean(-1, keepdim=True)
        sigma = (x.detach().float().var(-1, unbiased=False, keepdim=True) + module.eps).sqrt()
        scale = (module.weight.detach() if module.weight is not None else 1.0) / sigma
        return output.detach() + scale.to(output.dtype) * dx
    xd = x.detach().to(output.dtype)
    ratio = (output.detach() / xd.where(xd != 0, 1.0)).where(xd != 0, 0.0)  # c, elementwise
    return output.detach() + ratio * dx


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("RMSNorm")


def freeze_hooks(model: nn.Module) -> list[RemovableHandle]:
    """Register the freezing hooks on every attention q/k projection and norm; the caller removes them."""
    modules = list(model.named_modules())
    qk = [m for name, m in modules if name.rsplit(".", 1)[-1] in _QK]
    norms = [m for _, m in modules if _is_norm(m)]
    if not qk:
        raise ValueError(
            f"linear=True needs attention with separate q_proj/k_proj modules (Llama, Mistral, Qwen, Gemma); "
            f"{type(model).__name__} has none, so its attention patterns cannot be frozen"
        )
    handles = [m.register_forward_hook(_detach_output) for m in qk]
    return handles + [m.register_forward_hook(_frozen_norm) for m in norms]
