"""Quality at an equal budget: hubsae's TopK SAE against sparsify's and sae-lens' TopK SAEs.

All three train on the same cached SmolLM2-135M activations (residual stream after
model.layers.10, Shakespeare corpus, scaled to E||x|| = sqrt(d)), the same tokens in the same
order (each once), the same d_sae = 2304 and k = 32, with one shared optimizer setting (AdamW,
lr 8e-4, 10% linear warmup, cosine to 1e-6, the KronSAE paper's schedule; decoder-gradient
projection and renormalization wherever the library defines them), and each library's own loss:

    hubsae     TopKSAE(x).loss: MSE + AuxK / 32 (hubsae's convention, see hubsae/saes/base.py)
    sparsify   SparseCoder(x, dead_mask=).fvu + auxk_loss / 32 (sparsify's trainer)
    sae-lens   TopKTrainingSAE.training_forward_pass(...).loss (its defaults: AuxK weight 1,
               activations rescaled by the decoder norm, decoder initialized at norm 0.1)

Dead latents: not fired in the last 10% of the run (each library's AuxK sees the same mask).
Held-out FVU is pooled (sum of squared errors over the total variance) on a 10% test split.

The peers live in their own venv (as benchmarks/train_step.py): run this file with it,
    nice -n 10 /work/venv-peers/bin/python benchmarks/reproduce/peers_quality.py [--quick]
"""

import argparse
import logging
import time

import torch
from common import mean_sd, scale_to_sqrt_d, schedule, smollm2_activations, split, table

import hubsae
from hubsae.train.schedules import lr_factor
from hubsae.train.trainer import adamw

logger = logging.getLogger(__name__)
D, K = 576, 32


def hubsae_topk(d_sae: int):
    sae = hubsae.TopKSAE(hubsae.TopKSAEConfig(d_in=D, d_sae=d_sae, k=K))

    def step(x, dead):
        out = sae(x, compute_losses=True, dense_features=False, dead_mask=dead)
        return out.loss, out.active_latents(d_sae)

    return sae, step, lambda x: sae(x).reconstruction


def sparsify_topk(d_sae: int):
    from sparsify import SparseCoder, SparseCoderConfig

    sae = SparseCoder(D, SparseCoderConfig(num_latents=d_sae, k=K), device="cpu")

    def step(x, dead):
        out = sae(x, dead_mask=dead)
        fired = torch.zeros(d_sae, dtype=torch.bool).index_fill_(0, out.latent_indices.flatten(), True)
        return out.fvu + out.auxk_loss / 32, fired

    return sae, step, lambda x: sae(x).sae_out


def saelens_topk(d_sae: int):
    from sae_lens.saes.sae import TrainStepInput
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D, d_sae=d_sae, k=K, device="cpu")).train()

    def step(x, dead):
        inp = TrainStepInput(
            sae_in=x, coefficients={}, dead_neuron_mask=dead, n_training_steps=0, is_logging_step=False
        )
        out = sae.training_forward_pass(inp)
        return out.loss, (out.feature_acts != 0).any(0)

    return sae, step, lambda x: sae.decode(sae.encode(x))


LIBRARIES = {"hubsae": hubsae_topk, "sparsify": sparsify_topk, "sae-lens": saelens_topk}


def run(name: str, seed: int, train_x, test_x, tokens: int, batch: int, d_sae: int) -> dict:
    torch.manual_seed(seed)
    sae, step_fn, reconstruct = LIBRARIES[name](d_sae)
    steps = tokens // batch
    cfg = schedule(steps, batch, 8e-4)
    opt = adamw([{"params": list(sae.parameters()), "lr": 8e-4}], weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed))[: steps * batch]
    window, last_fired = max(1, steps // 10), torch.zeros(d_sae, dtype=torch.long)
    seconds = 0.0
    for step, idx in enumerate(order.reshape(steps, batch)):
        start = time.perf_counter()
        loss, fired = step_fn(train_x[idx], (step - last_fired) > window)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if hasattr(sae, "remove_gradient_parallel_to_decoder_directions"):
            sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        sched.step()
        if hasattr(sae, "set_decoder_norm_to_unit_norm"):
            sae.set_decoder_norm_to_unit_norm()
        last_fired[fired] = step
        seconds += time.perf_counter() - start
    with torch.no_grad():
        err = sum((x - reconstruct(x)).pow(2).sum().item() for x in test_x.split(4096))
    fvu = err / (test_x - test_x.mean(0)).pow(2).sum().item()
    dead = ((steps - 1 - last_fired) > window).float().mean().item()
    logger.info("%s seed %d: FVU %.4f, dead %.3f, %.0f s", name, seed, fvu, dead, seconds)
    return {"FVU": fvu, "dead": dead, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (20k cached tokens, F 576, 1 seed)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    n_tokens, tokens, batch, d_sae, seeds = (
        (20_000, 8192, 256, 576, [0]) if args.quick else (240_000, 102_400, 256, 2304, [0, 1, 2])
    )
    train_x, test_x = scale_to_sqrt_d(*split(smollm2_activations(n_tokens)))
    rows = []
    for name in LIBRARIES:
        runs = [run(name, s, train_x, test_x, tokens, batch, d_sae) for s in seeds]
        rows.append(
            [
                name,
                mean_sd([r["FVU"] for r in runs], 4),
                mean_sd([r["dead"] for r in runs]),
                mean_sd([r["seconds"] for r in runs], 0),
            ]
        )
    print(f"\n{tokens:,} tokens (batch {batch}, each once), F={d_sae}, k={K}, seeds {seeds}; held-out FVU (pooled)")
    print(table(rows, ["library", "FVU (test)", "dead fraction", "train s (1 thread)"]))


if __name__ == "__main__":
    main()
