"""The evaluation suite behind `hubsae eval --suite core,dictionary,...`: named steps, one report.

Each step (`STEPS`: name -> `Step`) takes a `SuiteRun` (the model, the SAEs by name, held-out
contexts, options) and returns `{sae name: JSON-able metrics}`, writing its own PNG(s) into the
output folder. Steps whose module is optional or newer are imported inside their function, so a
missing one fails with a message naming it rather than breaking `import hubsae.eval.suite`.

When several of the SAEs are seeds of one run (`seed_<n>` folders of one parent, as
`hubsae train --seeds` writes them), the report adds per metric mean +- sd and a bootstrap CI
over the seeds (`hubsae.eval.seeds.aggregate`) and cross-seed feature matching.
"""

import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor, nn
from tqdm.auto import tqdm

from ..files import atomic_write_text
from ..plots import figure, have_matplotlib, save_png
from ..saes.base import SAE
from .dictionary import THRESHOLDS, dictionary_metrics
from .plots import plot_density_histogram
from .seeds import SEED_DIR, aggregate, cross_seed_matching, flatten_numbers, format_mean_sd

logger = logging.getLogger(__name__)


@dataclass
class SuiteRun:
    """What every step reads. `contexts()` gives a fresh iterator of held-out (T,) token contexts
    (None when no text was given); `options` holds the step settings (see `run_suite`)."""

    model: nn.Module | None
    tokenizer: object
    saes: dict[str, SAE]
    contexts: Callable[[], Iterable[Tensor]] | None
    out_dir: Path
    options: dict = field(default_factory=dict)
    progress: bool = True

    def need_model(self, step: str) -> None:
        if self.model is None or self.contexts is None:
            raise ValueError(f"suite step {step!r} needs a model and held-out text (--model, --data)")


@dataclass(frozen=True)
class Step:
    run: Callable[[SuiteRun], dict[str, dict]]
    needs_model: bool
    help: str


def _png_name(step: str, name: str) -> str:
    return f"{step}_{re.sub(r'[^A-Za-z0-9._-]+', '_', name)}.png"


def run_core(run: SuiteRun) -> dict[str, dict]:
    """`hubsae.eval.lm.evaluate`: reconstruction, sparsity, CE/KL with the SAE spliced in; density PNGs."""
    from .lm import evaluate

    run.need_model("core")
    names = list(run.saes)
    results = evaluate(
        run.model, [run.saes[n] for n in names], run.contexts(),
        batch_size=run.options.get("batch_size", 8), max_contexts=run.options.get("max_contexts", 64),
        special_ids=run.tokenizer.all_special_ids, progress=run.progress,
    )  # fmt: skip
    if have_matplotlib():
        for name, r in zip(names, results, strict=True):
            plot_density_histogram(r.recon.density(), run.out_dir / _png_name("core_density", name), title=name)
    return {name: dict(r.metrics) for name, r in zip(names, results, strict=True)}


def run_dictionary(run: SuiteRun) -> dict[str, dict]:
    """`hubsae.eval.dictionary.dictionary_metrics` per SAE; unique features against every other SAE of
    the same width d; one PNG with the unique-feature curves and composition beside its control."""
    decoders = {name: sae.W_dec.detach().float() for name, sae in run.saes.items()}
    out = {}
    seed = run.options.get("seed", 0)
    for i, (name, W) in enumerate(tqdm(decoders.items(), desc="dictionary", disable=not run.progress)):
        others = {o: V for o, V in decoders.items() if o != name and V.shape[1] == W.shape[1]}
        out[name] = dictionary_metrics(  # each SAE its own random control, so controls vary over seeds too
            W, others, seed=seed + 2 * i,
            composition_steps=run.options.get("composition_steps", 1500), progress=run.progress,
        )  # fmt: skip
    if have_matplotlib():
        plot_dictionary(out, run.out_dir / "dictionary.png")
    return out


