"""What autointerp returns: per-latent explanation and scores, the shuffled control, JSON, Neuronpedia fields, PNG.

In `features.json` each explained latent gets Neuronpedia's explanation record (their Prisma
`Explanation` / `ExplanationScore` models): `explanations: [{description, typeName,
explanationModelName, scores: [{explanationScoreTypeName, explanationScoreModelName, value,
jsonDetails}]}]`, `jsonDetails` a JSON string as there. Ours holds the confusion counts, the
unreadable answers and the shuffled control's score.
"""

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..files import atomic_write_text
from ..plots import figure, have_matplotlib, save_png

SCORERS = ("detection", "fuzzing")
TYPE_NAME = "hubsae_autointerp"  # Neuronpedia typeName: how the explanation was made
SCORE_TYPE_NAMES = {"detection": "hubsae_detection", "fuzzing": "hubsae_fuzz"}


@dataclass
class ScoreResult:
    """One scorer on one latent: balanced accuracy (TPR + TNR) / 2 over the answers it could read.

    `score` is nan when no activating or no non-activating context got a readable answer.
    `n_unparsed` contexts got an answer that could not be read (they are not in the counts);
    `unparsed_answers` keeps the first few raw replies."""

    score: float
    true_positives: int = 0
    false_negatives: int = 0
    true_negatives: int = 0
    false_positives: int = 0
    n_unparsed: int = 0
    unparsed_answers: list[str] = field(default_factory=list)

    @classmethod
    def from_counts(cls, tp: int, fn: int, tn: int, fp: int, n_unparsed: int, unparsed: list[str]) -> "ScoreResult":
        pos, neg = tp + fn, tn + fp
        score = (tp / pos + tn / neg) / 2 if pos and neg else math.nan
        return cls(score, tp, fn, tn, fp, n_unparsed, unparsed)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["score"] = None if math.isnan(self.score) else self.score
        return d


@dataclass
class LatentInterpretation:
    """One latent: its explanation, its scores, and the scores of another latent's explanation on its contexts."""

    latent: int
    explanation: str
    raw_explanation: str
    scores: dict[str, ScoreResult]
    shuffled_from: int | None = None
    shuffled_scores: dict[str, ScoreResult] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "latent": self.latent,
            "explanation": self.explanation,
            "raw_explanation": self.raw_explanation,
            "scores": {k: v.to_dict() for k, v in self.scores.items()},
            "shuffled_from": self.shuffled_from,
            "shuffled_scores": {k: v.to_dict() for k, v in self.shuffled_scores.items()},
        }


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else None


@dataclass
class AutointerpResult:
    """Every explained latent, the models used and the settings; `summary()` is real vs shuffled."""

    latents: list[LatentInterpretation]
    explainer: str
    scorer: str
    config: dict

    def summary(self) -> dict:
        """Mean score per scorer over latents with a score, for the real and the shuffled explanations,
        the number of latents each mean is over, and the unreadable answers in total."""
        out: dict = {"n_latents": len(self.latents)}
        for name in SCORERS:
            real = [li.scores[name].score for li in self.latents if name in li.scores]
            shuffled = [li.shuffled_scores[name].score for li in self.latents if name in li.shuffled_scores]
            out[name] = _mean(real)
            out[f"{name}_shuffled"] = _mean(shuffled)
            out[f"{name}_n_scored"] = sum(not math.isnan(v) for v in real)
            out[f"{name}_unparsed"] = sum(
                s.n_unparsed for li in self.latents for s in (li.scores.get(name), li.shuffled_scores.get(name)) if s
            )
        out["empty_explanations"] = sum(not li.explanation for li in self.latents)
        return out

    def to_dict(self) -> dict:
        return {
            "explainer": self.explainer,
            "scorer": self.scorer,
            "config": dict(self.config),
            "summary": self.summary(),
            "definitions": {
                "detection": "balanced accuracy of 'is the latent active in this context?' over held-out activating "
                "and non-activating contexts (arXiv 2410.13928 Sec. 3)",
                "fuzzing": "balanced accuracy of 'are the marked tokens the ones it fires on?' over correctly marked "
                "activating contexts and randomly marked non-activating ones (arXiv 2410.13928 Sec. 3)",
                "shuffled": "the same scorer on the same contexts with another latent's explanation (control)",
            },
            "latents": [li.to_dict() for li in self.latents],
        }

    def neuronpedia_explanations(self) -> dict[int, list[dict]]:
        """{latent: [Neuronpedia explanation record]} for `features.json` (see the module docstring)."""
        out = {}
        for li in self.latents:
            scores = []
            for name, s in li.scores.items():
                control = li.shuffled_scores.get(name)
                details = {**s.to_dict(), "shuffled_from": li.shuffled_from}
                details["shuffled_score"] = control.to_dict()["score"] if control else None
                scores.append(
                    {
                        "explanationScoreTypeName": SCORE_TYPE_NAMES[name],
                        "explanationScoreModelName": self.scorer,
                        "value": details["score"],
                        "jsonDetails": json.dumps(details, ensure_ascii=False),
                    }
                )
            record = {"description": li.explanation, "typeName": TYPE_NAME, "explanationModelName": self.explainer}
            out[li.latent] = [{**record, "scores": scores}]
        return out


def plot_autointerp(result: AutointerpResult, path: str | os.PathLike) -> Path:
    """Per scorer, each latent's real score beside its shuffled-control score, and the means."""
    fig = figure(4 + 2 * len(SCORERS), 3.6)
    for k, name in enumerate(SCORERS):
        ax = fig.add_subplot(1, len(SCORERS), k + 1)
        pairs = [
            (li.scores[name].score, li.shuffled_scores[name].score)
            for li in result.latents
            if name in li.scores and name in li.shuffled_scores
        ]
        for real, shuffled in pairs:
            ax.plot([0, 1], [real, shuffled], color="#adb5bd", linewidth=0.8, marker="o", markersize=3)
        means = [_mean([p[0] for p in pairs]), _mean([p[1] for p in pairs])]
        ax.bar([0, 1], [m if m is not None else 0 for m in means], width=0.5, color=["#4c6ef5", "#fa5252"], alpha=0.4)
        ax.axhline(0.5, color="#868e96", linestyle="--", linewidth=0.8)
        ax.set_xticks([0, 1], ["real", "shuffled"])
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{name} ({len(pairs)} latents)")
        ax.set_ylabel("balanced accuracy")
    fig.suptitle(f"autointerp: {result.explainer}", fontsize=9)
    return save_png(fig, path)


def write_autointerp(result: AutointerpResult, out_dir: str | os.PathLike) -> Path:
    """`autointerp.json` (`result.to_dict()`) and, with matplotlib, `autointerp.png`; returns the JSON's path."""
    out = Path(out_dir)
    path = atomic_write_text(out / "autointerp.json", json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    if have_matplotlib():
        plot_autointerp(result, out / "autointerp.png")
    return path
