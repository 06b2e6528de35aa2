"""Push SAEs to a local Hub-compatible server with the real huggingface_hub client and pull them back."""

import json

import pytest
import torch
from huggingface_hub import HfApi, ModelCard

import hubsae
from hubsae import AutoSAE, JumpReLUSAE, JumpReLUSAEConfig, TopKSAE, TopKSAEConfig, list_saes, push_to_hub
from hubsae.hub import HUB_INDEX_NAME

REPO = "tester/tiny-saes"


def _saes() -> dict[str, hubsae.SAE]:
    base = "HuggingFaceTB/SmolLM2-135M-Instruct"
    return {
        "model.layers.1": TopKSAE(
            TopKSAEConfig(d_in=16, d_sae=64, k=4, hookpoint="model.layers.1", base_model_name_or_path=base)
        ),
        "model.layers.2": TopKSAE(
            TopKSAEConfig(d_in=16, d_sae=32, k=2, hookpoint="model.layers.2", base_model_name_or_path=base)
        ),
        "model.layers.2.mlp": JumpReLUSAE(
            JumpReLUSAEConfig(d_in=16, d_sae=48, hookpoint="model.layers.2.mlp", base_model_name_or_path=base)
        ),
    }


def _assert_same(a: hubsae.SAE, b: hubsae.SAE) -> None:
    assert type(a) is type(b)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    x = torch.randn(5, a.config.d_in)
    assert torch.equal(a.encode(x), b.encode(x))


def test_push_three_saes_in_one_commit_and_pull_each(hub):
    saes = _saes()
    metrics = {
        "model.layers.1": {"l0": 4.0, "fvu": 0.25, "dead_fraction": 0.125},
        "model.layers.2.mlp": {"explained_variance": 0.75},
    }
    info = push_to_hub(saes, REPO, metrics=metrics)
    commits = [p for m, p in hub.state.requests if m == "POST" and "/commit/" in p]
    assert len(commits) == 1  # all SAEs, the index and the card in one commit
    files = set(HfApi().list_repo_files(REPO))
    assert {"README.md", HUB_INDEX_NAME} <= files
    for sub in saes:
        assert {f"{sub}/config.json", f"{sub}/model.safetensors"} <= files
    for sub, sae in saes.items():
        _assert_same(sae, AutoSAE.from_pretrained(REPO, subfolder=sub))
        _assert_same(sae, AutoSAE.from_pretrained(REPO, subfolder=sub, revision=info.oid))

    index = list_saes(REPO)
    assert set(index) == set(saes)
    assert index["model.layers.1"]["metrics"] == metrics["model.layers.1"]
    assert index["model.layers.2.mlp"]["architecture"] == "hubsae_jumprelu"
    assert index["model.layers.2"]["k"] == 2 and index["model.layers.2"]["d_sae"] == 32

    card = ModelCard.load(REPO)  # huggingface_hub parses the YAML header
    assert card.data.library_name == "hubsae"
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert {"sparse-autoencoder", "topk", "jumprelu"} <= set(card.data.tags)
    row = next(line for line in card.text.splitlines() if "`model.layers.1`" in line)
    assert "| 4 / 4 |" in row and "| 0.25 |" in row and "| 12.5 |" in row
    assert "| 2 / – | – | – |" in next(line for line in card.text.splitlines() if "`model.layers.2`" in line)
    assert "| – / – | 0.25 | – |" in next(line for line in card.text.splitlines() if "`model.layers.2.mlp`" in line)


def test_revision_branch_and_pr(hub):
    saes = _saes()
    first = push_to_hub({"model.layers.1": saes["model.layers.1"]}, REPO)
    changed = TopKSAE(saes["model.layers.1"].config)  # fresh random weights, same config
    push_to_hub({"model.layers.1": changed}, REPO, revision="v2")
    _assert_same(saes["model.layers.1"], AutoSAE.from_pretrained(REPO, subfolder="model.layers.1"))
    _assert_same(changed, AutoSAE.from_pretrained(REPO, subfolder="model.layers.1", revision="v2"))
    _assert_same(saes["model.layers.1"], AutoSAE.from_pretrained(REPO, subfolder="model.layers.1", revision=first.oid))

    pr = push_to_hub({"model.layers.2": saes["model.layers.2"]}, REPO, create_pr=True)
    assert pr.pr_url and pr.pr_revision == "refs/pr/1"
    assert set(list_saes(REPO)) == {"model.layers.1"}  # main untouched by the PR
    assert set(list_saes(REPO, revision="refs/pr/1")) == {"model.layers.1", "model.layers.2"}  # index extended
    _assert_same(
        saes["model.layers.2"], AutoSAE.from_pretrained(REPO, subfolder="model.layers.2", revision="refs/pr/1")
    )


