"""A steered model as an artefact: a `SteeringSpec` (JSON), pushed with its SAEs, loaded back as a model.

    spec = SteeringSpec([SteeringEntry(SAERef(path="./sae"), features=(1945,), coefficients=(0.4,),
                                       relative=True)], base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
    spec.save("steering.json")
    push_steered(spec, None, "org/smollm2-sea")               # the SAE(s) + steering.json + card, one commit
    model = load_steered(base_model, "org/smollm2-sea")       # generate() / pipeline() now steer
    model.hubsae_steering.remove()                            # back to the plain model

An SAE is named by Hub repo (+ subfolder, revision), by local path, or by subfolder alone: a
folder of the repo or directory the spec itself came from (what `push_steered` writes, so the
steering and its SAEs stay at one commit). Each entry is one `hubsae.steer(...)` call, so a
loaded spec generates exactly what the same `steer` context managers generate.
"""

from .export import export_gguf, export_safetensors, steering_vectors
from .model import STEERING_ATTR, Steering, load_sae, load_spec_saes, load_steered, push_steered, read_spec
from .spec import SPEC_FORMAT, SPEC_NAME, SAERef, SteeringEntry, SteeringSpec

__all__ = [
    "SAERef",
    "SPEC_FORMAT",
    "SPEC_NAME",
    "STEERING_ATTR",
    "Steering",
    "SteeringEntry",
    "SteeringSpec",
    "export_gguf",
    "export_safetensors",
    "load_sae",
    "load_spec_saes",
    "load_steered",
    "push_steered",
    "read_spec",
    "steering_vectors",
]
