"""The architecture example in CONTRIBUTING.md works as the contract says (run in a fresh process,
so registering it does not add an architecture to the rest of the suite)."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHECKS = """
import torch, tempfile
from hubsae import AutoSAE
torch.manual_seed(0)
sae = TopKL1SAE(TopKL1SAEConfig(d_in=8, d_sae=32, k=4, l1_coefficient=0.01))
x = torch.randn(6, 8)
code = sae.encode_sparse(x)
assert code.indices.shape == (6, 4)
dense = sae.encode(x)
assert torch.equal(code.to_dense(32), dense)
pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
top = pre.topk(4, dim=-1)
expect = torch.zeros(6, 32).scatter(-1, top.indices, top.values.relu())
assert torch.allclose(dense, expect)
out = sae(x, compute_losses=True)
x_hat = expect @ sae.W_dec + sae.b_dec
l1 = expect.abs().sum(-1).mean()
assert torch.allclose(out.loss, (x - x_hat).pow(2).sum(-1).mean() + 0.01 * l1, atol=1e-5)
with tempfile.TemporaryDirectory() as d:
    sae.save_pretrained(d)
    again = AutoSAE.from_pretrained(d)
    assert type(again) is TopKL1SAE and torch.equal(again.encode(x), dense)
try:
    TopKL1SAEConfig(d_in=8, d_sae=32, k=40)
    raise SystemExit("k > d_sae was accepted")
except Exception as e:  # huggingface_hub wraps the validator's ValueError
    assert "k=40" in str(e)
print("ok")
"""


def test_contributing_architecture_example_runs():
    text = (ROOT / "CONTRIBUTING.md").read_text()
    match = re.search(r"<!-- example-architecture -->\n```python\n(.*?)```", text, re.S)
    assert match, "CONTRIBUTING.md lost its example architecture"
    example = match.group(1)
    assert len(example.splitlines()) <= 45
    done = subprocess.run([sys.executable, "-c", example + CHECKS], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")