def test_private_repo_needs_its_token(hub, monkeypatch):
    sae = _saes()["model.layers.1"]
    push_to_hub([sae], REPO, private=True)
    assert HfApi().model_info(REPO).private
    monkeypatch.setenv("HF_TOKEN", "hf_someone_else")
    with pytest.raises(FileNotFoundError, match="neither a local folder nor a Hub repo"):
        AutoSAE.from_pretrained(REPO, subfolder="model.layers.1")


def test_list_of_saes_goes_to_hookpoint_subfolders(hub):
    sae = TopKSAE(TopKSAEConfig(d_in=8, d_sae=16, k=2, hookpoint="model.layers.0:input"))
    push_to_hub([sae], REPO)
    assert list(list_saes(REPO)) == ["model.layers.0.input"]
    _assert_same(sae, AutoSAE.from_pretrained(REPO, subfolder="model.layers.0.input"))


def test_push_refuses_sae_without_hookpoint(hub):
    sae = TopKSAE(TopKSAEConfig(d_in=8, d_sae=16, k=2))
    with pytest.raises(ValueError, match="has no hookpoint"):
        push_to_hub({"a": sae}, REPO)
    with pytest.raises(ValueError, match="has no hookpoint"):
        push_to_hub([sae], REPO)
    assert not [p for m, p in hub.state.requests if m == "POST"]  # refused before any request


def test_missing_repo_subfolder_and_revision_fail_clearly(hub):
    push_to_hub(_saes(), REPO)
    with pytest.raises(FileNotFoundError, match="neither a local folder nor a Hub repo"):
        AutoSAE.from_pretrained("tester/nope", subfolder="model.layers.1")
    with pytest.raises(
        ValueError, match=r"holds several SAEs; pass subfolder= one of \['model.layers.1', 'model.layers.2'"
    ):
        AutoSAE.from_pretrained(REPO)
    with pytest.raises(FileNotFoundError, match="model.layers.9"):
        AutoSAE.from_pretrained(REPO, subfolder="model.layers.9")
    with pytest.raises(FileNotFoundError, match="revision"):
        AutoSAE.from_pretrained(REPO, subfolder="model.layers.1", revision="no-such-branch")
    with pytest.raises(FileNotFoundError, match="neither a local folder nor a Hub repo"):
        list_saes("tester/nope")
    HfApi().create_repo("tester/no-index")
    with pytest.raises(FileNotFoundError, match=f"has no file {HUB_INDEX_NAME}"):
        list_saes("tester/no-index")


def test_index_is_json_with_format(hub):
    push_to_hub(_saes(), REPO)
    path = HfApi().hf_hub_download(REPO, HUB_INDEX_NAME)
    data = json.loads(open(path).read())
    assert data["format"] == "hubsae-index/1"


def test_repushing_a_subfolder_removes_its_stale_files(hub):
    sae = _saes()["model.layers.1"]
    push_to_hub([sae], REPO)
    HfApi().upload_file(path_or_fileobj=b"old shard", path_in_repo="model.layers.1/old.safetensors", repo_id=REPO)
    HfApi().upload_file(path_or_fileobj=b"keep", path_in_repo="notes/keep.txt", repo_id=REPO)
    push_to_hub({"model.layers.1": sae}, REPO)
    files = set(HfApi().list_repo_files(REPO))
    assert "model.layers.1/old.safetensors" not in files
    assert {"notes/keep.txt", "model.layers.1/config.json", "model.layers.1/model.safetensors"} <= files
