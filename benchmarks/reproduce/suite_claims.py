"""OrtSAE vs BatchTopK and KronSAE vs TopK on SAEBench's metrics (absorption, sparse probing, autointerp),
measured with the package's suite (`hubsae.eval.suite.run_suite`, what `hubsae eval --suite` calls).

Claims: OrtSAE (arXiv 2509.22033, Table 1) lowers feature absorption, 0.220 -> 0.095 (Gemma-2-2B L20);
KronSAE (arXiv 2505.22255, Table 2 / Fig. 4) lowers it on Pythia-1.4B at l0 = 16, 0.445 -> 0.244.

Scaled down for a CPU, on the cached SmolLM2-135M-Instruct activations after model.layers.10 of the
other reproductions (`common.smollm2_activations`, the same 10% held out by `common.split`, scaled to
E||x|| = sqrt(d)): every SAE at F = 4 d = 2304, k = 32, the same 204,800 training tokens (batch 256,
the shared warmup + cosine schedule of `common.train`), seeds 0, 1, 2. OrtSAE = BatchTopK +
gamma * L_orth (gamma = 0.25 in the paper's units, K = 4 chunks, every step; as ortsae.py);
KronSAE (m, n) = (2, 4), h = F / 8 = 288 heads, mAND. Controls: one untrained SAE per architecture
(BatchTopK, which is also OrtSAE's initialization; TopK; KronSAE), same scale and hookpoint.

Each SAE is saved (`save_pretrained`, the scale folded in as `input_norm="scale"`, so it reads the raw
residual stream) under $HUBSAE_REPRO_CACHE/suite_claims/<arch>/seed_<n>; the suite then runs
absorption and probing on all of them in one call (the LLM's side computed once) and autointerp on
seed 0 of each trained arch and the TopK control. Means +- sd over seeds go to
docs/reproductions/suite_claims.{json,md}.

Run: nice -n 10 .venv/bin/python benchmarks/reproduce/suite_claims.py [--quick] [--eval-only]
"""

import argparse
import json
import logging
import statistics
import time
from functools import partial
from pathlib import Path

import torch
from common import CACHE, HOOKPOINT, fvu, mean_l0, smollm2_activations, split, table
from common import train as train_sae

import hubsae
from hubsae.llm import SMOLLM2_NAME
from hubsae.train.orthogonality import OrthogonalityPenalty

logger = logging.getLogger(__name__)
D, K = 576, 32
ARCHS = ("BatchTopK", "OrtSAE", "TopK", "KronSAE (2,4)")
CONTROLS = {"BatchTopK": "BatchTopK", "TopK": "TopK", "KronSAE": "KronSAE (2,4)"}  # control -> its class
DOCS = Path(__file__).resolve().parents[2] / "docs" / "reproductions"
PAPER = {
    "OrtSAE": "Gemma-2-2B L20, F = 65k, L0 = 70 (OrtSAE Table 1): absorption BatchTopK 0.220, OrtSAE 0.095",
    "KronSAE": "Pythia-1.4B, l0 = 16 (KronSAE): absorption TopK 0.445, KronSAE 0.244",
}


