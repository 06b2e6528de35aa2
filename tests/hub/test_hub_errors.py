"""One message per cause for what the Hub does not give, whichever reader asked (`files.hub_errors`)."""

import pytest

import hubsae
from hubsae import AutoSAE
from hubsae.formats.files import open_folder
from hubsae.saes.loading import resolve_file


@pytest.fixture
def pushed(hub):
    sae = hubsae.TopKSAE(hubsae.TopKSAEConfig(d_in=8, d_sae=16, k=2, hookpoint="model.layers.0"))
    hubsae.push_to_hub(sae, "tester/errors")
    return "tester/errors"


def test_missing_repo_revision_subfolder_and_file_are_named(pushed):
    with pytest.raises(FileNotFoundError, match="tester/absent is neither a local folder nor a Hub repo"):
        AutoSAE.from_pretrained("tester/absent")
    with pytest.raises(FileNotFoundError, match=r"tester/errors has no revision 'nope' \(branch, tag or commit\)"):
        open_folder(pushed, subfolder="model.layers.0", revision="nope")
    with pytest.raises(FileNotFoundError, match="tester/errors has no subfolder 'model.layers.9' at revision 'main'"):
        open_folder(pushed, subfolder="model.layers.9")
    with pytest.raises(FileNotFoundError, match="has no file missing.json in subfolder 'model.layers.0'"):
        resolve_file(pushed, "missing.json", subfolder="model.layers.0")
    assert AutoSAE.from_pretrained(pushed, subfolder="model.layers.0").config.k == 2


def test_offline_and_not_cached_reads_the_same_everywhere(pushed, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(
        FileNotFoundError,
        match="file config.json in subfolder 'model.layers.0' of tester/errors is not in the local cache",
    ):
        resolve_file(pushed, "config.json", subfolder="model.layers.0")
