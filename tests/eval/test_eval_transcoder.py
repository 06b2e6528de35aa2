"""evaluate() on a transcoder of a tiny Llama's MLP: scored and spliced at its write point."""

import pytest
import torch
from tiny_models import tiny_llama

import hubsae
from hubsae.eval.lm import evaluate
from hubsae.hooks.attach import add_hook, hooks_removed
from hubsae.hooks.capture import capture
from hubsae.hooks.hookpoints import resolve_hookpoint

READ, WRITE = "model.layers.1.mlp:input", "model.layers.1.mlp"


@pytest.fixture(scope="module")
def model():
    return tiny_llama(seed=0, pad_token_id=None)


def skip_transcoder():
    torch.manual_seed(4)
    config = hubsae.TopKSAEConfig(d_in=32, d_sae=64, k=4, hookpoint=READ, hookpoint_out=WRITE,
                                  subtract_b_dec=False, skip_connection=True)  # fmt: skip
    sae = hubsae.TopKSAE(config).eval()
    with torch.no_grad():
        sae.W_skip.normal_(0, 0.1)
        sae.W_dec.mul_(0.05)
    return sae


def ce(logits, ids):
    return float(torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()))


def test_fvu_and_ce_are_those_of_the_write_point(model):
    ids = torch.randint(1, 128, (6, 12), generator=torch.Generator().manual_seed(1))
    sae = skip_transcoder()
    [res] = evaluate(model, sae, list(ids), batch_size=3, special_ids=[], progress=False)
    m = res.metrics
    assert m["hookpoint"] == READ and m["hookpoint_out"] == WRITE
    with torch.no_grad():
        acts = capture(model, [READ, WRITE], lambda: model(input_ids=ids))[1]
        y, y_hat = acts[WRITE], sae(acts[READ]).reconstruction
        fvu = (y - y_hat).pow(2).sum() / (y - y.reshape(-1, 32).mean(0)).pow(2).sum()
        with hubsae.splice(model, sae):
            spliced = model(input_ids=ids).logits
        handles = []
        with hooks_removed(handles):
            handles.append(add_hook(resolve_hookpoint(model, WRITE), lambda a: torch.zeros_like(a)))
            zeroed = model(input_ids=ids).logits
    assert m["fvu"] == pytest.approx(float(fvu), rel=1e-4)
    assert m["ce_loss_spliced"] == pytest.approx(ce(spliced, ids), rel=1e-5)
    assert m["ce_loss_zero_ablated"] == pytest.approx(ce(zeroed, ids), rel=1e-5)
    with torch.no_grad():
        assert m["ce_loss_clean"] == pytest.approx(float(model(input_ids=ids, labels=ids).loss), rel=1e-5)


def test_a_transcoder_writing_nothing_recovers_nothing(model):
    sae = skip_transcoder()
    with torch.no_grad():
        for weight in (sae.W_dec, sae.b_dec, sae.W_skip):
            weight.zero_()
    ids = torch.randint(1, 128, (4, 12), generator=torch.Generator().manual_seed(2))
    [res] = evaluate(model, sae, list(ids), batch_size=4, special_ids=[], progress=False)
    assert res.metrics["ce_loss_spliced"] == pytest.approx(res.metrics["ce_loss_zero_ablated"], abs=1e-6)
    assert res.metrics["ce_loss_recovered"] == pytest.approx(0.0, abs=1e-5)
