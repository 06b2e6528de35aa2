"""Manual cross-check against the real libraries (not collected by pytest: they are not hubsae deps).

Saves SAEs with sae-lens and eai-sparsify themselves, loads the files with hubsae, and reports the
largest difference of features and reconstructions on the same inputs. Run it in a venv that has
the peers installed next to hubsae's dependencies (see CONTRIBUTING.md, "Hub and published formats"):

    PYTHONPATH=. HF_HUB_OFFLINE=1 /path/to/peers-venv/bin/python tests/formats/peers_crosscheck.py
"""

import tempfile
from pathlib import Path

import torch

import hubsae

D_IN, D_SAE, N = 64, 512, 256


def _randomize(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if "W_" in name or "weight" in name else 0.5))


def _report(name: str, feats: tuple, recon: tuple) -> float:
    df = (feats[0] - feats[1]).abs().max().item()
    dr = (recon[0] - recon[1]).abs().max().item()
    active = (feats[0] != 0).sum(-1).float().mean().item()
    print(f"{name:34s} max|f diff| {df:.2e}  max|x_hat diff| {dr:.2e}  (mean L0 {active:.1f})")  # noqa: T201
    return max(df, dr)


def saelens(tmp: Path, x: torch.Tensor) -> float:
    import sae_lens as sl

    meta = {"model_name": "gpt2", "hook_name": "blocks.3.hook_resid_post"}
    cases = {
        "standard": sl.StandardSAE(sl.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE)),
        "topk": sl.TopKSAE(sl.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=16)),
        "topk rescale_acts_by_decoder_norm": sl.TopKSAE(
            sl.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=16, rescale_acts_by_decoder_norm=True)
        ),
        "jumprelu": sl.JumpReLUSAE(sl.JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=False)),
        "gated": sl.GatedSAE(sl.GatedSAEConfig(d_in=D_IN, d_sae=D_SAE)),
    }
    worst = 0.0
    for name, sae in cases.items():
        for key, value in meta.items():
            setattr(sae.cfg.metadata, key, value)
        _randomize(sae)
        if name == "jumprelu":
            with torch.no_grad():
                sae.threshold.copy_(torch.rand(D_SAE) * 2 - 0.2)  # a few negative thresholds too
        folder = tmp / f"saelens-{name.replace(' ', '-')}"
        sae.save_model(folder)
        ours = hubsae.AutoSAE.from_pretrained(folder)
        with torch.no_grad():
            f_ref = sae.encode(x)
            worst = max(worst, _report(f"SAELens {name} -> {type(ours).__name__}",
                                       (f_ref, ours.encode(x)), (sae.decode(f_ref), ours(x).reconstruction)))  # fmt: skip
    return worst


def sparsify(tmp: Path, x: torch.Tensor) -> float:
    from sparsify import SparseCoder, SparseCoderConfig

    sae = SparseCoder(D_IN, SparseCoderConfig(k=16, num_latents=D_SAE))
    _randomize(sae)
    sae.save_to_disk(tmp / "sparsify" / "layers.3")
    ours = hubsae.AutoSAE.from_pretrained(tmp / "sparsify", subfolder="layers.3")
    with torch.no_grad():
        out = sae.encode(x)
        f_ref = torch.zeros(N, D_SAE).scatter(-1, out.top_indices, out.top_acts)
        x_hat = sae.decode(out.top_acts, out.top_indices)
        return _report("sparsify topk -> TopKSAE", (f_ref, ours.encode(x)), (x_hat, ours(x).reconstruction))


if __name__ == "__main__":
    torch.manual_seed(0)
    x = torch.randn(N, D_IN) * 3
    with tempfile.TemporaryDirectory() as tmp:
        worst = max(saelens(Path(tmp), x), sparsify(Path(tmp), x))
    print(f"largest difference: {worst:.2e}")  # noqa: T201
