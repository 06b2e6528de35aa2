"""Steered models as artefacts: the spec's strict JSON, load_steered against the steer() context
manager (token for token), a push through the local Hub server, and the llama.cpp GGUF export."""

import argparse
import json
import logging
from dataclasses import replace

import gguf
import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from safetensors import safe_open
from tiny_models import tiny_llama_for
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

import hubsae
from hubsae.cli import COMMANDS
from hubsae.cli import steer as steer_cli
from hubsae.llm import smollm2_path
from hubsae.steered import (
    SAERef,
    SteeringEntry,
    SteeringSpec,
    export_gguf,
    export_safetensors,
    load_steered,
    push_steered,
)

IDS = torch.tensor([[5, 17, 33, 9], [44, 8, 90, 3]])
SETTINGS = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=128, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


def topk_sae(hookpoint: str, seed: int = 1) -> hubsae.TopKSAE:
    torch.manual_seed(seed)
    return hubsae.TopKSAE(hubsae.TopKSAEConfig(d_in=32, d_sae=96, k=6, hookpoint=hookpoint)).eval()


def _reference(model, saes, spec):
    with torch.no_grad():
        plain = model.generate(IDS, **SETTINGS)
        with (
            hubsae.steer(model, saes[0], spec.entries[0].coefficient_map, positions=spec.entries[0].positions),
            hubsae.steer(
                model, saes[1], spec.entries[1].coefficient_map, positions="all", relative=spec.entries[1].relative
            ),
        ):
            steered = model.generate(IDS, **SETTINGS)
    assert not torch.equal(plain, steered)  # the steering changes the text, so equality below means something
    return plain, steered


def _spec(ref_a: SAERef, ref_b: SAERef) -> SteeringSpec:
    return SteeringSpec(
        (
            SteeringEntry(ref_a, (3, 5), (4.0, -2.0), positions="generated"),
            SteeringEntry(ref_b, (7,), (1.5,), positions="all", relative=True),
        ),
        base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
    )


