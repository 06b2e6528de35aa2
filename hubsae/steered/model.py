"""Loading a steered model: the spec's SAEs from where it came from, its `steer` hooks left on the model,
and pushing the SAEs + spec + a model card in one Hub commit."""

import contextlib
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn

from ..auto import AutoSAE
from ..hooks.hookpoints import subfolder_for
from ..hooks.interventions import steer
from ..hub import push_to_hub
from ..llm import is_hub_id
from ..saes.base import SAE
from .spec import SPEC_NAME, SAERef, SteeringSpec

STEERING_ATTR = "hubsae_steering"  # where load_steered leaves the handle on the model
_SHA = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class _Origin:
    """The folder or repo commit a spec was read from: repo-local SAE references resolve there."""

    folder: Path | None = None
    repo_id: str | None = None
    revision: str | None = None


def read_spec(
    spec_or_repo: str | os.PathLike, revision: str | None = None, token: str | bool | None = None
) -> tuple[SteeringSpec, _Origin]:
    """The spec in a JSON file, a folder holding steering.json, or a Hub repo; and where it came from."""
    local = Path(spec_or_repo)
    if local.is_file():
        return SteeringSpec.load(local), _Origin(folder=local.parent)
    if local.is_dir():
        if not (local / SPEC_NAME).is_file():
            raise FileNotFoundError(f"{local} has no {SPEC_NAME}: it is not a steered-model folder")
        return SteeringSpec.load(local / SPEC_NAME), _Origin(folder=local)
    repo = str(spec_or_repo)
    if not is_hub_id(repo):
        raise FileNotFoundError(f"{repo} is neither a spec file, a folder nor a Hub repo id")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        path = Path(hf_hub_download(repo, SPEC_NAME, revision=revision, token=token))
    except EntryNotFoundError as e:
        raise FileNotFoundError(f"{repo} has no {SPEC_NAME}: it was not pushed with hubsae.push_steered") from e
    # the cache stores files under snapshots/<commit>/: the SAEs then come from that same commit
    commit = path.parent.name if _SHA.fullmatch(path.parent.name) else revision
    return SteeringSpec.load(path), _Origin(repo_id=repo, revision=commit)


def load_sae(ref: SAERef, origin: _Origin | None = None, token: str | bool | None = None, **kwargs) -> SAE:
    """The SAE a reference names; repo-local references need the `origin` the spec came from."""
    hub = {"token": token} if token is not None else {}
    if ref.repo_id is not None:
        return AutoSAE.from_pretrained(ref.repo_id, subfolder=ref.subfolder, revision=ref.revision, **hub, **kwargs)
    if ref.path is not None:
        path = Path(ref.path).expanduser()
        if not path.is_absolute():
            if origin is None or origin.folder is None:
                raise ValueError(f"SAE path {ref.path!r} is relative, but the spec did not come from a local folder")
            path = origin.folder / path
        return AutoSAE.from_pretrained(path, subfolder=ref.subfolder, **kwargs)
    if origin is None or (origin.folder is None and origin.repo_id is None):
        raise ValueError(f"SAE subfolder {ref.subfolder!r} has no repo_id or path and the spec has no origin")
    if origin.folder is not None:
        return AutoSAE.from_pretrained(origin.folder, subfolder=ref.subfolder, **kwargs)
    return AutoSAE.from_pretrained(origin.repo_id, subfolder=ref.subfolder, revision=origin.revision, **hub, **kwargs)


def load_spec_saes(spec: SteeringSpec, origin: _Origin | None = None, **kwargs) -> list[SAE]:
    """One SAE per entry (an SAE named twice is loaded once), in eval mode."""
    loaded: dict[SAERef, SAE] = {}
    for entry in spec.entries:
        if entry.sae not in loaded:
            loaded[entry.sae] = load_sae(entry.sae, origin, **kwargs).eval()
    return [loaded[e.sae] for e in spec.entries]


# ---- steering a model -----------------------------------------------------------------------


class Steering:
    """The spec's `steer` hooks, registered on a model until `remove()` (or the end of a `with`)."""

    def __init__(self, model: nn.Module, spec: SteeringSpec, saes: Sequence[SAE]):
        saes = list(saes)
        if len(saes) != len(spec.entries):
            raise ValueError(f"the spec has {len(spec.entries)} entries but {len(saes)} SAEs were given")
        self.model, self.spec, self.saes = model, spec, saes
        self._stack = contextlib.ExitStack()
        with contextlib.ExitStack() as attaching:  # a failing entry removes the hooks already attached
            attaching.callback(self._stack.close)
            for entry, sae in zip(spec.entries, saes, strict=True):
                self._stack.enter_context(
                    steer(
                        model,
                        sae,
                        entry.coefficient_map,
                        hookpoint=entry.hookpoint,
                        positions=entry.positions,
                        relative=entry.relative,
                    )
                )
            attaching.pop_all()

    def remove(self) -> None:
        """Remove the hooks; the model generates as before. Safe to call twice."""
        self._stack.close()
        if getattr(self.model, STEERING_ATTR, None) is self:
            delattr(self.model, STEERING_ATTR)

    def __enter__(self) -> "Steering":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def load_steered(
    base_model: nn.Module | str,
    spec_or_repo: "str | os.PathLike | SteeringSpec",
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    saes: Sequence[SAE] | None = None,
) -> nn.Module:
    """`base_model` (a model, or a name for `AutoModelForCausalLM`) with the spec's steering active.

    The hooks stay until `model.hubsae_steering.remove()`; `generate()` and
    `pipeline("text-generation", model=model, ...)` both run through them.
    """
    if isinstance(base_model, str):
        from ..llm import load_causal_lm

        base_model = load_causal_lm(base_model)[0]
    if getattr(base_model, STEERING_ATTR, None) is not None:
        raise RuntimeError(f"the model is already steered: call model.{STEERING_ATTR}.remove() first")
    if isinstance(spec_or_repo, SteeringSpec):
        spec, origin = spec_or_repo, None
    else:
        spec, origin = read_spec(spec_or_repo, revision=revision, token=token)
    if saes is None:
        saes = load_spec_saes(spec, origin, token=token)
    setattr(base_model, STEERING_ATTR, Steering(base_model, spec, saes))
    return base_model