def make(arch: str, d_sae: int, seed: int):
    torch.manual_seed(seed)
    common = dict(d_in=D, d_sae=d_sae, k=K, hookpoint=HOOKPOINT, base_model_name_or_path=SMOLLM2_NAME)
    if arch in ("BatchTopK", "OrtSAE"):
        return hubsae.BatchTopKSAE(hubsae.BatchTopKSAEConfig(**common))
    if arch == "TopK":
        return hubsae.TopKSAE(hubsae.TopKSAEConfig(**common))
    return hubsae.KronSAE(hubsae.KronSAEConfig(**common, num_heads=d_sae // 8, m=2, n=4))


def fit(arch: str, seed: int, train_x, args):
    sae = make(arch, args.d_sae, seed)
    extra = None
    if arch == "OrtSAE":
        penalty = OrthogonalityPenalty(gamma=0.25, num_chunks=4)
        gen = torch.Generator().manual_seed(seed + 100)
        extra = lambda step: penalty(sae.W_dec, step, generator=gen)  # noqa: E731
    run = train_sae(sae, train_x, args.tokens, batch=args.batch, seed=seed, extra_loss=extra)
    return sae, run.seconds, run.alive


def save(sae, path: Path, factor: float, test_raw, record: dict) -> None:
    """Fold the training scale into the SAE (it then reads raw activations) and save it; FVU and L0 on
    the raw held-out split, which must equal those on the scaled split."""
    sae.config.input_norm, sae.config.input_scale = "scale", factor
    sae.eval()
    record.update(fvu=fvu(sae, test_raw), l0=mean_l0(sae, test_raw))
    sae.save_pretrained(path)
    (path / "train.json").write_text(json.dumps(record, indent=1))
    logger.info("%s: %s", path, {k: round(v, 4) for k, v in record.items()})


def train_all(args) -> None:
    train_raw, test_raw = split(smollm2_activations(args.n_tokens))
    factor = float(D**0.5 / train_raw.norm(dim=-1).mean())  # common.scale_to_sqrt_d's factor
    train_x = train_raw * factor
    for arch in ARCHS:
        for seed in args.seeds:
            path = args.results / arch / f"seed_{seed}"
            if (path / "train.json").is_file():
                continue  # kept from an earlier run: arms and seeds can be trained apart
            sae, seconds, alive = fit(arch, seed, train_x, args)
            save(sae, path, factor, test_raw, {"train_seconds": seconds, "alive": alive})
    for control, arch in CONTROLS.items():
        save(make(arch, args.d_sae, 0), args.results / control / "random_init", factor, test_raw, {})


def load_saes(args) -> dict:
    names = [f"{a}/seed_{s}" for a in ARCHS for s in args.seeds] + [f"{c}/random_init" for c in CONTROLS]
    return {n: hubsae.AutoSAE.from_pretrained(args.results / n).eval() for n in names}


def evaluate(args) -> None:
    from hubsae.eval.autointerp_backends import TransformersChat
    from hubsae.eval.report import text_contexts
    from hubsae.eval.suite import run_suite
    from hubsae.llm import load_causal_lm

    model, tokenizer = load_causal_lm()
    model.eval()
    saes = load_saes(args)
    # held out from the SAEs' training text: the cache holds the corpus' first ~1,950 contexts
    contexts = partial(text_contexts, "corpus:shakespeare", tokenizer, 128, skip=args.skip_contexts)
    options = dict(args.options, seed=0, explainer=TransformersChat(model, tokenizer, name=SMOLLM2_NAME))
    times = {}
    for part, steps, names in (
        ("absorption_probing", ["absorption", "probing"], list(saes)),
        ("autointerp", ["autointerp"], [f"{a}/seed_{args.seeds[0]}" for a in ARCHS] + ["TopK/random_init"]),
    ):
        start = time.perf_counter()
        run_suite(steps, {n: saes[n] for n in names}, args.results / part, model=model, tokenizer=tokenizer,
                  contexts=contexts, options=options, settings={"script": "suite_claims.py"})  # fmt: skip
        times[part] = time.perf_counter() - start
        logger.info("%s: %.0f s", part, times[part])
    (args.results / "eval_seconds.json").write_text(json.dumps(times))


METRICS = {  # column: (part, path in the suite's per-SAE result)
    "absorption fraction": ("absorption_probing", "absorption/mean_absorption_fraction"),
    "full absorption": ("absorption_probing", "absorption/mean_full_absorption"),
    "split latents": ("absorption_probing", "absorption/mean_num_split_latents"),
    "code top-1": ("absorption_probing", "probing/code/top_k_accuracy/1"),
    "code top-5": ("absorption_probing", "probing/code/top_k_accuracy/5"),
    "code all latents": ("absorption_probing", "probing/code/sae_accuracy"),
    "fortunes top-1": ("absorption_probing", "probing/fortunes/top_k_accuracy/1"),
    "fortunes top-5": ("absorption_probing", "probing/fortunes/top_k_accuracy/5"),
    "fortunes all latents": ("absorption_probing", "probing/fortunes/sae_accuracy"),
    "detection": ("autointerp", "autointerp/detection"),
    "detection shuffled": ("autointerp", "autointerp/detection_shuffled"),
    "fuzzing": ("autointerp", "autointerp/fuzzing"),
    "fuzzing shuffled": ("autointerp", "autointerp/fuzzing_shuffled"),
    "latents explained": ("autointerp", "autointerp/n_latents"),
    "detection scored": ("autointerp", "autointerp/detection_n_scored"),
    "fuzzing scored": ("autointerp", "autointerp/fuzzing_n_scored"),
    "scorer answers unreadable": ("autointerp", "autointerp/unparsed"),
}


def _get(doc: dict, name: str, path: str):
    step, *keys = path.split("/")
    value = doc["results"].get(step, {}).get(name)
    if step == "autointerp" and keys == ["unparsed"] and value is not None:
        return float(sum(value[f"{s}_unparsed"] for s in ("detection", "fuzzing")))
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def aggregate(args) -> dict:
    docs = {p: json.loads((args.results / p / "eval.json").read_text()) for p in ("absorption_probing", "autointerp")}
    rows = {}
    for arch in (*ARCHS, *(f"{c} (untrained)" for c in CONTROLS)):
        names = [f"{arch}/seed_{s}" for s in args.seeds] if arch in ARCHS else [arch.split(" (")[0] + "/random_init"]
        train = [json.loads((args.results / n / "train.json").read_text()) for n in names]
        row = {"seeds": len(names), "FVU": [t["fvu"] for t in train], "L0": [t["l0"] for t in train]}
        for col, (part, path) in METRICS.items():
            row[col] = [v for n in names if (v := _get(docs[part], n, path)) is not None]
        rows[arch] = row
    summary = {a: {c: _stats(v) if isinstance(v, list) else v for c, v in r.items()} for a, r in rows.items()}
    paired = {n: paired_gap(args.results / "autointerp", n) for n in docs["autointerp"]["saes"]}
    return {"rows": rows, "summary": summary, "paired_gap": paired, "sizes": args.sizes, "paper": PAPER}


def paired_gap(folder: Path, name: str) -> dict:
    """Per scorer, real minus shuffled score over the latents where both got a readable score: the
    control's question (does the explanation tell the judge anything about its latent?), per latent."""
    from hubsae.eval.suite import _png_name

    doc = json.loads((folder / _png_name("autointerp", name).removesuffix(".png") / "autointerp.json").read_text())
    out = {}
    for scorer in ("detection", "fuzzing"):
        diffs = [
            li["scores"][scorer]["score"] - li["shuffled_scores"][scorer]["score"]
            for li in doc["latents"]
            if li["scores"][scorer]["score"] is not None
            and li["shuffled_scores"].get(scorer, {}).get("score") is not None
        ]
        out[scorer] = {"pairs": len(diffs), "mean": statistics.mean(diffs) if diffs else None,
                       "equal": sum(d == 0 for d in diffs)}  # fmt: skip
    return out


def _stats(values: list) -> dict | None:
    if not values:
        return None
    sd = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.mean(values), "sd": sd, "n": len(values), "values": values}


def _count(stats: dict | None) -> int:
    return 0 if stats is None else stats["n"]


def _fmt(stats: dict | None) -> str:
    if stats is None:
        return "-"
    text = f"{stats['mean']:.3f}"
    if stats["sd"] is not None:
        text += f" ± {stats['sd']:.3f}"
    return text


def markdown(result: dict) -> str:
    groups = (
        ("FVU", "L0", "absorption fraction", "full absorption", "split latents"),
        ("code top-1", "code top-5", "code all latents", "fortunes top-1", "fortunes top-5", "fortunes all latents"),
        ("latents explained", "detection scored", "detection", "detection shuffled", "fuzzing scored", "fuzzing",
         "fuzzing shuffled", "scorer answers unreadable"),
    )  # fmt: skip
    out = []
    for cols in groups:  # "SAEs": how many of the arch's SAEs the columns are over (autointerp: seed 0 only)
        rows = [[arch, _count(s[cols[-1]]), *(_fmt(s[c]) for c in cols)] for arch, s in result["summary"].items()]
        out.append(table(rows, ["SAE", "SAEs", *cols]))
    gaps = [
        [name, *(f"{g[s]['mean']:+.3f} ({g[s]['pairs']} pairs, {g[s]['equal']} equal)" if g[s]["pairs"] else "no pair"
                 for s in ("detection", "fuzzing"))]
        for name, g in result["paired_gap"].items()
    ]  # fmt: skip
    out.append(table(gaps, ["SAE", "detection: real - shuffled", "fuzzing: real - shuffled"]))
    return "\n\n".join(out) + "\n\n" + "\n".join(f"paper, {v}" for v in result["paper"].values()) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run (20k cached tokens, F 576, 1 seed)")
    parser.add_argument("--eval-only", action="store_true", help="evaluate and tabulate the saved SAEs")
    parser.add_argument("--table", action="store_true", help="only tabulate the saved evaluation")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # SAEBench's 10 + 5 explainer and 2 + 2 vs 10 scorer contexts, cut for the CPU; 3 per scorer prompt (delphi:
    # 5) because SmolLM2 answers 5-excerpt prompts with lists of the wrong length (see TransformersChat)
    autointerp = dict(n_top_explain=5, n_sampled_explain=3, n_top_score=2, n_sampled_score=1, n_non_activating=3,
                      examples_per_prompt=3)  # fmt: skip
    if args.quick:
        args.n_tokens, args.d_sae, args.tokens, args.batch, args.seeds = 20_000, 576, 4096, 256, [0]
        args.options = dict(absorption_words=120, absorption_config=dict(icl_examples=3, min_probe_f1=0.0),
                            probing_datasets=("code",), probing_per_class=6, probing_config=dict(ks=(1, 5)),
                            autointerp_latents=2, max_contexts=8, autointerp_config=autointerp)  # fmt: skip
    else:
        args.n_tokens, args.d_sae, args.tokens, args.batch, args.seeds = 240_000, 2304, 204_800, 256, [0, 1, 2]
        args.options = dict(absorption_words=5000, probing_per_class=60, probing_config=dict(ks=(1, 2, 5, 10, 20)),
                            autointerp_latents=15, max_contexts=48, autointerp_config=autointerp)  # fmt: skip
    args.skip_contexts = 2000
    args.sizes = {k: getattr(args, k) for k in ("d_sae", "tokens", "batch", "seeds", "skip_contexts")}
    args.sizes.update(k=K, options=args.options)
    args.results = CACHE / ("suite_claims-quick" if args.quick else "suite_claims")
    start = time.perf_counter()
    if not (args.eval_only or args.table):
        train_all(args)
    if not args.table:
        evaluate(args)
    result = aggregate(args)
    stem = (args.results if args.quick else DOCS) / "suite_claims"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    print(f"\ntotal {time.perf_counter() - start:.0f} s; wrote {stem}.json and .md")


if __name__ == "__main__":
    main()
