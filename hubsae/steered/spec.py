"""The steering spec: which SAE(s), features, coefficients, positions and scale, as strict JSON.

Loading names the file, key and value of anything wrong: unknown keys, wrong types, non-integer
features, non-finite coefficients, an unknown `positions`.
"""

import json
import math
import numbers
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..files import atomic_write_text
from ..hooks.attach import POSITIONS

SPEC_NAME = "steering.json"
SPEC_FORMAT = "hubsae-steering/1"


def _optional_str(value, name: str) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise TypeError(f"{name} must be a non-empty string or null, got {value!r}")


@dataclass(frozen=True)
class SAERef:
    """Where an SAE is: `repo_id` (+ `subfolder`, `revision`), a local `path` (+ `subfolder`), or only
    `subfolder`, a folder of the repo or directory the spec was loaded from."""

    repo_id: str | None = None
    subfolder: str | None = None
    revision: str | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            _optional_str(getattr(self, f.name), f.name)
        if self.repo_id is not None and self.path is not None:
            raise ValueError(f"give repo_id or path, not both (repo_id={self.repo_id!r}, path={self.path!r})")
        if self.revision is not None and self.repo_id is None:
            raise ValueError(f"revision={self.revision!r} needs a repo_id")
        if self.repo_id is None and self.path is None and self.subfolder is None:
            raise ValueError("an SAE reference needs repo_id, path or subfolder")


@dataclass(frozen=True)
class SteeringEntry:
    """One `steer(model, sae, dict(zip(features, coefficients)), hookpoint=, positions=, relative=)`."""

    sae: SAERef
    features: tuple[int, ...]
    coefficients: tuple[float, ...]
    hookpoint: str | None = None
    positions: str = "generated"
    relative: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.sae, SAERef):
            raise TypeError(f"sae must be an SAERef, got {type(self.sae).__name__}")
        feats, coefs = tuple(self.features), tuple(self.coefficients)
        for i, f in enumerate(feats):
            if isinstance(f, bool) or not isinstance(f, numbers.Integral) or f < 0:
                raise TypeError(f"features[{i}] must be a non-negative integer feature index, got {f!r}")
        if len(set(feats)) != len(feats):
            raise ValueError(f"features repeat an index: {list(feats)}")
        for i, c in enumerate(coefs):
            if isinstance(c, bool) or not isinstance(c, numbers.Real):
                raise TypeError(f"coefficients[{i}] must be a number, got {c!r}")
            if not math.isfinite(c):
                raise ValueError(f"coefficients[{i}] must be finite, got {c!r}")
        if not feats or len(feats) != len(coefs):
            raise ValueError(
                f"need one coefficient per feature, got {len(feats)} features and {len(coefs)} coefficients"
            )
        _optional_str(self.hookpoint, "hookpoint")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {self.positions!r}")
        if not isinstance(self.relative, bool):
            raise TypeError(f"relative must be true or false, got {self.relative!r}")
        object.__setattr__(self, "features", tuple(int(f) for f in feats))
        object.__setattr__(self, "coefficients", tuple(float(c) for c in coefs))

    @property
    def coefficient_map(self) -> dict[int, float]:
        return dict(zip(self.features, self.coefficients, strict=True))


@dataclass(frozen=True)
class SteeringSpec:
    """Steering entries applied together (in order, like nested `steer` blocks), plus what they steer."""

    entries: tuple[SteeringEntry, ...]
    base_model: str | None = None
    description: str | None = None
    format: str = field(default=SPEC_FORMAT, repr=False)

    def __post_init__(self) -> None:
        entries = tuple(self.entries)
        if not entries or not all(isinstance(e, SteeringEntry) for e in entries):
            raise TypeError("entries must be a non-empty list of SteeringEntry")
        _optional_str(self.base_model, "base_model")
        _optional_str(self.description, "description")
        if self.format != SPEC_FORMAT:
            raise ValueError(f"format must be {SPEC_FORMAT!r}, got {self.format!r}")
        object.__setattr__(self, "entries", entries)

    def to_dict(self) -> dict:
        def entry(e: SteeringEntry) -> dict:
            sae = {f.name: getattr(e.sae, f.name) for f in fields(e.sae) if getattr(e.sae, f.name) is not None}
            return {
                "sae": sae,
                "features": list(e.features),
                "coefficients": list(e.coefficients),
                "hookpoint": e.hookpoint,
                "positions": e.positions,
                "relative": e.relative,
            }

        return {
            "format": self.format,
            "base_model": self.base_model,
            "description": self.description,
            "entries": [entry(e) for e in self.entries],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_text(path, self.to_json())

    @classmethod
    def from_json(cls, text: str, source: str = "<string>") -> "SteeringSpec":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source} is not valid JSON: {e}") from e
        return _spec_from_dict(data, source)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SteeringSpec":
        return cls.from_json(Path(path).read_text(encoding="utf-8"), str(path))


def _checked_dict(value, allowed: set[str], required: set[str], where: str) -> dict:
    if not isinstance(value, dict):
        raise TypeError(f"{where} must be a JSON object, got {type(value).__name__}")
    unknown, missing = sorted(set(value) - allowed), sorted(required - set(value))
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    if missing:
        raise ValueError(f"{where} is missing key(s) {missing}")
    return value


def _built(cls, kwargs: dict, where: str):
    """`cls(**kwargs)`, its validation error prefixed by where in the file the value sits."""
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{where}: {e}") from e


def _list(value, where: str) -> list:
    if not isinstance(value, list):
        raise TypeError(f"{where} must be a JSON list, got {value!r}")
    return value


def _spec_from_dict(data, source: str) -> SteeringSpec:
    top = {"format", "base_model", "description", "entries"}
    data = _checked_dict(data, top, {"format", "entries"}, source)
    entries = []
    for i, raw in enumerate(_list(data["entries"], f"{source}: entries")):
        where = f"{source}: entries[{i}]"
        raw = _checked_dict(raw, {f.name for f in fields(SteeringEntry)}, {"sae", "features", "coefficients"}, where)
        sae_raw = _checked_dict(raw["sae"], {f.name for f in fields(SAERef)}, set(), f"{where}.sae")
        kwargs = {**raw, "sae": _built(SAERef, sae_raw, f"{where}.sae")}
        kwargs["features"] = tuple(_list(raw["features"], f"{where}.features"))
        kwargs["coefficients"] = tuple(_list(raw["coefficients"], f"{where}.coefficients"))
        entries.append(_built(SteeringEntry, kwargs, where))
    return _built(SteeringSpec, {**data, "entries": tuple(entries)}, source)
