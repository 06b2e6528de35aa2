"""`hub` fixture: a local Hub-compatible server, with huggingface_hub pointed at it for one test.

The root conftest sets HF_HUB_OFFLINE=1 before anything imports huggingface_hub, and the endpoint
is frozen at import (`huggingface_hub.constants.ENDPOINT`). The constants the client reads on each call are patched here
(endpoint, URL template, offline, Xet, cache), plus transformers' cached HfApi, so the real
client code runs over HTTP against 127.0.0.1 and every test gets a fresh server and cache.
"""

import huggingface_hub.constants as hf_constants
import pytest
from fake_hub import FakeHub  # tests/hub is on sys.path (pytest prepend import mode)
from huggingface_hub.utils import close_session
from transformers.utils import hub as transformers_hub

TOKEN = "hf_test_token"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    server = FakeHub()
    monkeypatch.setattr(hf_constants, "ENDPOINT", server.endpoint)
    monkeypatch.setattr(
        hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_XET", True)  # the fake speaks LFS, not Xet
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(transformers_hub, "_hf_api", None)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    close_session()  # the next request builds a client that sees NO_PROXY; no pooled connections survive
    try:
        yield server
    finally:
        close_session()
        server.close()
