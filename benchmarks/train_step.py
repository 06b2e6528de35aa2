"""One SAE training step (forward + backward + Adam) side by side: hubsae vs sae-lens vs sparsify.

Every contender trains on the same activations with the same optimizer (torch Adam, fused where
the device supports it), in one process, one after the other. Printed per shape: tokens/s (from
the median step time), peak memory, and the ratio to the encoder-GEMM bound (the time of the
one dense GEMM N x d_in x d_sae alone; TopK's gradient is k-sparse, so nothing else has to be
dense). On CUDA the step runs under bf16 autocast and the "3-GEMM bound" (a third of it) is shown too.

    hubsae         TopKSAE training forward: the sparse path (hubsae.ops.SparseTopKCode)
    hubsae-plain   the same model with HUBSAE_SPARSE_TRAIN=0 (dense features, dense decoder GEMM)
    hubsae-batch   BatchTopKSAE, sparse path
    sae-lens       TopKTrainingSAE.training_forward_pass (sae-lens' defaults otherwise)
    sparsify       SparseCoder.forward, loss = fvu + auxk / 32 (EleutherAI sparsify's training loss)
    kron-MxN       KronSAE, h = F/(m*n) heads of (m, n) pre-latents, the sparse Kron path (hubsae.ops.kron)

"vs hubsae" is the step-time ratio to hubsae's TopK at the same shape (> 1: faster). With
--rounds R every contender runs once per round, in turn, and the median pools all rounds' steps,
so that a load spike from other processes hits every contender alike.

The peers are optional: a contender whose import fails prints "not installed". They live in a
separate venv, e.g. `python3 -m venv /work/venv-peers && /work/venv-peers/bin/pip install
torch sae-lens eai-sparsify && /work/venv-peers/bin/pip install -e . --no-deps`; run this file
with that venv's python. No dead latents (AuxK off) unless --dead-frac marks some dead for all.

    python benchmarks/train_step.py                  # CPU: 576/{4608,18432,65536}/32, 2048 tokens
    python benchmarks/train_step.py --device cuda    # the three H100 shapes, 8192 tokens, bf16 autocast
    python benchmarks/train_step.py --check          # also: sparse vs plain loss and gradients at each shape
"""

import argparse
import contextlib
import ctypes
import gc
import importlib
import os
import statistics
import threading
import time
from collections.abc import Callable

import torch

SHAPES = {
    "cpu": [(576, 4608, 32), (576, 18432, 32), (576, 65536, 32)],
    "cuda": [(2048, 65536, 64), (2304, 16384, 64), (576, 18432, 32)],
}
TOKENS = {"cpu": 2048, "cuda": 8192}
KRON = {"kron-2x4": (2, 4), "kron-4x4": (4, 4), "kron-4x8": (4, 8)}
CONTENDERS = ("hubsae", "hubsae-plain", "hubsae-batch", "sae-lens", "sparsify", *KRON)


# ---- contenders: each returns (module, loss_fn(x) -> scalar loss) ----------------------------


def hubsae_topk(d: int, F: int, k: int, device: str, dead=None, batch: bool = False):
    from hubsae.saes import BatchTopKSAE, BatchTopKSAEConfig, TopKSAE, TopKSAEConfig

    model_cls, config_cls = (BatchTopKSAE, BatchTopKSAEConfig) if batch else (TopKSAE, TopKSAEConfig)
    sae = model_cls(config_cls(d_in=d, d_sae=F, k=k)).to(device).train()
    return sae, lambda x: sae(x, dead_mask=dead, dense_features=False).loss  # as the Trainer calls it


def hubsae_plain(d: int, F: int, k: int, device: str, dead=None):
    from hubsae.ops import ENV_SWITCH

    sae, _ = hubsae_topk(d, F, k, device)

    def loss_fn(x):
        old = os.environ.get(ENV_SWITCH)
        os.environ[ENV_SWITCH] = "0"
        try:
            return sae(x, dead_mask=dead).loss
        finally:
            os.environ.pop(ENV_SWITCH) if old is None else os.environ.__setitem__(ENV_SWITCH, old)

    return sae, loss_fn


def hubsae_kron(m: int, n: int) -> Callable:
    """A builder for KronSAE with (m, n) pre-latents per head and F / (m n) heads."""

    def build(d: int, F: int, k: int, device: str, dead=None):
        from hubsae.saes import KronSAE, KronSAEConfig

        sae = KronSAE(KronSAEConfig(d_in=d, d_sae=F, k=k, num_heads=F // (m * n), m=m, n=n)).to(device).train()
        return sae, lambda x: sae(x, dead_mask=dead, dense_features=False).loss  # as the Trainer calls it

    return build


def saelens_topk(d: int, F: int, k: int, device: str, dead=None):
    from sae_lens.saes.sae import TrainStepInput
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d, d_sae=F, k=k, device=device)).train()

    def loss_fn(x):
        step = TrainStepInput(
            sae_in=x, coefficients={}, dead_neuron_mask=dead, n_training_steps=0, is_logging_step=False
        )
        return sae.training_forward_pass(step).loss

    return sae, loss_fn