def run_absorption(run: SuiteRun) -> dict[str, dict]:
    """Feature absorption (SAEBench's first-letter task, `hubsae.eval.absorption`); a PNG per SAE."""
    absorption_module = _optional("absorption", "hubsae.eval.absorption")
    run.need_model("absorption")
    fields = {"max_words": run.options.get("absorption_words"), **run.options.get("absorption_config", {})}
    config = absorption_module.AbsorptionConfig(**fields)
    words: dict[str, tuple[Tensor, Tensor]] = {}  # per hookpoint: the LLM's side is the same for every SAE
    out = {}
    for name, sae in tqdm(run.saes.items(), desc="absorption", disable=not run.progress):
        hookpoint = _hookpoint("absorption", name, sae)
        if hookpoint not in words:
            words[hookpoint] = absorption_module.word_activations(run.model, run.tokenizer, hookpoint, config)
        result = absorption_module.absorption_from_activations(*words[hookpoint], sae, config)
        result.settings.update(hookpoint=hookpoint, num_words=len(words[hookpoint][1]))
        if have_matplotlib():
            absorption_module.plot_absorption(result, run.out_dir / _png_name("absorption", name), title=name)
        out[name] = result.to_dict()
    return out


def run_probing(run: SuiteRun) -> dict[str, dict]:
    """Sparse probing (`hubsae.eval.probing`) on the offline labelled datasets ("code": a source
    snippet's language, "fortunes": a fortune's category); per SAE a PNG of accuracy against k."""
    probing_module = _optional("probing", "hubsae.eval.probing")
    from ..data import labelled

    run.need_model("probing")
    per_class, seed = run.options.get("probing_per_class", 100), run.options.get("seed", 0)
    loaders = {"code": labelled.code_snippets, "fortunes": labelled.fortunes}
    names = run.options.get("probing_datasets", tuple(loaders))
    unknown = [n for n in names if n not in loaders]
    if unknown:
        raise ValueError(f"unknown probing dataset(s) {unknown}; known: {', '.join(loaders)}")
    data = {n: loaders[n](per_class=per_class, seed=seed) for n in names}
    fields = {"batch_size": run.options.get("batch_size", 8), "seed": seed, **run.options.get("probing_config", {})}
    config = probing_module.ProbingConfig(**fields)
    acts: dict[tuple[str, str], list[Tensor]] = {}  # per (hookpoint, dataset), shared by the SAEs
    out = {}
    for name, sae in tqdm(run.saes.items(), desc="probing", disable=not run.progress):
        hookpoint, results = _hookpoint("probing", name, sae), {}
        for d, texts in data.items():
            if (hookpoint, d) not in acts:
                acts[hookpoint, d] = probing_module.text_activations(
                    run.model, run.tokenizer, hookpoint, texts.texts, config
                )
            results[d] = probing_module.sparse_probing_from_activations(
                acts[hookpoint, d], sae, texts, config, hookpoint
            )
        if have_matplotlib():
            probing_module.plot_probing(results, run.out_dir / _png_name("probing", name), title=name)
        out[name] = {d: r.to_dict() for d, r in results.items()}
    return out


def run_autointerp(run: SuiteRun) -> dict[str, dict]:
    """Explanations, detection and fuzzing with the shuffled control (`hubsae.eval.autointerp`); each
    SAE's full result in `autointerp_<name>/` (autointerp.json + PNG), its summary in the report."""
    autointerp_module = _optional("autointerp", "hubsae.eval.autointerp")
    from .autointerp_result import write_autointerp

    run.need_model("autointerp")
    explainer = run.options.get("explainer")  # a ChatBackend; None: the embedded SmolLM2-Instruct
    config = autointerp_module.AutointerpConfig(**run.options.get("autointerp_config", {}))
    out = {}
    for name, sae in tqdm(run.saes.items(), desc="autointerp", disable=not run.progress):
        result = autointerp_module.autointerp(
            run.model, run.tokenizer, sae, run.contexts(), explainer, config=config,
            n_latents=run.options.get("autointerp_latents", 20), batch_size=run.options.get("batch_size", 8),
            max_contexts=run.options.get("max_contexts", 64), progress=run.progress,
        )  # fmt: skip
        write_autointerp(result, run.out_dir / _png_name("autointerp", name).removesuffix(".png"))
        out[name] = {"explainer": result.explainer, "scorer": result.scorer, **result.summary()}
    return out


