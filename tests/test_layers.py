"""The import layers of hubsae hold (the import-linter contract in pyproject.toml)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_layering_contract_is_kept():
    pytest.importorskip("importlinter", reason="import-linter is in the dev extra")
    result = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def _modules_after(code: str) -> set[str]:
    script = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return set(result.stdout.split())


def test_import_hubsae_is_cheap():
    loaded = _modules_after("import hubsae")
    assert not loaded & {"torch", "transformers", "accelerate", "peft", "matplotlib"}


def test_public_names_load_on_first_use():
    loaded = _modules_after("import hubsae\nhubsae.steer\nhubsae.TopKSAE")
    assert {"hubsae.hooks.interventions", "hubsae.saes.topk"} <= loaded
    assert not loaded & {"peft", "matplotlib", "hubsae.train.trainer", "hubsae.adapt"}


def test_every_public_name_resolves():
    import hubsae

    for name in hubsae.__all__:
        assert getattr(hubsae, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = hubsae.nope
