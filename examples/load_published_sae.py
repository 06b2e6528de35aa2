"""Load a published SAE by repo id: a Gemma Scope JumpReLU SAE becomes a hubsae `JumpReLUSAE`.

NEEDS THE NETWORK: it downloads `params.npz` (about 300 MB for width 16k) from the Hugging Face
Hub, so run it with HF_HUB_OFFLINE unset:

    HF_HUB_OFFLINE=0 .venv/bin/python examples/load_published_sae.py
    HF_HUB_OFFLINE=0 .venv/bin/python examples/load_published_sae.py --subfolder layer_22/width_16k/average_l0_72

The format is detected from the files (no flag): Gemma Scope has no config file, so layer, width,
site and model come from the repo name and the path, and the hookpoint is translated to the
module path of the Hugging Face model (`blocks.12.hook_resid_post` -> `model.layers.12`).
The same call loads SAELens, sparsify, Gemma Scope 2 and Llama Scope folders.
"""

import argparse
import os
import sys

import torch

import hubsae


def main(repo: str, subfolder: str, save_to: str | None = None) -> hubsae.SAE:
    sae = hubsae.AutoSAE.from_pretrained(repo, subfolder=subfolder)
    cfg = sae.config
    print(f"{repo}/{subfolder}: {type(sae).__name__}, d_in={cfg.d_in}, d_sae={cfg.d_sae}")
    print(f"reads {cfg.hookpoint!r} of {cfg.base_model_name_or_path}")
    thresholds = sae.threshold.detach()
    print(f"JumpReLU thresholds: median {thresholds.median():.3f}, min {thresholds.min():.3f}")

    # Activations at the hookpoint would come from the model (hubsae.record); random ones here,
    # scaled like a residual stream, only to show the calls.
    x = torch.randn(4, cfg.d_in) * 10
    features = sae.encode(x)
    print(f"L0 on random inputs: {(features > 0).sum(-1).tolist()}")
    if save_to:
        sae.save_pretrained(save_to)  # now a hubsae folder: config.json + model.safetensors
        print(f"saved as a hubsae folder in {save_to}")
    return sae


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default="google/gemma-scope-2b-pt-res")
    parser.add_argument("--subfolder", default="layer_12/width_16k/average_l0_82")
    parser.add_argument("--save-to", help="also save the converted SAE as a hubsae folder")
    args = parser.parse_args()
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        sys.exit("this example downloads from the Hub: unset HF_HUB_OFFLINE (or set it to 0) and rerun")
    main(args.repo, args.subfolder, args.save_to)
