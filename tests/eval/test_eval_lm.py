"""Model-level evaluation on a tiny random Llama: CE/KL with the SAE spliced in and zero-ablated."""

import pytest
import torch
from tiny_models import tiny_llama

import hubsae
from hubsae.eval.lm import evaluate
from hubsae.eval.metrics import token_cross_entropy
from hubsae.saes import ReLUSAE, ReLUSAEConfig, TopKSAE, TopKSAEConfig

HOOK = "model.layers.1"
BOS = 0


@pytest.fixture(scope="module")
def model():
    return tiny_llama(seed=0, pad_token_id=None)


def _contexts(n=12, T=16):
    ids = torch.randint(1, 128, (n, T))
    ids[:, 0] = BOS
    return list(ids)


def _identity_sae(d=32):
    """x_hat = ReLU(x) - ReLU(-x) = x exactly: a perfect SAE."""
    sae = ReLUSAE(ReLUSAEConfig(d_in=d, d_sae=2 * d, hookpoint=HOOK)).eval()
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_identity_splice_recovers_everything(model):
    [res] = evaluate(model, _identity_sae(), _contexts(), batch_size=5, special_ids=[BOS], progress=False)
    m = res.metrics
    assert m["fvu"] == pytest.approx(0.0, abs=1e-12) and m["fvu_dimvar"] == pytest.approx(0.0, abs=1e-12)
    assert m["ce_loss_spliced"] == pytest.approx(m["ce_loss_clean"], abs=1e-6)
    assert m["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-5)
    assert m["kl_spliced"] == pytest.approx(0.0, abs=1e-6) and m["kl_score"] == pytest.approx(1.0, abs=1e-5)
    assert m["ce_loss_zero_ablated"] > m["ce_loss_clean"] + 0.01  # ablation must hurt for the test to mean anything
    assert m["n_tokens"] == 12 * 15  # BOS excluded
    assert m["l0"] == pytest.approx(32.0, abs=0.5)  # each dim is +x or -x: 32 active unless x_i == 0
    assert m["mean_max_decoder_cosine"] == pytest.approx(0.0, abs=1e-6)  # ±e_i: the nearest other row is orthogonal


def test_zero_sae_recovers_nothing(model):
    sae = _identity_sae()
    with torch.no_grad():
        sae.W_dec.zero_()
    [res] = evaluate(model, sae, _contexts(), batch_size=4, special_ids=[BOS], progress=False)
    m = res.metrics
    assert m["ce_loss_spliced"] == pytest.approx(m["ce_loss_zero_ablated"], abs=1e-6)
    assert m["ce_loss_recovered"] == pytest.approx(0.0, abs=1e-5)
    assert m["kl_score"] == pytest.approx(0.0, abs=1e-5)
    # x_hat = 0: no cosine, no length, and the error is all of x, so FVU = E‖x‖² / E‖x − E x‖² >= 1
    assert m["cosine_similarity"] == 0.0 and m["l2_ratio"] == 0.0
    assert m["fvu"] >= 1.0 and m["fvu_dimvar"] == pytest.approx(1.0)


def test_clean_ce_equals_transformers_loss_and_splice_matches_hubsae_splice(model):
    sae = TopKSAE(TopKSAEConfig(d_in=32, d_sae=64, k=4, hookpoint=HOOK)).eval()
    ctxs = _contexts(6)
    [res] = evaluate(model, sae, ctxs, batch_size=6, special_ids=[], progress=False)
    ids = torch.stack(ctxs)
    with torch.no_grad():
        assert res.metrics["ce_loss_clean"] == pytest.approx(float(model(input_ids=ids, labels=ids).loss), rel=1e-5)
        with hubsae.splice(model, sae):
            spliced = model(input_ids=ids).logits
    total, count = token_cross_entropy(spliced, ids)
    assert res.metrics["ce_loss_spliced"] == pytest.approx(float(total / count), rel=1e-5)
    assert 0.0 < res.metrics["fvu"] < 2.0 and res.metrics["l0"] == pytest.approx(4.0)


def test_examples_and_several_saes(model):
    a = TopKSAE(TopKSAEConfig(d_in=32, d_sae=64, k=4, hookpoint=HOOK)).eval()
    b = TopKSAE(TopKSAEConfig(d_in=32, d_sae=48, k=3, hookpoint="model.layers.2")).eval()
    ra, rb = evaluate(model, [a, b], _contexts(), batch_size=5, special_ids=[BOS], n_examples=3, progress=False)
    assert ra.hookpoint == HOOK and rb.metrics["hookpoint"] == "model.layers.2"
    assert ra.metrics["ce_loss_clean"] == pytest.approx(rb.metrics["ce_loss_clean"])
    assert rb.top.values.shape == (48, 3)
    assert int(ra.hist.counts.sum()) == int(ra.recon.fire_count.sum())  # one histogram entry per firing
    fired = ra.recon.fire_count > 0
    assert torch.isfinite(ra.top.values[fired, 0]).all()
    for f in fired.nonzero().flatten()[:5].tolist():
        assert all(ex["pos"] != 0 for ex in ra.top.examples(f))  # the BOS position is never an example
        assert ra.top.examples(f)[0]["value"] == pytest.approx(float(ra.recon.act_max[f]))


def test_errors_name_the_problem(model):
    sae = TopKSAE(TopKSAEConfig(d_in=32, d_sae=64, k=4)).eval()
    with pytest.raises(ValueError, match="hookpoint"):
        evaluate(model, sae, _contexts(), progress=False)
    sae = TopKSAE(TopKSAEConfig(d_in=32, d_sae=64, k=4, hookpoint="model.layers.9")).eval()
    with pytest.raises(ValueError, match="model.layers.9"):
        evaluate(model, sae, _contexts(), progress=False)
    with pytest.raises(ValueError, match="no contexts"):
        evaluate(model, _identity_sae(), [], progress=False)
