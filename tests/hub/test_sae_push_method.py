"""`sae.push_to_hub` does what `hubsae.push_to_hub` does (the inherited transformers method would
skip the model card and the index)."""

import pytest
import torch
from huggingface_hub import HfApi, ModelCard

import hubsae
from hubsae import AutoSAE, list_saes


def test_sae_push_to_hub_writes_the_index_and_the_card(hub):
    sae = hubsae.TopKSAE(hubsae.TopKSAEConfig(d_in=8, d_sae=16, k=2, hookpoint="model.layers.3"))
    sae.push_to_hub("tester/method", metrics={"model.layers.3": {"fvu": 0.25}})
    assert list_saes("tester/method")["model.layers.3"]["metrics"]["fvu"] == 0.25
    files = set(HfApi().list_repo_files("tester/method"))
    assert {"README.md", "hubsae_index.json", "model.layers.3/config.json"} <= files
    assert "hubsae" in ModelCard.load("tester/method").data.tags
    x = torch.randn(3, 8)
    again = AutoSAE.from_pretrained("tester/method", subfolder="model.layers.3")
    torch.testing.assert_close(again.encode(x), sae.encode(x))
    assert len([p for m, p in hub.state.requests if m == "POST" and "/commit/" in p]) == 1


def test_extra_files_and_a_card_section_go_in_the_same_commit(hub, tmp_path):
    sae = hubsae.TopKSAE(hubsae.TopKSAEConfig(d_in=8, d_sae=16, k=2, hookpoint="model.layers.1"))
    (tmp_path / "notes.json").write_text('{"a": 1}')
    hubsae.push_to_hub(
        sae, "tester/extra", extra_files={"notes.json": tmp_path / "notes.json"}, card_section="## Extra\nhi"
    )
    assert "notes.json" in set(HfApi().list_repo_files("tester/extra"))
    assert "## Extra\nhi" in ModelCard.load("tester/extra").text
    assert len([p for m, p in hub.state.requests if m == "POST" and "/commit/" in p]) == 1
    with pytest.raises(ValueError, match="would overwrite an SAE subfolder"):
        hubsae.push_to_hub(sae, "tester/extra", extra_files={"model.layers.1/x": tmp_path / "notes.json"})