def sparsify_topk(d: int, F: int, k: int, device: str, dead=None):
    from sparsify import SparseCoder, SparseCoderConfig

    sae = SparseCoder(d, SparseCoderConfig(num_latents=F, k=k), device=device)
    return sae, lambda x: (out := sae(x, dead_mask=dead)).fvu + out.auxk_loss / 32


MODULES = {"sae-lens": "sae_lens.saes.topk_sae", "sparsify": "sparsify"}  # hubsae: "hubsae.saes"

BUILDERS: dict[str, Callable] = {
    "hubsae": hubsae_topk,
    "hubsae-plain": hubsae_plain,
    "hubsae-batch": lambda d, F, k, device, dead=None: hubsae_topk(d, F, k, device, dead, batch=True),
    "sae-lens": saelens_topk,
    "sparsify": sparsify_topk,
    **{name: hubsae_kron(m, n) for name, (m, n) in KRON.items()},
}


# ---- measurement ------------------------------------------------------------------------------


class PeakRSS:
    """Peak resident memory above the starting level, sampled every millisecond (CPU runs)."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.base = self.peak = self.rss()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def sample(self):
        while not self.stop.wait(0.001):
            self.peak = max(self.peak, self.rss())

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def autocast(device: str):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else contextlib.nullcontext()


def make_adam(params, device: str) -> torch.optim.Optimizer:
    try:
        return torch.optim.Adam(params, lr=1e-4, fused=True)
    except (RuntimeError, TypeError):  # fused Adam not built for this device
        return torch.optim.Adam(params, lr=1e-4, foreach=True)


def time_steps(loss_fn, module, batches, device: str, warmup: int, steps: int) -> list[float]:
    opt = make_adam([p for p in module.parameters() if p.requires_grad], device)
    times = []
    for i in range(warmup + steps):
        x = batches[i % len(batches)]
        sync(device)
        start = time.perf_counter()
        with autocast(device):
            loss = loss_fn(x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def preload(names) -> None:
    """Import every contender's library before measuring, so no import lands in a memory peak."""
    for name in names:
        with contextlib.suppress(ImportError):
            importlib.import_module(MODULES.get(name, "hubsae.saes"))


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc), so each contender's RSS baseline starts clean."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def run_contender(name: str, shape, batches, device: str, warmup: int, steps: int, dead=None) -> dict:
    gc.collect()
    release_freed_memory()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    try:
        with PeakRSS() as rss:
            module, loss_fn = BUILDERS[name](*shape, device, dead)
            times = time_steps(loss_fn, module, batches, device, warmup, steps)
    except ImportError as e:
        return {"name": name, "error": f"not installed ({e.name or e})"}
    peak = torch.cuda.max_memory_allocated() - base if device == "cuda" else rss.peak - rss.base
    del module, loss_fn
    return {"name": name, "times": times, "peak_mib": peak / 2**20}


def run_rounds(names, shape, batches, device: str, warmup: int, steps: int, rounds: int, dead=None) -> dict:
    """Every contender once per round, in turn: {name: {"step_s": pooled median, "peak_mib": max} or {"error"}}."""
    pooled: dict[str, dict] = {}
    for _ in range(rounds):
        for name in names:
            r = run_contender(name, shape, batches, device, warmup, steps, dead)
            if "error" in r:
                pooled[name] = r
                continue
            acc = pooled.setdefault(name, {"times": [], "peak_mib": 0.0})
            acc["times"] += r["times"]
            acc["peak_mib"] = max(acc["peak_mib"], r["peak_mib"])
    return {
        name: r if "error" in r else {"step_s": statistics.median(r["times"]), "peak_mib": r["peak_mib"]}
        for name, r in pooled.items()
    }


