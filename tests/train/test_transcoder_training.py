"""Training transcoders: read `model.layers.0.mlp:input`, predict `model.layers.0.mlp`, from one harvest."""

import socket
import subprocess
import sys
from itertools import islice
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub.errors import StrictDataclassClassValidationError
from interrupting import Interrupted, interrupt_after

from hubsae import AutoSAE
from hubsae.data import write_cache
from hubsae.data.stream import tensor_blocks
from hubsae.data.text import TextSource, contexts
from hubsae.hooks.capture import capture
from hubsae.train import TrainConfig, Trainer
from hubsae.train.checkpoint import latest_checkpoint

READ, WRITE = "model.layers.0.mlp:input", "model.layers.0.mlp"


def transcoder_config(tiny_config, **kw):
    fields = dict(hookpoints=[READ], hookpoints_out=[WRITE], sae={"k": 4, "skip_connection": True}, d_sae=64)
    return tiny_config(**{**fields, **kw})


def weights(saes):
    return {f"{h}/{k}": v.detach().clone() for h, sae in saes.items() for k, v in sae.state_dict().items()}


def assert_identical(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def fvu(model, tok, corpus, sae, n_contexts: int = 16) -> float:
    """FVU of the MLP output from its input on contexts of the corpus, computed here from captured activations."""
    texts = contexts(TextSource(path=str(corpus)), tok, 16, True)
    ids = torch.stack([torch.as_tensor(c) for c in islice(texts, n_contexts)])
    with torch.no_grad():
        acts = capture(model, [READ, WRITE], lambda: model(input_ids=ids, use_cache=False))[1]
        x, y = acts[READ].reshape(-1, acts[READ].shape[-1]), acts[WRITE].reshape(-1, acts[WRITE].shape[-1])
        y_hat = sae(x, compute_losses=False).reconstruction
    return float((y - y_hat).pow(2).sum() / (y - y.mean(0)).pow(2).sum())


def test_a_transcoder_trained_on_the_mlp_lowers_its_fvu(tiny_config, tiny_lm):
    model, tok, _, corpus = tiny_lm
    cfg = transcoder_config(tiny_config, log_every=1, max_tokens=64 * 60)
    trainer = Trainer(cfg, model=model, tokenizer=tok)
    sae = trainer.train()[READ]
    first, last = trainer.history[0], trainer.history[-1]
    assert last[f"{READ}/fvu"] < 0.5 * first[f"{READ}/fvu"], (first[f"{READ}/fvu"], last[f"{READ}/fvu"])
    loaded = AutoSAE.from_pretrained(f"{cfg.output_dir}/{READ}")
    assert (loaded.config.hookpoint, loaded.config.hookpoint_out) == (READ, WRITE)
    assert loaded.config.skip_connection and not loaded.config.subtract_b_dec
    assert loaded.W_skip.abs().sum() > 0  # the skip term learned too
    untrained = Trainer(transcoder_config(tiny_config, lr=1e-12, max_tokens=64, output_dir=cfg.output_dir + "0"),
                        model=model, tokenizer=tok).train()[READ]  # fmt: skip
    assert fvu(model, tok, corpus, sae) < 0.6 * fvu(model, tok, corpus, untrained)
    assert fvu(model, tok, corpus, loaded) == pytest.approx(fvu(model, tok, corpus, sae))


def test_transcoder_cache_and_resume_give_identical_weights(tiny_config, tiny_lm, tmp_path):
    model, tok, _, _ = tiny_lm
    live = Trainer(transcoder_config(tiny_config, output_dir=str(tmp_path / "live")), model=model, tokenizer=tok)
    live = weights(live.train())
    cached_cfg = transcoder_config(tiny_config, output_dir=str(tmp_path / "c"), activation_cache=str(tmp_path / "ac"))
    assert_identical(weights(Trainer(cached_cfg, model=model, tokenizer=tok).train()), live)
    cfg = transcoder_config(tiny_config, output_dir=str(tmp_path / "part"), checkpoint_every=7)
    with pytest.raises(Interrupted):
        Trainer(cfg, model=model, tokenizer=tok).train(on_step=interrupt_after(16))
    assert latest_checkpoint(cfg.output_dir).name == "step-00000014"
    assert_identical(weights(Trainer(cfg, model=model, tokenizer=tok).train(resume=True)), live)


def test_transcoder_recipe_mistakes_are_named(tiny_config):
    with pytest.raises(
        StrictDataclassClassValidationError, match="hookpoints_out must name one write point per hookpoint"
    ):
        tiny_config(hookpoints=["a", "b"], hookpoints_out=["c"])
    with pytest.raises(StrictDataclassClassValidationError, match="transcoders .hookpoints_out. use 'adam'"):
        tiny_config(hookpoints_out=["x"], method="pam_sgd", sae={})
    with pytest.raises(StrictDataclassClassValidationError, match="use the top-level hookpoints_out"):
        tiny_config(sae={"k": 4, "hookpoint_out": "x"})


def test_the_smollm2_transcoder_recipe_loads():
    cfg = TrainConfig.from_yaml("recipes/smollm2-transcoder-cpu.yaml")
    assert cfg.hookpoints == ["model.layers.6.mlp:input"] and cfg.hookpoints_out == ["model.layers.6.mlp"]
    assert cfg.harvested(cfg.hookpoints) == ["model.layers.6.mlp:input", "model.layers.6.mlp"]


def test_data_parallel_transcoder_matches_one_process(tmp_path):
    """Two CPU processes (gloo) train the transcoder a -> b from a disk cache as one process does."""
    g = torch.Generator().manual_seed(0)
    codes = torch.rand(64 * 24, 48, generator=g) * (torch.rand(64 * 24, 48, generator=g) < 0.1)
    a = codes @ torch.randn(48, 16, generator=g)
    data = {"a": a, "b": codes @ torch.randn(48, 24, generator=g) + 0.3 * a @ torch.randn(16, 24, generator=g)}
    write_cache(tensor_blocks(data, 64 * 4)(0, 0), tmp_path / "cache", 10**9, {})
    recipe = dict(
        model="none", activation_cache=str(tmp_path / "cache"), hookpoints=["a"], hookpoints_out=["b"],
        batch_size=64, max_tokens=64 * 12, d_sae=64, sae={"k": 4, "skip_connection": True}, lr=1e-2,
        log_every=0, progress_bar=False, norm_estimation_batches=2,
    )  # fmt: skip
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({**recipe, "output_dir": str(tmp_path / "ddp")}))
    launcher = Path(sys.executable).with_name("accelerate")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
        "no", "--dynamo_backend", "no", "--main_process_port", str(port), "-m", "hubsae.cli", "train",
        str(tmp_path / "recipe.yaml"), "-o", "distribute=data",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-4000:]
    ddp = AutoSAE.from_pretrained(tmp_path / "ddp" / "a").state_dict()
    single = Trainer(TrainConfig(**recipe, output_dir=str(tmp_path / "one"))).train()["a"].state_dict()
    assert set(ddp) == set(single) and "W_skip" in ddp
    for key, value in single.items():
        torch.testing.assert_close(ddp[key], value, rtol=1e-4, atol=1e-5)
