"""Evaluate SAEs and look at their features: metrics, LM loss with the SAE spliced in, the
benchmark suite (absorption, sparse probing, autointerp, decoder geometry, seeds), the browser.

The absorption and autointerp entry points are `hubsae.eval.absorption.absorption` and
`hubsae.eval.autointerp.autointerp` (not re-exported here, so the modules keep their names)."""

from .absorption import AbsorptionConfig, AbsorptionResult, plot_absorption
from .attribution import attribute
from .autointerp import AutointerpConfig, collect_contexts, run_autointerp
from .autointerp_backends import ChatBackend, ChatBackendError, OpenAIChat, TransformersChat
from .autointerp_result import AutointerpResult, plot_autointerp, write_autointerp
from .browser import build_browser_data, render_html, write_browser_files
from .concepts import ConceptFeature, describe_candidates, rank_concept_features
from .dictionary import (
    composition_rate,
    dictionary_metrics,
    mean_cos_sim,
    random_unit_rows,
    unique_feature_curve,
    unique_feature_fraction,
)
from .examples import ActivationHistogram, TopActivations
from .lm import SAEEvaluation, evaluate
from .metrics import (
    ReconstructionMetrics,
    decoder_max_cosine,
    decoder_nearest_neighbours,
    density_histogram,
    fraction_recovered,
    kl_score,
    token_cross_entropy,
    token_kl,
)
from .plots import plot_density_histogram, plot_training_curves, read_history
from .probes import LogisticProbe, fit_k_sparse_probe, fit_probe
from .probing import ProbingConfig, ProbingResult, plot_probing, sparse_probing
from .report import browser_data, metrics_table, numeric_metrics, text_contexts, write_browser, write_report
from .seeds import aggregate, bootstrap_ci, cross_seed_matching, matched_fraction
from .stats import LogitEffects, logit_effects, unembedding
from .steering import (
    SteeringCurve,
    SteeringPoint,
    describe_point,
    feature_scorer,
    pick_strength,
    plot_steering_curves,
    probe_scorer,
    steering_sweep,
    write_sweep,
)
from .suite import STEPS, run_suite

__all__ = [
    "AbsorptionConfig",
    "AbsorptionResult",
    "plot_absorption",
    "AutointerpConfig",
    "AutointerpResult",
    "ChatBackend",
    "ChatBackendError",
    "OpenAIChat",
    "TransformersChat",
    "collect_contexts",
    "plot_autointerp",
    "run_autointerp",
    "write_autointerp",
    "composition_rate",
    "dictionary_metrics",
    "mean_cos_sim",
    "random_unit_rows",
    "unique_feature_curve",
    "unique_feature_fraction",
    "LogisticProbe",
    "fit_k_sparse_probe",
    "fit_probe",
    "ProbingConfig",
    "ProbingResult",
    "plot_probing",
    "sparse_probing",
    "aggregate",
    "bootstrap_ci",
    "cross_seed_matching",
    "matched_fraction",
    "STEPS",
    "run_suite",
    "attribute",
    "ConceptFeature",
    "describe_candidates",
    "rank_concept_features",
    "SteeringCurve",
    "SteeringPoint",
    "describe_point",
    "feature_scorer",
    "pick_strength",
    "plot_steering_curves",
    "probe_scorer",
    "steering_sweep",
    "write_sweep",
    "browser_data",
    "metrics_table",
    "numeric_metrics",
    "text_contexts",
    "write_browser",
    "write_report",
    "plot_density_histogram",
    "plot_training_curves",
    "read_history",
    "SAEEvaluation",
    "evaluate",
    "LogitEffects",
    "build_browser_data",
    "render_html",
    "write_browser_files",
    "logit_effects",
    "unembedding",
    "decoder_nearest_neighbours",
    "ActivationHistogram",
    "TopActivations",
    "ReconstructionMetrics",
    "decoder_max_cosine",
    "density_histogram",
    "fraction_recovered",
    "kl_score",
    "token_cross_entropy",
    "token_kl",
]
