"""Steer SmolLM2's generation with an SAE feature.

Finds the feature that fires most on a few concept sentences compared with neutral ones (with
`hubsae.record`), then generates with and without adding its decoder direction (`hubsae.steer`),
only at the positions that produce new tokens.

    python examples/steer_generation.py                              # an untrained SAE (demo only)
    python examples/steer_generation.py --sae ./my-sae --feature 1234 --coefficient 8

Without --sae the SAE is randomly initialized, so its "features" are random directions: the
script still shows the whole workflow, and the steered text changes, but not toward the concept.
"""

import argparse

import torch

import hubsae
from hubsae.llm import load_smollm2

CONCEPT = ["We got married in June.", "The bride wore a white dress.", "The wedding guests danced all night."]
NEUTRAL = ["The train leaves at noon.", "She fixed the kitchen sink.", "Prices rose by two percent."]


def load_sae(args, width: int) -> hubsae.SAE:
    if args.sae:
        return hubsae.AutoSAE.from_pretrained(args.sae, subfolder=args.subfolder).eval()
    torch.manual_seed(0)
    config = hubsae.TopKSAEConfig(d_in=width, d_sae=4608, k=32, hookpoint=args.hookpoint)
    return hubsae.TopKSAE(config).eval()


@torch.no_grad()
def mean_features(model, tokenizer, sae, texts: list[str]) -> torch.Tensor:
    """Mean activation of every feature over the tokens of `texts`."""
    inputs = tokenizer(texts, return_tensors="pt", padding=True)
    with hubsae.record(model, sae) as rec:
        model(**inputs)
    dense = rec[sae].to_dense()  # (B, T, d_sae)
    # skip padding and each text's first token, whose outlier norm (an attention sink) dominates means
    mask = (inputs.attention_mask.cumsum(-1) > 1).unsqueeze(-1)
    return (dense * mask).sum((0, 1)) / mask.sum()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sae", help="a local folder or Hub repo holding a hubsae SAE")
    parser.add_argument("--subfolder", default=None)
    parser.add_argument("--hookpoint", default="model.layers.15", help="for the untrained SAE")
    parser.add_argument("--feature", type=int, help="feature to steer with (default: found from the concept)")
    parser.add_argument("--coefficient", type=float, default=0.6, help="with --absolute: activation units")
    parser.add_argument("--absolute", action="store_true", help="coefficient in activation units, not x ||x||")
    parser.add_argument("--prompt", default="Tell me about your weekend.")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()

    model, tokenizer = load_smollm2()
    tokenizer.padding_side = "left"
    sae = load_sae(args, model.config.hidden_size)
    feature = args.feature
    if feature is None:
        difference = mean_features(model, tokenizer, sae, CONCEPT) - mean_features(model, tokenizer, sae, NEUTRAL)
        feature = int(difference.argmax())
        print(f"feature {feature}: mean activation {float(difference[feature]):+.3f} higher on the concept sentences")

    chat = [{"role": "user", "content": args.prompt}]
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    inputs = tokenizer(text, return_tensors="pt")
    settings = dict(max_new_tokens=args.max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    prompt_len = inputs.input_ids.shape[1]
    with torch.no_grad():
        plain = model.generate(**inputs, **settings)
        with hubsae.steer(
            model,
            sae,
            {feature: args.coefficient},
            positions="generated",
            relative=not args.absolute,
        ):
            steered = model.generate(**inputs, **settings)
    print(f"\nprompt: {args.prompt}")
    print(f"\nplain:   {tokenizer.decode(plain[0, prompt_len:], skip_special_tokens=True)}")
    kind = "x ||x||" if not args.absolute else "(absolute)"
    print(f"\nsteered (feature {feature}, {args.coefficient} {kind}):")
    print(f"         {tokenizer.decode(steered[0, prompt_len:], skip_special_tokens=True)}")


if __name__ == "__main__":
    main()
