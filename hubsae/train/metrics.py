"""Dead-latent tracking, periodic training metrics (MSE, FVU, L0, dead %) and their loggers."""

import importlib.util
import logging
from collections.abc import Callable

import torch
from torch import Tensor

from ..saes.base import SAE

logger = logging.getLogger(__name__)


class DeadLatentTracker:
    """Tokens since each latent last fired; a latent is dead after `window` tokens without firing."""

    def __init__(self, saes: dict[str, SAE], window: int, device):
        self.window = window
        self.since = {
            name: torch.zeros(sae.config.d_sae, dtype=torch.long, device=device) for name, sae in saes.items()
        }

    def dead_masks(self) -> dict[str, Tensor]:
        return {name: since >= self.window for name, since in self.since.items()}

    @torch.no_grad()
    def update(self, fired: dict[str, Tensor], n_tokens: int, accelerator=None) -> None:
        """`fired[name]`: (d_sae,) bool, latents active in this micro-batch; `n_tokens`: global batch size."""
        for name, f in fired.items():
            if accelerator is not None:  # a latent fired if it fired on any process
                f = accelerator.reduce(f.to(torch.int32), "sum") > 0
            since = self.since[name]
            since.add_(n_tokens)
            since.masked_fill_(f, 0)

    def state_dict(self) -> dict[str, Tensor]:
        return {name: s.cpu() for name, s in self.since.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for name in self.since:
            if name not in state:
                raise KeyError(f"checkpoint has no dead-latent counters for hookpoint {name!r}")
            self.since[name].copy_(state[name])


@torch.no_grad()
def batch_metrics(batch: dict[str, Tensor], outs: dict, saes: dict[str, SAE], tracker, accelerator=None) -> dict:
    """MSE (per token, normalized units), FVU, L0 and dead % for each hookpoint on one batch."""
    metrics: dict[str, float] = {}
    for name, out in outs.items():
        sae = saes[name]
        if sae.config.hookpoint_out:  # a transcoder: scored against its write point, in the units it trains in
            x = sae.normalize_target(batch[sae.config.hookpoint_out].float(), None)
            x_hat = sae.normalize_target(out.reconstruction.float(), None)
        else:
            x, _ = sae.normalize_input(batch[name].float())
            x_hat, _ = sae.normalize_input(out.reconstruction.float())
        sums = torch.stack(
            [
                (x - x_hat).pow(2).sum(),
                (x - x.mean(0)).pow(2).sum(),
                out.active_count().float(),
                torch.tensor(float(x.shape[0]), device=x.device),
            ]
        )
        if accelerator is not None:
            sums = accelerator.reduce(sums, "sum")
        err, var, active, n = sums.tolist()
        metrics[f"{name}/mse"] = err / n
        metrics[f"{name}/fvu"] = err / max(var, 1e-12)
        metrics[f"{name}/l0"] = active / n
        metrics[f"{name}/dead_pct"] = 100.0 * float(tracker.dead_masks()[name].float().mean())
        for term, value in out.losses.items():
            metrics[f"{name}/loss_{term}"] = float(value)
    return metrics


def resolve_trackers(config) -> list[str]:
    """The trackers of `config.log_with` that are installed ("auto": TensorBoard if installed)."""
    wanted = set(config.log_with)
    auto = "auto" in wanted
    if auto:
        wanted = (wanted - {"auto"}) | {"tensorboard"}
    found = []
    for name in ("tensorboard", "wandb"):
        if name not in wanted:
            continue
        if importlib.util.find_spec(name) is not None:
            found.append(name)
        elif not auto:
            logger.warning("log_with=%s but %s is not installed; logging to stdout only", name, name)
    return found


def make_logger(accelerator, trackers: list[str], config, local: bool) -> Callable[[dict, int], None]:
    """A `log(metrics, step)` writing to the Python log and the trackers.

    `local`: every process logs its own metrics (hookpoint distribution); else the main one only.
    """
    if trackers:
        accelerator.init_trackers("logs", config=_flat_config(config))

    def log(metrics: dict[str, float], step: int) -> None:
        if local or accelerator.is_main_process:
            text = " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
            logger.info("step %d: %s", step, text)
        if trackers:
            accelerator.log(metrics, step=step)

    return log


def _flat_config(config) -> dict:
    flat = {}
    for k, v in config.to_dict().items():
        flat[k] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return flat