# ---- pushing --------------------------------------------------------------------------------


def _pushed(spec: SteeringSpec, saes: Sequence[SAE]) -> tuple[SteeringSpec, dict[str, SAE]]:
    """The spec pointing at repo subfolders (named after each SAE's hookpoint) and `{subfolder: sae}`."""
    named: dict[str, SAE] = {}
    entries = []
    for i, (entry, sae) in enumerate(zip(spec.entries, saes, strict=True)):
        sub = next((s for s, other in named.items() if other is sae), None)
        if sub is None:
            hookpoint = sae.config.hookpoint or entry.hookpoint
            if hookpoint is None:
                raise ValueError(f"entries[{i}]: the SAE has no config.hookpoint and the entry no hookpoint")
            sub = subfolder_for(hookpoint)
            sub = sub if sub not in named else f"{sub}-{i}"
            named[sub] = sae
        entries.append(replace(entry, sae=SAERef(subfolder=sub)))
    return SteeringSpec(tuple(entries), spec.base_model, spec.description), named


def _card_section(repo_id: str, spec: SteeringSpec) -> str:
    lines = [
        "## Steered model",
        "",
        f"`{SPEC_NAME}` adds SAE feature directions to the base model's activations while it generates:",
        "",
        "| SAE | hookpoint | features | coefficients | positions | scale |",
        "|---|---|---|---|---|---|",
    ]
    for e in spec.entries:
        scale = "x ||x|| (relative)" if e.relative else "absolute"
        lines.append(
            f"| `{e.sae.subfolder}` | `{e.hookpoint or '(the SAE’s)'}` | {list(e.features)} "
            f"| {list(e.coefficients)} | {e.positions} | {scale} |"
        )
    base = spec.base_model or "BASE_MODEL"
    return "\n".join(
        [
            *lines,
            "",
            "```python",
            "import hubsae",
            "from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline",
            "",
            f'model = AutoModelForCausalLM.from_pretrained("{base}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{base}")',
            f'model = hubsae.load_steered(model, "{repo_id}")  # steering hooks on the model',
            'print(pipeline("text-generation", model=model, tokenizer=tokenizer)("Tell me about your day."))',
            "model.hubsae_steering.remove()  # the plain model again",
            "```",
            "",
            f"From the command line: `hubsae steer --spec {repo_id} --model {base}`.",
            "",
        ]
    )


def push_steered(
    spec: SteeringSpec,
    saes: SAE | Sequence[SAE] | None,
    repo_id: str,
    **push_kwargs,
):
    """Push the SAE(s), `steering.json` and a model card saying how to load it, in one commit.

    `saes`: one SAE per spec entry (or one SAE for all), or None to load them from the spec's
    references. `push_kwargs` go to `hubsae.push_to_hub` (revision, create_pr, private, token, ...).
    """
    if saes is None:
        saes = load_spec_saes(spec, token=push_kwargs.get("token"))
    elif isinstance(saes, SAE):
        saes = [saes] * len(spec.entries)
    if len(saes) != len(spec.entries):
        raise ValueError(f"the spec has {len(spec.entries)} entries but {len(saes)} SAEs were given")
    pushed, named = _pushed(spec, list(saes))
    tags = list(dict.fromkeys([*(push_kwargs.pop("tags", None) or []), "steering"]))
    push_kwargs.setdefault("commit_message", f"Upload a steered model ({len(named)} SAE(s) + {SPEC_NAME}) with hubsae")
    with _spec_file(pushed) as path:
        return push_to_hub(
            named,
            repo_id,
            base_model=push_kwargs.pop("base_model", None) or _hub_base(spec.base_model),
            tags=tags,
            extra_files={SPEC_NAME: path},
            card_section=_card_section(repo_id, pushed),
            **push_kwargs,
        )


def _hub_base(name: str | None) -> str | None:
    return name if name is not None and is_hub_id(name) else None


@contextlib.contextmanager
def _spec_file(spec: SteeringSpec):
    with tempfile.TemporaryDirectory(prefix="hubsae-steered-") as tmp:
        yield spec.save(Path(tmp) / SPEC_NAME)
