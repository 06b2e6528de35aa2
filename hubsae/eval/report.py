"""From text to reports: load what the commands need, write eval JSON/Markdown/PNGs and the browser.

`write_browser(model, tokenizer, sae, texts, out_dir)` is the one call a script needs to look at
an SAE's features: it runs the model over the text once and writes `out_dir/index.html`.
"""

import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path

from torch import Tensor, nn

from ..data.text import TextSource, contexts, pack_contexts, token_stream
from ..files import atomic_write_text
from ..hooks.hookpoints import subfolder_for
from ..saes.base import SAE
from .autointerp_result import AutointerpResult
from .browser import add_explanations, build_browser_data, write_browser_files
from .lm import SAEEvaluation, evaluate
from .metrics import decoder_nearest_neighbours, density_histogram
from .plots import have_matplotlib, plot_density_histogram
from .stats import logit_effects, unembedding

logger = logging.getLogger(__name__)

# metrics shown in the table and the browser header, in this order (all are in the JSON)
TABLE_METRICS = (
    "l0",
    "mse",
    "fvu",
    "explained_variance",
    "explained_variance_legacy",
    "explained_variance_dimvar",
    "cosine_similarity",
    "dead_fraction",
    "dense_fraction",
    "ce_loss_clean",
    "ce_loss_spliced",
    "ce_loss_zero_ablated",
    "ce_loss_recovered",
    "kl_spliced",
    "kl_score",
    "mean_max_decoder_cosine",
)


def text_contexts(
    texts: str | Iterable[str], tokenizer, context_length: int, skip: int = 0, prepend_bos: bool = True
) -> Iterator[Tensor]:
    """(context_length,) token contexts of a text source path (file, folder, `corpus:NAME`, `hf:NAME`)
    or of an iterable of documents; the first `skip` contexts (e.g. the training prefix) are dropped."""
    if isinstance(texts, str):
        stream = contexts(TextSource(texts), tokenizer, context_length, prepend_bos=prepend_bos)
    else:
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        stream = pack_contexts(token_stream(texts, tokenizer), context_length, bos if prepend_bos else None)
    return islice(stream, skip, None)


