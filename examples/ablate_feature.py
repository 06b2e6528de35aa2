"""Ablate one SAE feature in SmolLM2 and measure what it did to the next-token loss.

Records the features on a text (`hubsae.record`), takes the one firing on most tokens (or
--feature), removes it (`hubsae.ablate`: the error term and every other feature stay)
and prints the loss with the clean model, with the SAE spliced in, and with the feature ablated,
plus the tokens whose loss moved most.

    python examples/ablate_feature.py                    # an untrained SAE (demo only)
    python examples/ablate_feature.py --sae ./my-sae --feature 1234
"""

import argparse

import torch

import hubsae
from hubsae.llm import load_smollm2

TEXT = "The Eiffel Tower is in Paris, the capital of France. It was built in 1889 for the World's Fair."


def token_losses(model, inputs) -> torch.Tensor:
    """Cross-entropy of each next token, (T - 1,)."""
    logits = model(**inputs).logits[0, :-1]
    return torch.nn.functional.cross_entropy(logits, inputs.input_ids[0, 1:], reduction="none")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sae", help="a local folder or Hub repo holding a hubsae SAE")
    parser.add_argument("--subfolder", default=None)
    parser.add_argument("--hookpoint", default="model.layers.15", help="for the untrained SAE")
    parser.add_argument("--feature", type=int)
    parser.add_argument("--text", default=TEXT)
    args = parser.parse_args()

    model, tokenizer = load_smollm2()
    if args.sae:
        sae = hubsae.AutoSAE.from_pretrained(args.sae, subfolder=args.subfolder).eval()
    else:
        torch.manual_seed(0)
        config = hubsae.TopKSAEConfig(d_in=model.config.hidden_size, d_sae=4608, k=32, hookpoint=args.hookpoint)
        sae = hubsae.TopKSAE(config).eval()
    inputs = tokenizer(args.text, return_tensors="pt")
    with torch.no_grad():
        with hubsae.record(model, sae) as rec:
            clean = token_losses(model, inputs)
        features = rec[sae].to_dense()[0]  # (T, d_sae)
        # the feature firing on most tokens (the first token, an outlier-norm attention sink, does not count)
        score = (features[1:] != 0).sum(0) * 1e6 + features[1:].sum(0)
        feature = args.feature if args.feature is not None else int(score.argmax())
        with hubsae.splice(model, sae):
            spliced = token_losses(model, inputs)
        with hubsae.ablate(model, sae, [feature]):
            ablated = token_losses(model, inputs)

    fired = int((features[:, feature] != 0).sum())
    print(f"feature {feature} fires on {fired} of {features.shape[0]} tokens at {sae.config.hookpoint}")
    print(
        f"mean loss  clean {clean.mean():.4f}   SAE spliced {spliced.mean():.4f}   feature ablated {ablated.mean():.4f}"
    )
    tokens = tokenizer.convert_ids_to_tokens(inputs.input_ids[0, 1:])
    change = ablated - clean
    print("\nlargest loss changes when the feature is ablated (predicting token):")
    for i in change.abs().argsort(descending=True)[:5].tolist():
        print(f"  {tokens[i]!r:>14}  {float(clean[i]):.3f} -> {float(ablated[i]):.3f}  ({float(change[i]):+.3f})")


if __name__ == "__main__":
    main()
