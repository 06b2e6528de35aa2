"""`Trainer`: SAEs on a model's activations with Accelerate, from one CPU core to many GPUs.

The loop is flat (accelerate's `nlp_example.py`): micro-batches -> backward -> project the
decoder gradient -> clip -> AdamW step -> renormalize the decoder. Mutable state (step, dead
latent counters, data position) lives here, never in a config. Data-parallel runs wrap all SAEs
in one DDP module; with many SAEs the hookpoints can instead be spread over the processes.
"""

import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from itertools import chain, islice
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import Tensor
from tqdm.auto import tqdm

from ..auto import AutoSAE
from ..data.stream import DataPosition
from ..files import atomic_write_text
from ..plots import have_matplotlib, plot_training_curves
from ..saes.base import SAE
from ..saes.sparse import weighted_loss
from . import checkpoint as ckpt
from .build import SAEBundle, ensure_cache, estimate_and_build, load_model, make_stream
from .config import RESUMABLE_CHANGES, TrainConfig
from .methods import OrthoTerm, make_pam
from .metrics import DeadLatentTracker, batch_metrics, make_logger, resolve_trackers
from .schedules import lr_factor, sparsity_factor, threshold_window_index

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


class Trainer:
    """Train one SAE per hookpoint of `config`. `model`/`tokenizer` override `config.model` (tests, notebooks)."""

    def __init__(self, config: TrainConfig, model=None, tokenizer=None, accelerator: Accelerator | None = None):
        self.config = config
        self.trackers = resolve_trackers(config)
        self.accelerator = accelerator or Accelerator(
            cpu=not torch.cuda.is_available(),
            mixed_precision=config.mixed_precision,
            log_with=self.trackers or None,
            project_dir=config.output_dir,
        )
        if accelerator is not None:
            self.trackers = []  # a caller's Accelerator brings its own trackers
        acc = self.accelerator
        self.rank, self.world = acc.process_index, acc.num_processes
        mode = config.distribute
        if mode == "auto":
            mode = "hookpoints" if self.world > 1 and len(config.hookpoints) >= self.world else "data"
        if mode == "hookpoints" and len(config.hookpoints) < self.world:
            raise ValueError(f"distribute='hookpoints' needs at least {self.world} hookpoints, got {config.hookpoints}")
        self.data_parallel = mode == "data" and self.world > 1
        self.hookpoints = (
            config.hookpoints[self.rank :: self.world] if mode == "hookpoints" else list(config.hookpoints)
        )
        if self.data_parallel and config.method == "pam_sgd":
            raise ValueError(
                "method='pam_sgd' solves each decoder on one process's batch: use one process or distribute='hookpoints'"
            )
        if self.data_parallel and config.batch_size % self.world:
            raise ValueError(f"batch_size={config.batch_size} must be divisible by the {self.world} processes")
        self.model, self.tokenizer = model, tokenizer
        self.step = 0
        self.saes: dict[str, SAE] = {}
        self.history: list[dict[str, float]] = []  # the logged metrics, one dict per log
        self.ortho = OrthoTerm(config) if config.ortho_coefficient > 0 else None
        self.pams: dict = {}

    # ---- setup ------------------------------------------------------------------------------

    def _reduce_mean(self, t: Tensor) -> Tensor:
        if not self.data_parallel:
            return t
        return self.accelerator.reduce(t.to(self.accelerator.device), "mean").cpu()

    def _prepare_data(self):
        cfg, acc = self.config, self.accelerator
        needs_model = not (cfg.activation_cache and Path(cfg.activation_cache, "index.json").is_file())
        if self.model is None and needs_model:
            self.model, self.tokenizer = load_model(cfg)
        if self.model is not None:
            self.model.to(acc.device)
        if cfg.activation_cache:
            if acc.is_main_process:
                ensure_cache(cfg, self.model, self.tokenizer)
            acc.wait_for_everyone()
        return make_stream(cfg, self.hookpoints, self.model, self.tokenizer, self.rank, self.world, self.data_parallel)

    def _build_optimizer(self, bundle: SAEBundle):
        cfg = self.config
        groups = []
        for name, sae in bundle.items():
            lr = cfg.lr if cfg.lr is not None else 2e-4 / math.sqrt(sae.config.d_sae / 2**14)
            params = self.pams[name].encoder_parameters() if self.pams else list(sae.parameters())
            groups.append({"params": params, "lr": lr})
        optimizer = adamw(groups, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
        return optimizer, scheduler

    def _setup(self, resume_from: Path | None):
        cfg, acc = self.config, self.accelerator
        set_seed(cfg.seed)
        stream = self._prepare_data()
        if resume_from is not None:
            shared = self._check_resumable(resume_from)
            rank_state = ckpt.load_rank_state(resume_from, self.rank)
            self.saes = {h: AutoSAE.from_pretrained(resume_from / "saes" / h) for h in self.hookpoints}
            self.step, self.tokens = shared["step"], shared["tokens"]
            self.position = ckpt_position(rank_state)
            batches = stream(self.position)
        else:
            rank_state, self.tokens, self.position = None, 0, DataPosition()
            batches = stream()
            first = list(islice(batches, cfg.norm_estimation_batches))
            self.saes = estimate_and_build(cfg, self.hookpoints, [b for _, b in first], self._reduce_mean)
            batches = chain(first, batches)  # the estimation batches are trained on too
        if cfg.method == "pam_sgd":
            self.pams = make_pam(cfg, self.saes)
        bundle = SAEBundle(self.saes).train()
        optimizer, scheduler = self._build_optimizer(bundle)
        if self.data_parallel or self.world == 1:
            bundle, optimizer = acc.prepare(bundle, optimizer)
        else:  # hookpoint distribution: each process owns different SAEs, nothing to synchronize
            bundle.to(acc.device)
            optimizer = acc.prepare(optimizer)
        self.tracker = DeadLatentTracker(self.saes, cfg.dead_window_tokens, acc.device)
        if rank_state is not None:
            optimizer.load_state_dict(rank_state["optimizer"])
            scheduler.load_state_dict(rank_state["scheduler"])
            self.tracker.load_state_dict(rank_state["dead"])
            ckpt.set_rng_state(rank_state["rng"])
            for name, window in self.pams.items():
                window.load_state_dict(rank_state["pam"][name])
        return bundle, optimizer, scheduler, batches

    def _check_resumable(self, path: Path) -> dict:
        shared = ckpt.load_shared_state(path)
        diff = ckpt.config_differences(shared["config"], self.config.to_dict(), RESUMABLE_CHANGES)
        if diff:
            raise ValueError(f"cannot resume from {str(path)!r}: its recipe differs in {diff}")
        if shared["world_size"] != self.world:
            raise ValueError(
                f"checkpoint {str(path)!r} was written by {shared['world_size']} processes, now {self.world}"
            )
        return shared

    # ---- the loop -----------------------------------------------------------------------------

    def train(
        self,
        resume: bool | str | os.PathLike = False,
        overwrite: bool = False,
        on_step: Callable[["Trainer"], None] | None = None,
    ) -> dict[str, SAE]:
        """Train to `config.max_tokens`; `resume=True` continues from the latest checkpoint (if any).

        An `output_dir` that already holds a run (finished SAEs or checkpoints) is refused unless
        resuming or `overwrite=True`, and it must be writable before the first step, not after the last.
        `on_step(trainer)` runs after every optimizer step and its checkpoint (`trainer.step`,
        `trainer.saes`, `trainer.history`): to inspect the SAEs, or to stop early by raising.
        """
        cfg, acc = self.config, self.accelerator
        resume_from = self._resume_path(resume)
        if acc.is_main_process:
            ckpt.check_output_dir(self.config.output_dir, self.config.hookpoints, resume_from is not None, overwrite)
        acc.wait_for_everyone()
        bundle, optimizer, scheduler, batches = self._setup(resume_from)
        log = make_logger(acc, self.trackers, cfg, local=not self.data_parallel and self.world > 1)
        bar = tqdm(
            total=cfg.steps * cfg.batch_size * cfg.grad_accum_steps,
            initial=self.tokens,
            unit="tok",
            unit_scale=True,
            disable=not (cfg.progress_bar and acc.is_local_main_process),
            desc="train",
        )
        start, start_tokens = time.perf_counter(), self.tokens
        while self.step < cfg.steps:
            metrics = self._train_step(bundle, optimizer, scheduler, batches)
            self.step += 1
            self.tokens += cfg.batch_size * cfg.grad_accum_steps
            bar.update(cfg.batch_size * cfg.grad_accum_steps)
            if metrics is not None:
                metrics["tokens_per_s"] = (self.tokens - start_tokens) / (time.perf_counter() - start)
                self.history.append({"step": self.step, **metrics})
                log(metrics, self.step)
                bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items() if k.endswith(("fvu", "l0"))})
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                self.save_checkpoint(optimizer, scheduler)
            if on_step is not None:
                on_step(self)
        bar.close()
        self._set_threshold_window(None)  # further training of the returned SAEs uses the EMA again
        for window in self.pams.values():
            window.solve()  # the decoder of the final encoder, from the batches since the last solve
        self._save_final(optimizer, scheduler)
        acc.end_training()
        return self.saes

    def _save_final(self, optimizer, scheduler) -> None:
        """The last checkpoint and the SAEs; if output_dir fails now, the weights go elsewhere, not away."""
        try:
            self.save_checkpoint(optimizer, scheduler)
            self.save_saes()
        except OSError as err:
            rescue = Path(tempfile.mkdtemp(prefix="hubsae-rescued-"))
            for name, sae in self._saes_to_save().items():
                ckpt.save_sae(sae, rescue / f"rank{self.rank}" / name)
            raise OSError(
                f"saving the trained SAEs into {self.config.output_dir!r} failed ({err}); "
                f"they were saved to {rescue} instead"
            ) from err

    def _train_step(self, bundle, optimizer, scheduler, batches) -> dict[str, float] | None:
        cfg, acc = self.config, self.accelerator
        sparsity = sparsity_factor(self.step, cfg)
        want_metrics = cfg.log_every > 0 and (self.step + 1) % cfg.log_every == 0 or self.step + 1 == cfg.steps
        metrics = None
        for micro in range(cfg.grad_accum_steps):
            self.position, batch = next(batches)
            batch = {k: v.to(acc.device) for k, v in batch.items()}
            self._set_threshold_window(threshold_window_index(self.step, micro, cfg))
            last = micro == cfg.grad_accum_steps - 1
            sync = nullcontext() if last or not self.data_parallel else acc.no_sync(bundle)
            with sync:
                with acc.autocast():
                    outs = bundle(batch, self.tracker.dead_masks())
                    loss = self._total_loss(outs, sparsity)
                self._check_finite(loss, outs)
                acc.backward(loss / cfg.grad_accum_steps)
            fired = {h: o.active_latents(self.saes[h].config.d_sae) for h, o in outs.items()}
            self.tracker.update(fired, cfg.batch_size, acc if self.data_parallel else None)
            if want_metrics and last:
                metrics = batch_metrics(batch, outs, self.saes, self.tracker, acc if self.data_parallel else None)
        for sae in self.saes.values():
            sae.remove_gradient_parallel_to_decoder_directions()
        if cfg.max_grad_norm is not None:
            acc.unscale_gradients()
            for sae in self.saes.values():
                torch.nn.utils.clip_grad_norm_(sae.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        for sae in self.saes.values():
            sae.set_decoder_norm_to_unit_norm()
        for name, window in self.pams.items():
            window.observe(batch[name])  # PAM-SGD: the decoder is solved when a window of batches is full
        if metrics is not None:
            metrics["lr_factor"] = lr_factor(self.step, cfg)
            metrics["sparsity_factor"] = sparsity
        return metrics

    def _set_threshold_window(self, index: int | None) -> None:
        """SAEs with a threshold estimated in training (BatchTopK) average it over the late window."""
        for sae in self.saes.values():
            if hasattr(sae, "threshold_window_index"):
                sae.threshold_window_index = index

    def _total_loss(self, outs: dict, sparsity: float) -> Tensor:
        total = 0.0
        for name, out in outs.items():
            weights = self.saes[name].config.loss_weights()  # the sparsity penalties warm up by `sparsity`
            warm = {t: w * (sparsity if t in self.config.sparsity_losses else 1.0) for t, w in weights.items()}
            total = total + weighted_loss(out.losses, warm)
        if self.ortho is not None:
            penalty = self.ortho(self.saes, self.step)
            total = total if penalty is None else total + penalty
        for pam in self.pams.values():
            total = total + pam.proximal_loss()
        return total

    def _check_finite(self, loss: Tensor, outs: dict) -> None:
        ok = torch.isfinite(loss.detach()).float().reshape(1)
        if self.data_parallel:  # every process must stop together, or the others hang in all-reduce
            ok = self.accelerator.reduce(ok, "mean")
        if float(ok) < 1.0:
            latest = ckpt.latest_checkpoint(self.config.output_dir)
            bad = {
                name: sorted(term for term, value in out.losses.items() if not torch.isfinite(value).all())
                for name, out in outs.items()
            }
            where = "; ".join(f"{name}: {terms}" for name, terms in bad.items() if terms) or "another process"
            raise NonFiniteLossError(
                f"loss is {float(loss.detach())} at step {self.step} (non-finite terms at {where}); stopping. "
                f"Last good checkpoint: {latest if latest else 'none'} (lower lr, set max_grad_norm, or check the data)"
            )

    # ---- saving -------------------------------------------------------------------------------

    def _resume_path(self, resume) -> Path | None:
        if not resume:
            return None
        if resume is True:
            path = ckpt.latest_checkpoint(self.config.output_dir)
            if path is None:
                logger.warning("--resume: no checkpoint in %s, starting from scratch", self.config.output_dir)
            return path
        return Path(resume)

    def _saes_to_save(self) -> dict[str, SAE]:
        if self.data_parallel:  # identical on every process: the main one writes
            return self.saes if self.accelerator.is_main_process else {}
        return self.saes

    def save_checkpoint(self, optimizer, scheduler) -> Path:
        acc = self.accelerator
        rank_state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": ckpt.rng_state(),
            "dead": self.tracker.state_dict(),
            "position": self.position.to_dict(),
            "pam": {name: window.state_dict() for name, window in self.pams.items()},
        }
        shared = {
            "step": self.step,
            "tokens": self.tokens,
            "world_size": self.world,
            "hookpoints_per_rank": [self.config.hookpoints[r :: self.world] for r in range(self.world)]
            if not self.data_parallel and self.world > 1
            else [self.config.hookpoints],
            "config": self.config.to_dict(),
        }
        return ckpt.save_checkpoint(
            acc,
            self.config.output_dir,
            self.step,
            self._saes_to_save(),
            rank_state,
            shared,
            self.config.keep_checkpoints,
        )

    def save_saes(self) -> None:
        """Each SAE with `save_pretrained` into `<output_dir>/<hookpoint>/` (written to a temp name, then renamed)."""
        for name, sae in self._saes_to_save().items():
            final = Path(self.config.output_dir) / name
            tmp = final.with_name(f".tmp-{name}")
            ckpt.save_sae(sae, tmp)
            if final.exists():
                old = final.with_name(f".old-{name}")
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
        if self.accelerator.is_main_process:
            self._write_history()
        self.accelerator.wait_for_everyone()
        logger.info("saved SAEs for %s under %s", list(self.saes), self.config.output_dir)

    def _write_history(self) -> None:
        """This run's logged metrics as `history.json`, and as `training_curves.png` (L0, FVU) with matplotlib."""

        out = Path(self.config.output_dir)
        atomic_write_text(out / "history.json", json.dumps(self.history, indent=1))
        keys = {key for row in self.history for key in row}
        if have_matplotlib() and any(k.endswith("l0") for k in keys) and any(k.endswith("fvu") for k in keys):
            plot_training_curves(self.history, out / "training_curves.png")


def adamw(groups: list[dict], **kwargs) -> torch.optim.AdamW:
    """Fused AdamW (one kernel per step instead of a pass per Adam operation: at d_sae 65k on CPU the
    plain one cost as much as KronSAE's encoder); the multi-tensor one where fused is not built."""
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, foreach=True, **kwargs)


def ckpt_position(rank_state: dict) -> DataPosition:
    return DataPosition(**rank_state["position"])


def exit_after_distributed(accelerator: Accelerator) -> None:
    """End a multi-process run with os._exit: torch's gloo teardown sometimes aborts
    ("terminate called without an active exception" after a correct run, on CPU)."""
    if accelerator.num_processes > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