def numeric_metrics(result: SAEEvaluation) -> dict[str, float]:
    """The number-valued metrics of one SAE (what `hubsae.push_to_hub(metrics={subfolder: ...})` takes)."""
    return {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _cell(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def metrics_table(results: Sequence[SAEEvaluation], keys: Sequence[str] = TABLE_METRICS) -> str:
    """A Markdown table: one row per metric, one column per SAE (by hookpoint)."""
    head = "| metric | " + " | ".join(f"`{r.hookpoint}`" for r in results) + " |"
    rule = "|---|" + "---|" * len(results)
    rows = [f"| {k} | " + " | ".join(_cell(r.metrics.get(k, "")) for r in results) + " |" for k in keys]
    return "\n".join([head, rule, *rows])


def write_report(results: Sequence[SAEEvaluation], out_dir: str | os.PathLike, settings: dict | None = None) -> Path:
    """`eval.json` (every metric per hookpoint, plus the settings), `eval.md` (the table),
    `card_metrics.json` ({subfolder: numbers}, for `hubsae push --metrics`) and, with matplotlib,
    one `density_<hookpoint>.png` per SAE. Returns the JSON's path."""
    out = Path(out_dir)
    doc = {
        "settings": dict(settings or {}),
        "definitions": {
            "fvu": "pooled: E||x - x_hat||^2 / E||x - E[x]||^2 over all tokens (SAELens explained_variance)",
            "fvu_legacy": "mean over tokens of ||x - x_hat||^2 / ||x - mean_batch(x)||^2 (SAELens legacy, SAEBench)",
            "fvu_dimvar": "sum_dim Var(x - x_hat) / sum_dim Var(x) (dictionary_learning)",
            "kl": "KL(P_clean || P_new) per token",
            "ce_loss_recovered": "(CE_zero - CE_spliced) / (CE_zero - CE_clean)",
            "mse": "||x - x_hat||^2 summed over dims, mean over tokens",
        },
        "saes": {r.hookpoint: r.metrics for r in results},
        "density_histograms": {r.hookpoint: density_histogram(r.recon.density()) for r in results},
    }
    path = atomic_write_text(out / "eval.json", json.dumps(doc, indent=2))
    atomic_write_text(out / "eval.md", metrics_table(results) + "\n")
    card = {subfolder_for(r.hookpoint): numeric_metrics(r) for r in results}
    atomic_write_text(out / "card_metrics.json", json.dumps(card, indent=2))
    if have_matplotlib():
        for r in results:
            plot_density_histogram(
                r.recon.density(), out / f"density_{r.hookpoint.replace(':', '_')}.png", title=r.hookpoint
            )
    else:
        logger.warning("matplotlib is not installed: no PNG plots (pip install 'hubsae[plots]')")
    return path


def browser_data(
    result: SAEEvaluation,
    sae: SAE,
    model: nn.Module,
    tokenizer,
    title: str | None = None,
    autointerp: AutointerpResult | None = None,
) -> dict:
    """The browser's data for one evaluated SAE (needs `evaluate(..., n_examples > 0)`), with `autointerp`'s
    explanations and scores on their latents when given."""
    if result.top is None or result.hist is None:
        raise ValueError("the browser needs max-activating examples: run evaluate(..., n_examples=20)")
    W_dec = sae.W_dec.detach()
    cfg = sae.config
    meta = {"architecture": cfg.model_type, "hookpoint": cfg.hookpoint, "d_in": cfg.d_in, "d_sae": cfg.d_sae}
    if getattr(cfg, "k", None) is not None:
        meta["k"] = cfg.k
    meta["base model"] = cfg.base_model_name_or_path or type(model).__name__
    meta.update({k: result.metrics[k] for k in TABLE_METRICS if k in result.metrics})
    data = build_browser_data(
        metrics=result.recon,
        top=result.top,
        hist=result.hist,
        effects=logit_effects(W_dec, unembedding(model).detach().to(W_dec.device)),
        nearest=decoder_nearest_neighbours(W_dec),
        decode=tokenizer.decode,
        title=title or f"{cfg.model_type} at {cfg.hookpoint}",
        meta=meta,
        samples=result.samples,
    )
    if autointerp is not None:
        add_explanations(data, autointerp.neuronpedia_explanations(), autointerp.summary())
    return data


def write_browser(
    model: nn.Module,
    tokenizer,
    sae: SAE,
    texts: str | Iterable[str],
    out_dir: str | os.PathLike,
    *,
    context_length: int = 128,
    max_contexts: int = 128,
    batch_size: int = 8,
    n_examples: int = 20,
    n_samples: int = 10,
    radius: int = 5,
    title: str | None = None,
    skip_contexts: int = 0,
    autointerp: AutointerpResult | None = None,
) -> Path:
    """Evaluate `sae` on `texts` and write the feature browser (`index.html`, `features.json`) and the
    eval report (`eval.json`, `eval.md`, density PNG) into `out_dir`; returns the page's path.

    `texts`: a text source path (file, folder, `corpus:NAME`, `hf:NAME`) or an iterable of documents;
    the first `skip_contexts` contexts are left out (text the SAE was trained on). `autointerp` (from
    `hubsae.eval.autointerp.autointerp`) adds its explanations and scores to the page and `features.json`.
    """
    ctxs = text_contexts(texts, tokenizer, context_length, skip=skip_contexts)
    [result] = evaluate(
        model,
        sae,
        ctxs,
        batch_size=batch_size,
        max_contexts=max_contexts,
        special_ids=tokenizer.all_special_ids,
        n_examples=n_examples,
        n_samples=n_samples,
        example_radius=radius,
    )
    settings = {"context_length": context_length, "max_contexts": max_contexts, "n_tokens": result.recon.n_tokens}
    write_report([result], out_dir, settings)
    return write_browser_files(browser_data(result, sae, model, tokenizer, title, autointerp), out_dir)