def _hookpoint(step: str, name: str, sae: SAE) -> str:
    if sae.config.hookpoint is None:
        raise ValueError(f"suite step {step!r}: SAE {name!r} has no config.hookpoint (the module it reads)")
    return sae.config.hookpoint


def _optional(step: str, module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"suite step {step!r} needs {module}, which could not be imported: {err}") from err


STEPS: dict[str, Step] = {
    "core": Step(run_core, True, "FVU, L0, dead latents, CE loss recovered, KL (hubsae.eval.evaluate)"),
    "dictionary": Step(run_dictionary, False, "composition, unique features, MeanCosSim, with random controls"),
    "absorption": Step(run_absorption, True, "SAEBench feature absorption (first-letter task)"),
    "probing": Step(run_probing, True, "sparse probing: top-k-latent vs full-activation probes, accuracy per k"),
    "autointerp": Step(run_autointerp, True, "explanations, detection and fuzzing scores, shuffled control"),
}


def parse_suite(text: str | Sequence[str]) -> list[str]:
    """Step names from "core,dictionary" (or a list), in order, duplicates dropped; unknown -> ValueError."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    unknown = [n for n in names if n not in STEPS]
    if unknown or not names:
        raise ValueError(f"unknown suite step(s) {unknown or names!r}; known: {', '.join(STEPS)}")
    return list(dict.fromkeys(names))


def seed_groups(names: Iterable[str]) -> dict[str, list[str]]:
    """{run: [SAE names]} for SAE paths with a `seed_<n>` component, grouped by what comes before it
    and after it (`run/seed_0/model.layers.6` and `run/seed_1/model.layers.6` are seeds of `run`
    at `model.layers.6`); only groups of two or more."""
    groups: dict[str, list[str]] = {}
    for name in names:
        parts = Path(name).parts
        hits = [i for i, p in enumerate(parts) if SEED_DIR.fullmatch(p)]
        if hits:
            i = hits[-1]
            key = str(Path(*parts[:i], "seed_*", *parts[i + 1 :]))
            groups.setdefault(key, []).append(name)
    return {k: v for k, v in groups.items() if len(v) > 1}


def summarize_seeds(results: Mapping[str, Mapping[str, dict]], saes: Mapping[str, SAE]) -> dict[str, dict]:
    """Per seed group: members, mean/sd/CI of every metric of every step, cross-seed matching."""
    out = {}
    for group, members in seed_groups(saes).items():
        per_seed = [{step: results[step][m] for step in results if m in results[step]} for m in members]
        matching = cross_seed_matching({m: saes[m].W_dec.detach().float() for m in members})
        out[group] = {"members": members, "metrics": aggregate(per_seed), "matching": matching}
    return out


def run_suite(
    steps: Sequence[str],
    saes: Mapping[str, SAE],
    out_dir: str | os.PathLike,
    *,
    model: nn.Module | None = None,
    tokenizer=None,
    contexts: Callable[[], Iterable[Tensor]] | None = None,
    options: dict | None = None,
    settings: dict | None = None,
    progress: bool = True,
) -> Path:
    """Run the named steps on the SAEs (by name) and write `eval.json` and `eval.md` (plus each step's
    PNGs) into `out_dir`; returns the JSON's path. `options`: batch_size, max_contexts, seed,
    composition_steps, absorption_words, absorption_config, probing_config and autointerp_config (dicts of
    AbsorptionConfig / ProbingConfig / AutointerpConfig fields), probing_datasets ("code", "fortunes"),
    probing_per_class, autointerp_latents, explainer (a ChatBackend; default the embedded SmolLM2-Instruct).
    Absorption and probing run the LLM once per hookpoint and share its activations among the SAEs."""
    steps = parse_suite(steps)
    if not saes:
        raise ValueError("run_suite needs at least one SAE")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = SuiteRun(model, tokenizer, dict(saes), contexts, out, dict(options or {}), progress)
    results = {}
    for name in tqdm(steps, desc="suite", disable=not progress):
        logger.info("suite step %s: %s", name, STEPS[name].help)
        results[name] = STEPS[name].run(run)
    doc = {"settings": {**(settings or {}), "suite": steps}, "saes": list(saes), "results": results}
    doc["seeds"] = summarize_seeds(results, saes)
    path = atomic_write_text(out / "eval.json", json.dumps(doc, indent=2, default=_json_default))
    atomic_write_text(out / "eval.md", suite_markdown(doc))
    if not have_matplotlib():
        logger.warning("matplotlib is not installed: no PNG plots (pip install 'hubsae[plots]')")
    return path


def _json_default(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def _cell(value) -> str:
    return "" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))


def _table_keys(per_sae: Mapping[str, dict]) -> list[str]:
    keys = dict.fromkeys(k for m in per_sae.values() for k in flatten_numbers(m))
    return [k for k in keys if "curve" not in k and not re.search(r"(^|/)(letters|settings|per_class)/", k)]


def suite_markdown(doc: Mapping) -> str:
    """eval.md: per step a table (metric rows, one column per SAE), then per seed group mean +- sd
    [95% bootstrap CI] of the metrics every seed has, and the cross-seed matching."""
    lines = [f"# hubsae eval: {', '.join(doc['settings']['suite'])}", ""]
    for step, per_sae in doc["results"].items():
        names = list(per_sae)
        flat = {n: flatten_numbers(per_sae[n]) for n in names}
        lines += [f"## {step}", "", "| metric | " + " | ".join(f"`{n}`" for n in names) + " |"]
        lines.append("|---|" + "---|" * len(names))
        for key in _table_keys(per_sae):
            lines.append(f"| {key} | " + " | ".join(_cell(flat[n].get(key)) for n in names) + " |")
        lines.append("")
    for group, summary in doc["seeds"].items():
        n = len(summary["members"])
        lines += [f"## seeds of `{group}` ({n} seeds: mean +- sd [95% bootstrap CI])", ""]
        lines += ["| metric | value |", "|---|---|"]
        for key, stats in summary["metrics"].items():
            if stats["n"] == n and not re.search(r"curve|/(letters|settings|per_class)/", key):
                lines.append(f"| {key} | {format_mean_sd(stats)} |")
        match = summary["matching"]
        lines += ["", f"Cross-seed matching ({match['method']}, cosine >= {match['threshold']}): "]
        lines.append(
            f"matched fraction {format_mean_sd(match['summary']['matched'])} over {len(match['pairs'])} pairs."
        )
        lines.append("")
    return "\n".join(lines)


def plot_dictionary(results: Mapping[str, dict], path: str | os.PathLike) -> Path:
    """Left: unique-feature fraction vs threshold per SAE pair, dashed the random control; right:
    composition (meta-SAE EV) and MeanCosSim per SAE beside random rows of the same shape."""
    fig = figure(10, 3.8)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, m in results.items():
        for other, u in m.get("unique_features", {}).items():
            line = left.plot(THRESHOLDS, [u["curve"][t] for t in THRESHOLDS], label=f"{name} vs {other}")[0]
            left.plot(THRESHOLDS, [u["random_curve"][t] for t in THRESHOLDS], "--", color=line.get_color(), lw=0.8)
    left.set_xlabel("cosine threshold")
    left.set_ylabel("unique fraction (max cos < threshold)")
    left.set_title("unique features (dashed: random rows)", fontsize=9)
    if left.lines:
        left.legend(fontsize=6)
    names = list(results)
    xs = range(len(names))
    for offset, key, label in ((-0.3, "composition", "composition"), (0.1, "mean_cos_sim", "MeanCosSim")):
        right.bar([x + offset for x in xs], [results[n][key] for n in names], 0.2, label=label)
        right.bar([x + offset + 0.2 for x in xs], [results[n][f"{key}_random"] for n in names], 0.2,
                  label=f"{label} (random)", alpha=0.5)  # fmt: skip
    right.set_xticks(list(xs), names, rotation=20, fontsize=6)
    right.set_title("composition (meta-SAE EV) and MeanCosSim", fontsize=9)
    right.legend(fontsize=6)
    return save_png(fig, path)
