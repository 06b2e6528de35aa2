"""Pushes that meet a stuck server, a malformed remote index, or undefined metrics."""

import json
import threading
import time

import fake_hub
import pytest
from huggingface_hub import HfApi

import hubsae
from hubsae import list_saes, push_to_hub
from hubsae.hub import HUB_INDEX_NAME


def _sae(layer: int = 1) -> hubsae.TopKSAE:
    return hubsae.TopKSAE(hubsae.TopKSAEConfig(d_in=8, d_sae=16, k=2, hookpoint=f"model.layers.{layer}"))


def test_a_server_that_never_answers_the_commit_times_out(hub, monkeypatch):
    release = threading.Event()

    def stuck(self, *args):  # reads the upload, then never answers
        self._body()
        release.wait(30)

    routes = list(fake_hub.ROUTES)
    commit_route = next(i for i, (pattern, _) in enumerate(routes) if "/commit/" in pattern)
    monkeypatch.setattr(fake_hub, "ROUTES", routes)  # the server looks ROUTES up on each request
    answering = routes[commit_route]
    routes[commit_route] = (answering[0], stuck)
    start = time.perf_counter()
    try:
        with pytest.raises(TimeoutError, match=r"did not answer within 2 s; nothing was committed"):
            push_to_hub(_sae(), "tester/stuck", timeout=2)
    finally:
        release.set()
    assert time.perf_counter() - start < 15
    routes[commit_route] = answering
    assert not [f for f in HfApi().list_repo_files("tester/stuck") if f.endswith(".safetensors")]
    push_to_hub(_sae(), "tester/stuck")  # the next push works: the stuck connection was dropped
    assert set(list_saes("tester/stuck")) == {"model.layers.1"}


@pytest.mark.parametrize(
    "index",
    [{"format": "hubsae-index/1", "saes": ["model.layers.1"]}, ["model.layers.1"], {"saes": {"a": "not-an-entry"}}],
)
def test_a_malformed_remote_index_is_refused_not_replaced(hub, index):
    push_to_hub(_sae(1), "tester/index")
    HfApi().upload_file(path_or_fileobj=json.dumps(index).encode(), path_in_repo=HUB_INDEX_NAME, repo_id="tester/index")
    with pytest.raises(ValueError, match=f"{HUB_INDEX_NAME} in tester/index is malformed"):
        push_to_hub(_sae(2), "tester/index")
    remote = json.loads(open(HfApi().hf_hub_download("tester/index", HUB_INDEX_NAME)).read())
    assert remote == index  # untouched


def test_undefined_metrics_are_written_as_json_null(hub):
    push_to_hub(_sae(), "tester/nan", metrics={"model.layers.1": {"fvu": float("nan"), "l0": 2.0}})
    raw = open(HfApi().hf_hub_download("tester/nan", HUB_INDEX_NAME)).read()
    assert "NaN" not in raw
    entry = json.loads(raw)["saes"]["model.layers.1"]
    assert entry["metrics"] == {"fvu": None, "l0": 2.0}
