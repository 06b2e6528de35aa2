"""BatchTopK's inference threshold after a short run: the mean over the late window of training,
so inference L0 is about k (an EMA started at step 1 left it at about half of k)."""

import torch

from hubsae.data import Harvester
from hubsae.saes.batchtopk import BatchTopKSAE, BatchTopKSAEConfig
from hubsae.saes.sparse import batch_topk
from hubsae.train.schedules import threshold_window_index


def test_window_index_counts_micro_batches_of_the_last_tenth(tiny_config):
    cfg = tiny_config(max_tokens=64 * 2 * 40, grad_accum_steps=2)  # 40 steps: window of 4 steps
    assert [threshold_window_index(s, 0, cfg) for s in (35, 36, 39)] == [None, 0, 6]
    assert threshold_window_index(39, 1, cfg) == 7


def test_threshold_is_the_mean_of_the_window_batches_minima():
    torch.manual_seed(0)
    sae = BatchTopKSAE(BatchTopKSAEConfig(d_in=8, d_sae=32, k=4)).train()
    batches = [torch.randn(16, 8) for _ in range(5)]
    sae(batches[0], compute_losses=True)  # outside the window: the EMA's first value
    minima = []
    for i, x in enumerate(batches[1:]):
        sae.threshold_window_index = i
        sae(x, compute_losses=True)
        _, kept = batch_topk((x - sae.b_dec) @ sae.W_enc + sae.b_enc, 4)
        minima.append(kept[kept > 0].min())
    torch.testing.assert_close(sae.threshold, torch.stack(minima).mean())


def _inference_l0(tiny_config, tiny_lm, tmp_path, name: str) -> float:
    from itertools import islice

    from hubsae.data import TextSource, contexts
    from hubsae.train import Trainer

    model, tok, _, corpus = tiny_lm
    cfg = tiny_config(
        architecture="hubsae_batchtopk", sae={"k": 8}, max_tokens=64 * 60, output_dir=str(tmp_path / name)
    )
    sae = Trainer(cfg, model=model, tokenizer=tok).train()[cfg.hookpoints[0]].eval()
    assert sae.threshold_window_index is None
    ids = torch.stack(list(islice(contexts(TextSource(path=str(corpus)), tok, 16), 32)))
    x = Harvester(model, cfg.hookpoints)(ids)[cfg.hookpoints[0]][:, 1:].reshape(-1, sae.config.d_in)
    return float((sae.encode(x) != 0).sum(-1).float().mean())


def test_short_run_inference_l0_is_close_to_k(tiny_config, tiny_lm, tmp_path, monkeypatch):
    l0 = _inference_l0(tiny_config, tiny_lm, tmp_path, "window")
    monkeypatch.setattr("hubsae.train.trainer.threshold_window_index", lambda *a: None)  # the EMA alone
    ema_l0 = _inference_l0(tiny_config, tiny_lm, tmp_path, "ema")
    assert abs(l0 - 8) < abs(ema_l0 - 8), (l0, ema_l0)
    assert 0.75 * 8 <= l0 <= 1.25 * 8, (l0, ema_l0)