def real_batches(path: str, layer: int, n_tok: int, count: int, device: str) -> list[torch.Tensor]:
    """SmolLM2-135M activations at the output of `model.layers.<layer>` on the text of `path`,
    scaled to mean norm sqrt(d_in) (as the trainer does), `count` batches of `n_tok` tokens."""
    from hubsae.llm import load_smollm2

    model, tokenizer = load_smollm2()
    ids = tokenizer(open(path, encoding="utf-8").read(), return_tensors="pt").input_ids[0]
    ctx = 256
    need = n_tok * count
    if ids.numel() < need:
        raise SystemExit(f"--real {path}: {ids.numel()} tokens, need {need}")
    chunks = ids[: need // ctx * ctx + ctx].reshape(-1, ctx)
    with torch.no_grad():
        acts = torch.cat([model(c[None], output_hidden_states=True).hidden_states[layer + 1][0] for c in chunks])
    acts = acts[:need] * (acts.shape[-1] ** 0.5 / acts.norm(dim=-1).mean())
    return [a.to(device) for a in acts.split(n_tok)]


def gemm_bound(shape, n_tok: int, device: str, reps: int = 5) -> float:
    """Tokens/s of the encoder GEMM alone (bias included), the floor of any TopK training step."""
    d, F, _ = shape
    x = torch.randn(n_tok, d, device=device)
    W, b = torch.randn(d, F, device=device) / d**0.5, torch.zeros(F, device=device)
    times = []
    for _ in range(reps + 1):
        sync(device)
        start = time.perf_counter()
        with autocast(device):
            torch.addmm(b, x, W)
        sync(device)
        times.append(time.perf_counter() - start)
    return n_tok / statistics.median(times[1:])


def check_equivalence(shape, x, device: str, builder: Callable = hubsae_topk) -> str:
    """Sparse vs plain (dense) path of one hubsae SAE on one batch: worst relative error of the loss
    and each gradient. HUBSAE_SPARSE_TRAIN switches TopK's and KronSAE's paths alike."""
    from hubsae.ops import ENV_SWITCH

    sae, loss_fn = builder(*shape, device)
    results = []
    for flag in ("0", "1"):
        os.environ[ENV_SWITCH] = flag
        sae.zero_grad(set_to_none=True)
        with autocast(device):
            loss = loss_fn(x)
        loss.backward()
        results.append((loss.detach().float(), {n: p.grad.float() for n, p in sae.named_parameters()}))
    os.environ.pop(ENV_SWITCH)
    (l0, g0), (l1, g1) = results
    errs = {"loss": float((l1 - l0).abs() / l0.abs())}
    errs |= {n: float((g1[n] - g0[n]).norm() / g0[n].norm().clamp_min(1e-12)) for n in g0}
    tol = 5e-2 if device == "cuda" else 1e-4  # bf16 autocast may flip a latent at the top-k boundary
    verdict = "PASS" if max(errs.values()) <= tol else "FAIL"
    return f"{verdict} (tolerance {tol:g}, relative errors " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()) + ")"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--shapes", nargs="*", help="d_in/d_sae/k triples, e.g. 576/4608/32 (default: per device)")
    parser.add_argument("--tokens", type=int, help="tokens per step (default 2048 on CPU, 8192 on CUDA)")
    parser.add_argument("--contenders", nargs="*", default=list(CONTENDERS), choices=CONTENDERS)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, help="timed steps per round (default 5 on CPU, 20 on CUDA)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds over all contenders")
    parser.add_argument("--real", metavar="TEXT_FILE", help="SmolLM2 activations on this text instead of random ones")
    parser.add_argument("--layer", type=int, default=6, help="SmolLM2 layer for --real (d_in 576)")
    parser.add_argument("--dead-frac", type=float, default=0.0, help="fraction of latents marked dead (AuxK runs)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--check", action="store_true", help="verify sparse vs plain gradients at each shape")
    args = parser.parse_args()
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    shapes = [tuple(int(v) for v in s.split("/")) for s in args.shapes] if args.shapes else SHAPES[device]
    n_tok, steps = args.tokens or TOKENS[device], args.steps or (5 if device == "cpu" else 20)
    if args.threads:
        torch.set_num_threads(args.threads)
    preload(args.contenders)
    real = real_batches(args.real, args.layer, n_tok, 2, device) if args.real else None
    data = f"SmolLM2 layer {args.layer} activations of {args.real}" if real else "random activations"
    print(
        f"device {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, {n_tok} tokens/step, {data}"
    )
    print("| d_in / F / k | contender | tok/s | step ms | peak MiB | % of enc-GEMM bound | vs hubsae |")
    print("|---|---|---|---|---|---|---|")
    for shape in shapes:
        gen = torch.Generator().manual_seed(0)
        batches = [torch.randn(n_tok, shape[0], generator=gen).to(device) for _ in range(2)]
        if real is not None:
            if real[0].shape[-1] != shape[0]:
                print(f"| {'/'.join(map(str, shape))} | skipped: --real gives d_in {real[0].shape[-1]} | | | | | |")
                continue
            batches = real
        bound = gemm_bound(shape, n_tok, device)
        dead = None
        if args.dead_frac > 0:
            dead = (torch.rand(shape[1], generator=gen) < args.dead_frac).to(device)
        label = "/".join(map(str, shape))
        extra = f", 3-GEMM bound {bound / 3:,.0f}" if device == "cuda" else ""
        print(f"| {label} | enc-GEMM bound | {bound:,.0f} | {1e3 * n_tok / bound:.1f} | | 100%{extra} | |")
        results = run_rounds(args.contenders, shape, batches, device, args.warmup, steps, args.rounds, dead)
        topk_s = results.get("hubsae", {}).get("step_s")
        for name, r in results.items():
            if "error" in r:
                print(f"| {label} | {name} | {r['error']} | | | | |")
                continue
            tps = n_tok / r["step_s"]
            ratio = f"{topk_s / r['step_s']:.2f}x" if topk_s else ""
            print(
                f"| {label} | {name} | {tps:,.0f} | {1e3 * r['step_s']:.1f} | {r['peak_mib']:,.0f} "
                f"| {100 * tps / bound:.0f}% | {ratio} |"
            )
        if args.check:
            print(f"check {label}: {check_equivalence(shape, batches[0], device)}")
            if shape[1] % 32 == 0:
                print(f"check kron-4x8 {label}: {check_equivalence(shape, batches[0], device, hubsae_kron(4, 8))}")


if __name__ == "__main__":
    main()
