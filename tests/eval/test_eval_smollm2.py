"""End to end on the real SmolLM2-135M-Instruct: a perfect SAE costs nothing, zero ablation a lot."""

import json

import pytest
import torch

from hubsae.eval import evaluate, text_contexts, write_browser
from hubsae.llm import load_smollm2
from hubsae.saes import ReLUSAE, ReLUSAEConfig, TopKSAE, TopKSAEConfig

TEXT = (
    "The history of the city begins with a small settlement on the river. Over the centuries it grew "
    "into a busy port, and merchants from many countries came to trade wool, wine and salt. In the "
    "nineteenth century the railway arrived, factories were built along the water, and the population "
    "doubled within a generation. Today the old warehouses hold museums, cafes and small shops."
)
HOOK = "model.layers.15"


@pytest.fixture(scope="module")
def smollm2():
    return load_smollm2()


@pytest.mark.slow
def test_identity_sae_on_smollm2(smollm2):
    model, tok = smollm2
    d = model.config.hidden_size
    sae = ReLUSAE(ReLUSAEConfig(d_in=d, d_sae=2 * d, hookpoint=HOOK)).eval()
    eye = torch.eye(d)
    with torch.no_grad():  # x_hat = ReLU(x) - ReLU(-x) = x
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    ctxs = list(text_contexts([TEXT], tok, 32))[:2]
    [res] = evaluate(model, sae, ctxs, special_ids=tok.all_special_ids, progress=False)
    m = res.metrics
    assert 1.0 < m["ce_loss_clean"] < 6.0  # a real LM on plain English (about 2.6 nats)
    assert m["ce_loss_zero_ablated"] > m["ce_loss_clean"] + 2.0  # the residual stream carries everything
    assert m["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-6) and m["fvu"] == pytest.approx(0.0, abs=1e-12)
    assert m["kl_spliced"] == pytest.approx(0.0, abs=1e-6) and m["kl_score"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.slow
def test_browser_for_smollm2(smollm2, tmp_path):
    model, tok = smollm2
    sae = TopKSAE(TopKSAEConfig(d_in=model.config.hidden_size, d_sae=256, k=8, hookpoint=HOOK)).eval()
    page = write_browser(model, tok, sae, [TEXT], tmp_path, context_length=32, max_contexts=2, n_examples=4)
    data = json.loads((tmp_path / "features.json").read_text(encoding="utf-8"))
    assert len(data["features"]) == 256 and page.read_text(encoding="utf-8").count('id="data"') == 1
    first = data["features"][data["first_feature"]]
    window = [t for t in first["activations"][0]["tokens"] if t not in tok.all_special_tokens]
    assert "".join(window).strip() in TEXT  # the window is the text around the peak, decoded
    assert all(len(f["pos_str"]) == 10 for f in data["features"])  # top logits over the real 49k vocabulary
