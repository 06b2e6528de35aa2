import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import tinylm  # noqa: E402


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory):
    """(model, tokenizer, model folder, corpus folder) of a tiny random Llama."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, corpus = tinylm.build(tmp_path_factory.mktemp("tiny"))
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    return model, AutoTokenizer.from_pretrained(model_dir), model_dir, corpus
