"""Attach SAEs to Hugging Face models: hookpoint names and interventions."""

from .hookpoints import Hookpoint, resolve_hookpoint, unwrap_peft

__all__ = ["Hookpoint", "resolve_hookpoint", "unwrap_peft"]
