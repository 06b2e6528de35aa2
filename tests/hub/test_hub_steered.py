"""Steered models as artefacts: the spec's strict JSON, load_steered against the steer() context
manager (token for token), a push through the local Hub server, and the llama.cpp GGUF export."""

import json

import gguf
import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from transformers import LlamaConfig, LlamaForCausalLM

import hubsae
from hubsae.steered import SAERef, SteeringEntry, SteeringSpec, export_gguf, load_steered, push_steered

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
