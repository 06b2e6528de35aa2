"""The model card of a hubsae repo: YAML metadata (library_name hubsae, base_model, tags) and a table
with one row per SAE of the repo's index, then how to load them."""

import logging
import math
import re
from collections.abc import Mapping

from huggingface_hub import ModelCard, ModelCardData

from ..llm import is_hub_id
from ..saes.base import SAE

logger = logging.getLogger(__name__)
DEFAULT_TAGS = ["hubsae", "sparse-autoencoder", "interpretability"]


def card_base_model(name: str | None) -> str | None:
    """`name` when it is a Hub id; a local path would be rejected by the Hub as the card's base_model."""
    if name is None or is_hub_id(name):
        return name
    logger.warning("base model %r is not a Hub repo id: the card names no base model (pass --base-model)", name)
    return None


def common_base_model(named: Mapping[str, SAE]) -> str | None:
    bases = {sae.config.base_model_name_or_path for sae in named.values()} - {None}
    return bases.pop() if len(bases) == 1 else None


def _natural(name: str) -> list:
    """Sort key putting model.layers.6 before model.layers.12."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _fmt(value: float | None, scale: float = 1.0, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value * scale:.{digits}g}"


def build_card(
    repo_id: str,
    index: Mapping[str, dict],
    base_model: str | None = None,
    datasets: list[str] | None = None,
    license: str | None = None,
    tags: list[str] | None = None,
    section: str | None = None,
) -> ModelCard:
    """The README: YAML metadata (library_name hubsae), a table with one row per SAE, then `section`."""
    archs = sorted({e["architecture"].removeprefix("hubsae_") for e in index.values()})
    data = ModelCardData(
        library_name="hubsae",
        license=license,
        tags=list(dict.fromkeys([*DEFAULT_TAGS, *archs, *(tags or [])])),
        base_model=base_model,
        datasets=datasets,
    )
    if base_model:
        data.base_model_relation = (
            "adapter"  # SAEs read the base model, they are not a finetune of it (the Hub's default guess)
        )
    rows = [
        "| subfolder | architecture | hookpoint | d_sae | k / L0 | FVU | dead % |",
        "|---|---|---|---|---|---|---|",
    ]
    for sub, e in sorted(index.items(), key=lambda item: _natural(item[0])):
        m = e.get("metrics") or {}
        k_l0 = f"{e['k'] if e.get('k') is not None else '–'} / {_fmt(m.get('l0'))}"
        fvu = m.get("fvu", 1 - m["explained_variance"] if "explained_variance" in m else None)
        rows.append(
            f"| `{sub}` | {e['architecture']} | `{e['hookpoint']}` | {e['d_sae']} | {k_l0} "
            f"| {_fmt(fvu)} | {_fmt(m.get('dead_fraction'), 100)} |"
        )
    first = min(index, key=_natural)
    body = "\n".join(
        [
            f"# {repo_id.split('/')[-1]}",
            "",
            f"{len(index)} sparse autoencoder(s)"
            + (f" for [`{base_model}`](https://huggingface.co/{base_model})" if base_model else "")
            + ", one per subfolder, each a Hugging Face model (config.json + model.safetensors) made with hubsae.",
            "",
            *rows,
            "",
            "## Use",
            "",
            "```python",
            "import hubsae",
            "",
            f'print(hubsae.list_saes("{repo_id}"))  # reads hubsae_index.json only',
            f'sae = hubsae.AutoSAE.from_pretrained("{repo_id}", subfolder="{first}")',
            "features = sae.encode(activations)  # activations read at the SAE's hookpoint",
            "```",
            "",
            *([section] if section else []),
        ]
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


# ---- `hubsae push DIR REPO` -----------------------------------------------------------------
