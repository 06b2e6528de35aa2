"""`hooks.capture`: the one capture path of training, evaluation and attribution."""

import pytest
import torch
from tiny_models import tiny_llama

from hubsae.hooks.capture import capture


def _hook_count(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_capture_reads_what_output_hidden_states_holds_and_cleans_up():
    model = tiny_llama(seed=0)
    ids = torch.randint(3, 128, (2, 6))
    hidden = model(ids, output_hidden_states=True).hidden_states  # transformers adds hooks of its own here
    before = _hook_count(model)
    out, acts = capture(
        model, ["model.layers.0", "model.layers.1:input", "blocks.1.hook_resid_post"], lambda: model(ids)
    )
    torch.testing.assert_close(acts["model.layers.0"], hidden[1])
    torch.testing.assert_close(acts["model.layers.1:input"], hidden[1])
    torch.testing.assert_close(acts["blocks.1.hook_resid_post"], hidden[2])  # keyed by the caller's name
    torch.testing.assert_close(out.logits, model(ids).logits)
    assert _hook_count(model) == before


def test_stop_when_done_skips_the_rest_and_errors_leave_no_hook():
    model = tiny_llama(seed=0)
    ids = torch.randint(3, 128, (1, 4))
    reached = []
    model(ids)
    model.model.layers[2].register_forward_pre_hook(lambda m, a: reached.append(2))
    before = _hook_count(model)
    result, acts = capture(model, ["model.layers.0"], lambda: model(ids), stop_when_done=True)
    assert result is None and reached == [] and set(acts) == {"model.layers.0"}
    with pytest.raises(RuntimeError, match=r"\['model.layers.1'\] were not reached"):
        capture(model, ["model.layers.1"], lambda: None)  # the callable never runs the model
    with pytest.raises(ZeroDivisionError):
        capture(model, ["model.layers.1"], lambda: 1 / 0)
    with pytest.raises(ValueError, match="duplicate hookpoints"):
        capture(model, ["model.layers.1", "model.layers.1"], lambda: model(ids))
    assert _hook_count(model) == before