def test_local_spec_reproduces_the_context_managers(tmp_path):
    model, saes = tiny_llama(), [topk_sae("model.layers.1"), topk_sae("model.layers.2", seed=2)]
    for i, sae in enumerate(saes):
        sae.save_pretrained(tmp_path / f"sae{i}")
    spec = _spec(SAERef(path="sae0"), SAERef(path=str(tmp_path / "sae1")))  # relative to the spec's folder
    spec.save(tmp_path / "steering.json")
    assert SteeringSpec.load(tmp_path / "steering.json") == spec
    plain, steered = _reference(model, saes, spec)
    model = load_steered(model, tmp_path)
    with torch.no_grad():
        assert torch.equal(model.generate(IDS, **SETTINGS), steered)
        model.hubsae_steering.remove()
        assert torch.equal(model.generate(IDS, **SETTINGS), plain)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(extra=1), "unknown key(s) ['extra']"),
        (lambda d: d["entries"][0].update(colour="red"), "entries[0] has unknown key(s) ['colour']"),
        (lambda d: d["entries"][0]["sae"].update(repo="x"), "entries[0].sae has unknown key(s) ['repo']"),
        (lambda d: d["entries"][0].update(features=[3, 1.5]), "entries[0]: features[1]"),
        (lambda d: d["entries"][0].update(features=[True, 5]), "features[0]"),
        (lambda d: d["entries"][0].update(coefficients=[float("nan"), 1.0]), "coefficients[0] must be finite"),
        (lambda d: d["entries"][0].update(coefficients=["4", 1.0]), "coefficients[0] must be a number"),
        (lambda d: d["entries"][0].update(positions="middle"), "'middle'"),
        (lambda d: d["entries"][0].update(relative="yes"), "relative must be true or false"),
        (lambda d: d["entries"][0].update(coefficients=[1.0]), "one coefficient per feature"),
        (lambda d: d.update(format="other/2"), "format must be"),
    ],
)
def test_spec_json_is_strict(tmp_path, edit, message):
    data = _spec(SAERef(path="a"), SAERef(repo_id="org/saes", subfolder="model.layers.2")).to_dict()
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises((TypeError, ValueError)) as err:
        SteeringSpec.load(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_push_steered_in_one_commit_and_load_back(hub):
    model, saes = tiny_llama(), [topk_sae("model.layers.1"), topk_sae("model.layers.2", seed=2)]
    spec = _spec(SAERef(path="/nowhere/a"), SAERef(path="/nowhere/b"))
    plain, steered = _reference(model, saes, spec)
    push_steered(spec, saes, "tester/steered")
    assert len([p for m, p in hub.state.requests if m == "POST" and "/commit/" in p]) == 1
    files = set(HfApi().list_repo_files("tester/steered"))
    assert {"steering.json", "model.layers.1/model.safetensors", "model.layers.2/config.json"} <= files
    card = ModelCard.load("tester/steered")
    assert card.data.library_name == "hubsae" and "steering" in card.data.tags
    assert 'hubsae.load_steered(model, "tester/steered")' in card.text
    model = load_steered(model, "tester/steered")
    with torch.no_grad():
        assert torch.equal(model.generate(IDS, **SETTINGS), steered)
    model.hubsae_steering.remove()


def test_gguf_control_vector_reads_back(tmp_path):
    sae_a, sae_b = topk_sae("model.layers.2"), topk_sae("model.layers.2:input", seed=2)
    spec = SteeringSpec(
        (SteeringEntry(SAERef(path="a"), (3, 5), (4.0, -2.0), positions="all"),
         SteeringEntry(SAERef(path="b"), (7,), (1.5,), positions="all", relative=True)),
    )  # fmt: skip
    with pytest.raises(ValueError, match="relative"):
        export_gguf(spec, [sae_a, sae_b], tmp_path / "x.gguf", model_hint="llama")
    path = export_gguf(
        spec, [sae_a, sae_b], tmp_path / "cv.gguf", model_hint="llama", norms={"model.layers.2:input": 10.0}
    )
    reader = gguf.GGUFReader(path)
    field = reader.fields["general.architecture"]
    assert bytes(field.parts[field.data[0]]).decode() == "controlvector"
    hint = reader.fields["controlvector.model_hint"]
    assert bytes(hint.parts[hint.data[0]]).decode() == "llama"
    assert int(reader.fields["controlvector.layer_count"].parts[-1][0]) == 2
    tensors = {t.name: torch.tensor(t.data.copy()) for t in reader.tensors}
    assert set(tensors) == {"direction.1", "direction.2"}  # the input of block 2 is the output of block 1

    def unit(sae, i):
        return (sae.W_dec[i] / sae.W_dec[i].norm()).detach()

    torch.testing.assert_close(tensors["direction.2"], 4.0 * unit(sae_a, 3) - 2.0 * unit(sae_a, 5))
    torch.testing.assert_close(tensors["direction.1"], 1.5 * 10.0 * unit(sae_b, 7))
    for bad in ("model.layers.0", "model.layers.1.mlp"):
        one = SteeringSpec((SteeringEntry(SAERef(path="a"), (3,), (1.0,), hookpoint=bad, positions="all"),))
        with pytest.raises(ValueError, match="llama.cpp"):
            export_gguf(one, [sae_a], tmp_path / "bad.gguf", model_hint="llama")


def test_safetensors_export_reads_back(tmp_path):
    sae_a, sae_b = topk_sae("model.layers.1"), topk_sae("model.layers.2", seed=2)
    spec = SteeringSpec(
        (SteeringEntry(SAERef(path="a"), (3, 5), (4.0, -2.0), positions="all"),
         SteeringEntry(SAERef(path="b"), (7,), (0.5,), positions="all", relative=True),
         SteeringEntry(SAERef(path="a"), (9,), (1.0,), positions="all")),
        description="two hookpoints, one of them twice",
    )  # fmt: skip
    with pytest.raises(ValueError, match="relative"):
        export_safetensors(spec, [sae_a, sae_b, sae_a], tmp_path / "x.safetensors")
    path = export_safetensors(spec, [sae_a, sae_b, sae_a], tmp_path / "v.safetensors", norms={"model.layers.2": 8.0})
    with safe_open(path, framework="pt") as f:
        vectors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
        metadata = f.metadata()
    assert metadata["format"] == "hubsae-steering-vectors/1"
    assert SteeringSpec.from_json(metadata["spec"]) == spec

    def unit(sae, i):
        return (sae.W_dec[i] / sae.W_dec[i].norm()).detach()

    assert set(vectors) == {"model.layers.1", "model.layers.2"}
    assert all(v.dtype == torch.float32 and v.shape == (32,) for v in vectors.values())
    expected_1 = 4.0 * unit(sae_a, 3) - 2.0 * unit(sae_a, 5) + unit(sae_a, 9)  # two entries at one hookpoint add
    torch.testing.assert_close(vectors["model.layers.1"], expected_1)
    torch.testing.assert_close(vectors["model.layers.2"], 0.5 * 8.0 * unit(sae_b, 7))


def _commit(push) -> str:
    oid = push.oid
    assert len(oid) == 40
    return oid


def test_a_pinned_revision_loads_that_commit_not_the_newest(hub):
    model = tiny_llama()
    old, new = topk_sae("model.layers.1"), topk_sae("model.layers.1", seed=5)
    first = _commit(hubsae.push_to_hub(old, "tester/saes"))
    hubsae.push_to_hub(new, "tester/saes")  # main now holds other weights
    coefficients = {3: 4.0, 5: -2.0}

    def reference(sae):
        with torch.no_grad(), hubsae.steer(model, sae, coefficients, positions="all"):
            return model.generate(IDS, **SETTINGS)

    at_old, at_new = reference(old), reference(new)
    assert not torch.equal(at_old, at_new)
    ref = SAERef(repo_id="tester/saes", subfolder="model.layers.1", revision=first)
    spec = SteeringSpec((SteeringEntry(ref, tuple(coefficients), tuple(coefficients.values()), positions="all"),))
    for pinned, expected in ((spec, at_old), (_unpinned(spec), at_new)):
        steered = load_steered(model, pinned)
        with torch.no_grad():
            assert torch.equal(model.generate(IDS, **SETTINGS), expected)
        steered.hubsae_steering.remove()
    # a steered repo pushed twice: revision= picks the spec and the SAEs of that commit
    v1 = _commit(push_steered(spec, [old], "tester/steered"))
    push_steered(spec, [new], "tester/steered")
    for revision, expected in ((v1, at_old), (None, at_new)):
        load_steered(model, "tester/steered", revision=revision)
        with torch.no_grad():
            assert torch.equal(model.generate(IDS, **SETTINGS), expected)
        model.hubsae_steering.remove()


def _unpinned(spec: SteeringSpec) -> SteeringSpec:
    entry = spec.entries[0]
    return SteeringSpec((replace(entry, sae=replace(entry.sae, revision=None)),))


def _steer_cli(argv: list[str]) -> None:
    """What `hubsae steer ...` runs."""
    assert ("steer", "hubsae.cli.steer") in [(name, module) for name, module, _ in COMMANDS]
    parser = argparse.ArgumentParser(prog="hubsae steer")
    steer_cli.add_arguments(parser)
    steer_cli.run(parser.parse_args(argv))


def test_steer_cli_spec_generates_as_the_context_manager(tmp_path, caplog):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    model = tiny_llama_for(tokenizer)
    model.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    sae = topk_sae("model.layers.1")
    sae.save_pretrained(tmp_path / "sae")
    entry = SteeringEntry(SAERef(path="sae"), (3, 5), (6.0, -3.0), positions="generated")
    SteeringSpec((entry,)).save(tmp_path / "steering.json")
    prompts = ["Tell me about your weekend.", "The sea is"]
    # the reference: the same prompts, left-padded, through the steer() context manager
    tokenizer.padding_side = "left"
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    inputs = tokenizer(prompts, return_tensors="pt", padding=True)
    settings = dict(max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        plain = model.generate(**inputs, **settings)
        with hubsae.steer(model, sae, entry.coefficient_map, positions="generated"):
            steered = model.generate(**inputs, **settings)
    start = inputs.input_ids.shape[1]
    texts = [[tokenizer.decode(row[start:], skip_special_tokens=True) for row in out] for out in (plain, steered)]
    assert texts[0] != texts[1]
    argv = ["--spec", str(tmp_path / "steering.json"), "--model", str(tmp_path / "lm"), "--max-new-tokens", "6"]
    with caplog.at_level(logging.INFO, logger="hubsae.cli.steer"):
        _steer_cli(argv + [arg for p in prompts for arg in ("--prompt", p)])
    logged = caplog.text
    for prompt, plain_text, steered_text in zip(prompts, *texts, strict=True):
        assert f"prompt:  {prompt}\nplain:   {plain_text}\nsteered: {steered_text}\n" in logged + "\n"
    # load_steered with the base model named by folder generates the same tokens
    again = load_steered(str(tmp_path / "lm"), tmp_path / "steering.json")
    with torch.no_grad():
        assert torch.equal(again.generate(**inputs, **settings), steered)
