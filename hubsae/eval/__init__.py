"""Evaluate SAEs and look at their features: metrics, LM loss with the SAE spliced in, the browser."""

from .attribution import attribute
from .browser import build_browser_data, render_html, write_browser_files
from .concepts import ConceptFeature, describe_candidates, rank_concept_features
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
from .report import browser_data, metrics_table, numeric_metrics, text_contexts, write_browser, write_report
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

__all__ = [
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
