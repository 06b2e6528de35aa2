import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "data"))
import tinylm  # noqa: E402


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory):
    """(model, tokenizer, model folder, corpus folder) of a tiny random Llama."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, corpus = tinylm.build(tmp_path_factory.mktemp("tiny"))
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    return model, AutoTokenizer.from_pretrained(model_dir), model_dir, corpus


@pytest.fixture
def tiny_config(tiny_lm, tmp_path):
    """A factory of TrainConfigs on the tiny model: small contexts, blocks and batches."""
    from hubsae.train import TrainConfig

    _, _, model_dir, corpus = tiny_lm

    def make(**overrides):
        fields = dict(
            model=str(model_dir),
            dataset=str(corpus),
            hookpoints=["model.layers.1"],
            context_length=16,
            buffer_contexts=16,
            model_batch_size=8,
            batch_size=64,
            max_tokens=64 * 40,
            sae={"k": 4},
            lr=3e-3,
            log_every=0,
            progress_bar=False,
            output_dir=str(tmp_path / "run"),
        )
        fields.update(overrides)
        return TrainConfig(**fields)

    return make
