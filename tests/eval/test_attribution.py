"""Feature attribution (AtP / IG) checked against computations that do not go through hubsae's hooks."""

import json
import re

import pytest
import torch
from test_eval_browser import CHROMIUM, _chromium, _DevTools
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

import hubsae
from hubsae.eval.attribution import attribute, logit_diff, token_logprob
from hubsae.eval.attribution_page import write_attribution
from hubsae.llm import load_smollm2, smollm2_path
from hubsae.saes import ReLUSAE, ReLUSAEConfig, TopKSAE, TopKSAEConfig

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(smollm2_path())


def tiny_llama(tokenizer, layers: int = 2, **overrides) -> LlamaForCausalLM:
    """A tiny random Llama over SmolLM2's real tokenizer, so token strings are real text."""
    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **overrides,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def llama3(tokenizer):
    """Three layers, so that the outputs of layers 0 and 1 are plain hidden states (the last gets the norm)."""
    return tiny_llama(tokenizer, layers=3)


def _topk(hookpoint: str, d_in: int = 32, d_sae: int = 64, k: int = 8, seed: int = 1, **kw) -> TopKSAE:
    torch.manual_seed(seed)
    sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, hookpoint=hookpoint, **kw)).eval()
    with torch.no_grad():
        sae.b_dec.normal_(0, 0.1)  # a nonzero base, so that the error and the bias are not confused
    return sae


def _hook_count(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# ---- exactness where the metric is linear in the features --------------------------------------


@pytest.mark.parametrize("input_norm", ["none", "scale"])
def test_linear_metric_attributions_equal_exact_ablation_effects(tokenizer, input_norm):
    # SAE on the final norm's output: the head is linear, so a logit difference is linear in each feature
    model = tiny_llama(tokenizer)
    sae = _topk("model.norm", input_norm=input_norm, input_scale=2.5 if input_norm == "scale" else 1.0)
    inputs = tokenizer(PROMPT, return_tensors="pt")
    metric = logit_diff(" Paris", " London", tokenizer)
    result = attribute(model, sae, inputs, metric, tokenizer=tokenizer, edge_nodes=0)
    with torch.no_grad():
        clean = float(metric(model(**inputs).logits))
    assert result.metric == pytest.approx(clean, abs=1e-5)
    site = result.site("model.norm")
    last = inputs.input_ids.shape[1] - 1
    assert site.attribution[0, :last].abs().max() == 0  # earlier positions cannot move the last logits
    checked = 0
    for node in [n for n in result.top(40, errors=False) if n.position == last][:5]:
        with torch.no_grad(), hubsae.ablate(model, sae, [node.feature]):
            ablated = float(metric(model(**inputs).logits))
        assert node.attribution == pytest.approx(clean - ablated, rel=1e-3, abs=1e-5)
        checked += 1
    assert checked == 5
    with torch.no_grad(), hubsae.splice(model, sae):  # x -> x_hat: only the error term leaves
        no_error = float(metric(model(**inputs).logits))
    assert float(site.error_attribution[0, last]) == pytest.approx(clean - no_error, rel=1e-3, abs=1e-5)
    ig = attribute(model, sae, inputs, metric, method="ig", steps=3, edge_nodes=0).site("model.norm")
    torch.testing.assert_close(ig.attribution, site.attribution, rtol=1e-4, atol=1e-5)  # IG = AtP when linear


# ---- first order: against the model's own gradient ---------------------------------------------


def _hidden_gradients(model, inputs, metric, layers):
    out = model(**inputs, output_hidden_states=True)
    hidden = [out.hidden_states[i + 1] for i in layers]  # hidden_states[i + 1] = the output of layer i
    value = metric(out.logits)
    return value, hidden, torch.autograd.grad(value, hidden)


def test_features_and_error_sum_to_the_first_order_change(llama3, tokenizer):
    saes = [_topk("model.layers.0", seed=1), _topk("model.layers.1", seed=2)]
    inputs = tokenizer(["The capital of France is", "Rome is the capital of"], return_tensors="pt", padding=True)
    metric = token_logprob(" Paris", tokenizer)
    result = attribute(llama3, saes, inputs, metric, edge_nodes=0)
    value, hidden, grads = _hidden_gradients(llama3, inputs, metric, [0, 1])
    assert result.metric == pytest.approx(float(value.detach()), abs=1e-5)
    mask = inputs.attention_mask.bool()
    for sae, x, g in zip(saes, hidden, grads, strict=True):
        site = result.site(sae.config.hookpoint)
        # zeroing every feature and the error moves x to b_dec: first order g . (b_dec - x) = -sum of attributions
        first_order = ((x - sae.b_dec) * g).sum(-1)[mask].sum()
        assert result.total(sae.config.hookpoint) == pytest.approx(float(first_order.detach()), rel=1e-4, abs=1e-6)
        dense = sae.encode(x.detach())  # each feature: f_i * (d_i . g), from the dense code
        expected = dense * (g @ sae.W_dec.detach().T)
        got = torch.zeros_like(dense).scatter_(-1, site.indices, site.attribution)
        torch.testing.assert_close(got, expected.detach(), rtol=1e-4, atol=1e-6)


def test_edges_are_the_downstream_feature_gradient(llama3, tokenizer):
    saes = [_topk("model.layers.0", seed=1), _topk("model.layers.1", seed=2)]
    inputs = tokenizer(PROMPT, return_tensors="pt")
    result = attribute(llama3, saes, inputs, token_logprob(" Paris", tokenizer), edge_nodes=30)
    feature_edges = [e for e in result.edges if not e.source.endswith("/error")]
    assert feature_edges and all(e.target.startswith("model.layers.1/") for e in result.edges)
    out = llama3(**inputs, output_hidden_states=True)
    x0, x1 = out.hidden_states[1], out.hidden_states[2]
    nodes = {f"{n.hookpoint}/{n.batch}/{n.position}/{n.feature}": n for n in result.nodes(errors=False)}
    for edge in feature_edges[:5]:
        src, dst = nodes[edge.source], nodes[edge.target]
        activation = saes[1].encode(x1[0, dst.position])[dst.feature]
        (g,) = torch.autograd.grad(activation, x0, retain_graph=True)
        expected = src.activation * float(saes[0].W_dec[src.feature].detach() @ g[0, src.position])
        assert edge.weight == pytest.approx(expected, rel=1e-3, abs=1e-7)


@pytest.mark.parametrize("ignore_first", [0, 2])
def test_integrated_gradients_are_complete(llama3, tokenizer, ignore_first):
    sae = _topk("model.layers.1", seed=3)
    inputs = tokenizer(PROMPT, return_tensors="pt")
    metric = token_logprob(" Paris", tokenizer)
    result = attribute(llama3, sae, inputs, metric, method="ig", steps=24, edge_nodes=0, ignore_first=ignore_first)
    layer = llama3.model.layers[1]

    def to_base(module, args, output):  # a plain torch hook: the attributed tokens' outputs replaced by b_dec
        x = output[0] if isinstance(output, tuple) else output
        base = x.clone()
        base[:, ignore_first:] = sae.b_dec
        return (base, *output[1:]) if isinstance(output, tuple) else base

    handle = layer.register_forward_hook(to_base)
    try:
        with torch.no_grad():
            at_base = float(metric(llama3(**inputs).logits))
    finally:
        handle.remove()
    exact = result.metric - at_base
    assert result.total("model.layers.1") == pytest.approx(exact, rel=2e-2)
    atp = result.site("model.layers.1").atp
    assert atp is not None and not torch.equal(atp, result.site("model.layers.1").attribution)


# ---- the result: sorted, sparse, with tokens, to JSON ------------------------------------------


def test_result_is_sorted_sparse_and_serializable(tokenizer, tmp_path):
    model = tiny_llama(tokenizer)
    sae = ReLUSAE(ReLUSAEConfig(d_in=32, d_sae=48, hookpoint="model.layers.1")).eval()
    inputs = tokenizer(PROMPT, return_tensors="pt")
    result = attribute(model, sae, inputs, token_logprob(" Paris", tokenizer), tokenizer=tokenizer, validate=4)
    nodes = result.nodes()
    scores = [abs(n.attribution) for n in nodes]
    assert scores == sorted(scores, reverse=True) and result.top(7) == nodes[:7]
    n_active = int((sae.encode(model(**inputs, output_hidden_states=True).hidden_states[2]) != 0).sum())
    assert len(result.nodes(errors=False)) == n_active  # every active feature, nothing else
    assert result.tokens[0] == [tokenizer.decode([i]) for i in inputs.input_ids[0].tolist()]
    per_token = result.per_token(3)
    assert set(per_token) == {(0, t) for t in range(inputs.input_ids.shape[1])}
    data = json.loads(json.dumps(result.to_json()))
    assert {"hookpoint", "layer", "position", "feature", "activation", "attribution", "token"} <= set(data["nodes"][0])
    assert data["nodes"][0]["layer"] == 1 and len(data["validation"]["actual"]) == 4 and data["linear"] is False
    paths = write_attribution(result, tmp_path, browser={"model.layers.1": "../browser/index.html"})
    assert json.loads(paths["json"].read_text())["graph"][0] == data["nodes"][0]["id"]
    html = paths["html"].read_text()
    assert "__DATA__" not in html and "../browser/index.html" in html


def test_ignore_first_leaves_out_each_rows_first_real_tokens(tokenizer):
    model = tiny_llama(tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path(), padding_side="left")
    inputs = tokenizer(["Paris", PROMPT], return_tensors="pt", padding=True)
    result = attribute(model, _topk("model.layers.0"), inputs, token_logprob(" Paris", tokenizer), ignore_first=1)
    first_real = inputs.attention_mask.argmax(-1).tolist()  # left padding: the first 1 in each row
    seen = {(n.batch, n.position) for n in result.nodes()}
    expected = {(b, t) for b in range(2) for t in range(first_real[b] + 1, inputs.input_ids.shape[1])}
    assert seen == expected
    with pytest.raises(ValueError, match="ignore_first must be a non-negative integer"):
        attribute(model, _topk("model.layers.0"), inputs, token_logprob(" Paris", tokenizer), ignore_first=-1)


# ---- SmolLM2: the top feature's ablation moves the metric the predicted way ---------------------


@pytest.mark.slow
def test_smollm2_ablating_the_top_feature_moves_the_metric_as_predicted(tmp_path):
    model, tokenizer = load_smollm2()
    # a random TopK SAE (encoder = decoder transpose): features are projections on fixed directions
    sae = _topk("model.layers.20", d_in=model.config.hidden_size, d_sae=1024, k=16, seed=4)
    with torch.no_grad():
        sae.b_dec.zero_()
    inputs = tokenizer(PROMPT, return_tensors="pt")
    result = attribute(model, sae, inputs, token_logprob(" Paris", tokenizer), tokenizer=tokenizer, validate=6)
    v = result.validation
    assert v.predicted[0] != 0 and (v.actual[0] > 0) == (v.predicted[0] > 0), v
    assert v.pearson is not None and v.pearson > 0.5, v


# ---- hooks and errors --------------------------------------------------------------------------


def test_hooks_removed_on_success_and_on_error(tokenizer):
    model = tiny_llama(tokenizer)
    sae = _topk("model.layers.0")
    inputs = tokenizer(PROMPT, return_tensors="pt")
    before = _hook_count(model)
    attribute(model, sae, inputs, token_logprob(" Paris", tokenizer), method="ig", steps=2, validate=2)
    assert _hook_count(model) == before
    with pytest.raises(ValueError, match=r"must return a scalar, got a tensor of shape \(1, 5\)"):
        attribute(model, sae, inputs, lambda logits: logits[..., 0])
    assert _hook_count(model) == before

    def broken(logits):
        raise KeyError("inside the metric")

    with pytest.raises(KeyError, match="inside the metric"):
        attribute(model, sae, inputs, broken)
    assert _hook_count(model) == before
    with pytest.raises(ValueError, match="does not depend on the logits"):
        attribute(model, sae, inputs, lambda logits: torch.tensor(1.0))
    assert _hook_count(model) == before

    def fails(*args, **kwargs):
        raise RuntimeError("inside the forward")

    sae.encode = sae.encode_sparse = fails  # raises from inside a hook, mid-forward
    with pytest.raises(RuntimeError, match="inside the forward"):
        attribute(model, sae, inputs, token_logprob(" Paris", tokenizer))
    assert _hook_count(model) == before


def test_bad_inputs_name_the_problem(tokenizer):
    model = tiny_llama(tokenizer)
    sae = _topk("model.layers.0")
    inputs = tokenizer(PROMPT, return_tensors="pt")
    metric = token_logprob(" Paris", tokenizer)
    with pytest.raises(ValueError, match="hookpoint 'model.layers.9' is not a module"):
        attribute(model, {"model.layers.9": sae}, inputs, metric)
    with pytest.raises(ValueError, match="' Parisxyzzyq' is not in the vocabulary as one token"):
        token_logprob(" Parisxyzzyq", tokenizer)
    with pytest.raises(ValueError, match=r"token ids \[999999\] are not in the vocabulary"):
        attribute(model, sae, inputs, logit_diff(999999, 5))
    with pytest.raises(ValueError, match="pass tokenizer="):
        token_logprob(" Paris")
    with pytest.raises(ValueError, match="method='shap' is not one of"):
        attribute(model, sae, inputs, metric, method="shap")
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        attribute(model, sae, inputs, metric, method="ig", steps=0)
    wide = _topk("model.layers.0", d_in=16)
    with pytest.raises(ValueError, match="d_in=16 but the activation at hookpoint 'model.layers.0'"):
        attribute(model, wide, inputs, metric)


# ---- the page in headless Chromium -------------------------------------------------------------


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (scripts/install_chromium.sh needs root and apt)"
)
def test_attribution_page_in_headless_chromium(llama3, tokenizer, tmp_path):
    saes = [_topk("model.layers.0", seed=1), _topk("model.layers.1", seed=2)]
    inputs = tokenizer(PROMPT, return_tensors="pt")
    result = attribute(llama3, saes, inputs, token_logprob(" Paris", tokenizer), tokenizer=tokenizer, validate=3)
    paths = write_attribution(result, tmp_path / "site", browser={"model.layers.0": "b0/index.html"})
    run = _chromium(tmp_path, "--dump-dom", paths["html"].as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if re.search(r"CONSOLE[:(]", line)]
    assert console == [], console
    dom = run.stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-status="ok"' in body and 'data-position="0:4"' in body, body
    assert '<pre id="errors"></pre>' in dom
    n_graph = len(result.top(20))
    assert dom.count("<circle") == n_graph + 1  # the graph's nodes and the metric
    assert 'href="b0/index.html#feature=' in dom  # links into the feature browser
    assert 'Top nodes at " is"' in dom


# ---- the CLI -----------------------------------------------------------------------------------


def test_cli_writes_json_html_and_the_ablation_check(tokenizer, tmp_path, caplog):
    from hubsae.cli import main

    model_dir, sae_dir, out = tmp_path / "llm", tmp_path / "sae", tmp_path / "out"
    tiny_llama(tokenizer).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    _topk("model.layers.1").save_pretrained(sae_dir)
    argv = ["attribute", str(sae_dir), "--model", str(model_dir), "--prompt", PROMPT, "--target", " Paris"]
    with caplog.at_level("INFO", logger="hubsae.cli.attribute"):
        main([*argv, "--contrast", " London", "--validate", "3", "--edges", "5", "--out", str(out)])
    data = json.loads((out / "attribution.json").read_text())
    assert data["metric"] == "logit[' Paris'] - logit[' London']" and data["hookpoints"][0]["name"] == "model.layers.1"
    assert len(data["validation"]["nodes"]) == 3 and len(data["graph"]) == 10
    assert (out / "attribution.html").is_file() and "Pearson r(predicted, actual)" in caplog.text
    with pytest.raises(ValueError, match="not in the vocabulary as one token"):
        main([*argv[:-1], " Parisxyzzyq", "--out", str(out)])


# ---- transcoders -------------------------------------------------------------------------------


def test_transcoder_nodes_and_edges_against_the_mlp_output_gradient(llama3, tokenizer):
    # reads the MLP's input (the post-attention norm's output), writes the MLP's output
    tc = _topk(
        "model.layers.0.post_attention_layernorm", seed=5, hookpoint_out="model.layers.0.mlp", subtract_b_dec=False
    )
    sae = _topk("model.layers.1", seed=6)
    inputs = tokenizer(PROMPT, return_tensors="pt")
    metric = token_logprob(" Paris", tokenizer)
    result = attribute(llama3, [tc, sae], inputs, metric, edge_nodes=30)
    seen = {}
    layer0 = llama3.model.layers[0]
    handles = [
        layer0.post_attention_layernorm.register_forward_hook(lambda m, a, out: seen.update(x=out)),
        layer0.mlp.register_forward_hook(lambda m, a, out: seen.update(y=out)),
    ]
    try:
        value = metric(llama3(**inputs).logits)
    finally:
        for h in handles:
            h.remove()
    (g,) = torch.autograd.grad(value, seen["y"])
    site = result.site("model.layers.0.post_attention_layernorm")
    assert site.writes == "model.layers.0.mlp" and result.sites[0] is site
    first_order = ((seen["y"] - tc.b_dec) * g).sum()  # features + error of the MLP's output
    assert result.total(site.hookpoint) == pytest.approx(float(first_order.detach()), rel=1e-4, abs=1e-6)
    dense = tc.encode(seen["x"].detach())  # the features come from the input, their effect from the output
    got = torch.zeros_like(dense).scatter_(-1, site.indices, site.attribution)
    torch.testing.assert_close(got, (dense * (g @ tc.W_dec.T)).detach(), rtol=1e-4, atol=1e-6)
    sources = {e.source.split("/")[0] for e in result.edges}
    assert sources == {"model.layers.0.post_attention_layernorm"}, result.edges
    with torch.no_grad():  # small writes (like the MLP's own), so that one ablation stays in the linear regime
        tc.W_dec.mul_(0.002)
        tc.b_dec.mul_(0.002)
    v = attribute(llama3, tc, inputs, metric, edge_nodes=0, validate=3).validation
    # ablated where the transcoder writes: the first-order prediction holds
    assert len(v.actual) == 3 and v.actual == pytest.approx(v.predicted, rel=0.1), v


@pytest.mark.slow
def test_the_paris_example_runs_on_given_saes(tmp_path, monkeypatch, capsys):
    import runpy
    import sys
    from pathlib import Path

    paths = []
    for layer in (10, 20):
        path = tmp_path / f"sae{layer}"
        _topk(f"model.layers.{layer}", d_in=576, d_sae=512, k=16, seed=layer).save_pretrained(path)
        paths += ["--sae", str(path)]
    example = Path(__file__).resolve().parents[2] / "examples" / "attribute_paris.py"
    monkeypatch.setattr(sys, "argv", [example.name, *paths, "--validate", "4", "--out", str(tmp_path / "out")])
    runpy.run_path(str(example), run_name="__main__")
    out = capsys.readouterr().out
    assert "logprob[' Paris']" in out and "ablation check: Pearson r = " in out and "sign agrees for" in out
    assert (tmp_path / "out" / "attribution.html").is_file()


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (scripts/install_chromium.sh needs root and apt)"
)
def test_clicking_a_token_shows_its_top_nodes(llama3, tokenizer, tmp_path):
    saes = [_topk("model.layers.0", seed=1), _topk("model.layers.1", seed=2)]
    inputs = tokenizer(PROMPT, return_tensors="pt")
    result = attribute(llama3, saes, inputs, token_logprob(" Paris", tokenizer), tokenizer=tokenizer)
    paths = write_attribution(result, tmp_path / "site")
    browser = _DevTools(tmp_path / "profile")
    try:
        browser.open(paths["html"].as_uri())
        assert browser.js("document.body.dataset.status") == "ok"
        browser.js("document.querySelector('.tok[data-key=\"0:2\"]').click()")
        assert browser.js("document.body.dataset.position") == "0:2"
        assert browser.js("$('toktitle').textContent") == 'Top nodes at " of" (position 2)'
        shown = browser.js("[...$('pertoken').querySelectorAll('tr')].slice(1).map(r => r.children[2].textContent)")
        expected = [n for n in result.nodes() if n.position == 2][:12]
        assert shown == ["2"] * len(expected) and len(expected) == 12
        noise = [
            e for e in browser.events if e.get("method") in ("Runtime.consoleAPICalled", "Runtime.exceptionThrown")
        ]
        assert noise == []
    finally:
        browser.close()


# ---- linear mode: circuit-tracer's local replacement model -------------------------------------


def _replacement_forward(model, ids, patterns, tcs, clean=None):
    """The local replacement model written out by hand: the clean attention patterns, norm scales
    from `clean` (or computed), every MLP replaced by its transcoder's features + error from `clean`
    (or computed from this pass). Returns (logits, state) where state holds scales, features, errors."""
    m, state = model.model, {"scale": {}, "feats": [], "errs": [], "reads": []}

    def norm(key, mod, x):
        s = clean["scale"][key] if clean else torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + mod.variance_epsilon)
        state["scale"][key] = s
        return mod.weight * (x * s)

    h = m.embed_tokens(ids)
    for i, layer in enumerate(m.layers):
        attn, n1 = layer.self_attn, norm(f"{i}.in", layer.input_layernorm, h)
        v = attn.v_proj(n1).view(*n1.shape[:2], -1, attn.head_dim).transpose(1, 2)
        v = v.repeat_interleave(attn.num_key_value_groups, dim=1)
        h = h + attn.o_proj((patterns[i] @ v).transpose(1, 2).reshape(*n1.shape[:2], -1))
        n2, tc = norm(f"{i}.post", layer.post_attention_layernorm, h), tcs[i]
        feats = clean["feats"][i] if clean else tc.encode(n2)
        errs = clean["errs"][i] if clean else layer.mlp(n2) - (tc.b_dec + feats @ tc.W_dec)
        state["feats"].append(feats)
        state["errs"].append(errs)
        state["reads"].append(n2)
        h = h + tc.b_dec + feats @ tc.W_dec + errs
    return model.lm_head(norm("final", m.norm, h)), state


@torch.no_grad()
def _edit(state, layer, what, position, feature=None):
    """A copy of `state` with one feature (or, with feature=None, the error term) at one token set to 0."""
    edited = {k: (dict(v) if isinstance(v, dict) else [t.clone() for t in v]) for k, v in state.items()}
    target = edited["feats" if feature is not None else "errs"][layer]
    target[0, position, feature if feature is not None else slice(None)] = 0.0
    return edited


def test_linear_mode_is_exact_in_the_local_replacement_model(tokenizer):
    model = tiny_llama(tokenizer, attn_implementation="eager")  # eager: the attention patterns can be read
    tcs = [
        _topk(
            f"model.layers.{i}.post_attention_layernorm",
            seed=7 + i,
            hookpoint_out=f"model.layers.{i}.mlp",
            subtract_b_dec=False,  # b_dec is the written activation's bias
        )
        for i in range(2)
    ]
    inputs = tokenizer(PROMPT, return_tensors="pt")
    metric = logit_diff(" Paris", " London", tokenizer)
    result = attribute(model, tcs, inputs, metric, linear=True, edge_nodes=16)
    assert result.linear and result.to_json()["linear"] is True
    with torch.no_grad():
        clean_out = model(**inputs, output_attentions=True)
        logits, state = _replacement_forward(model, inputs.input_ids, clean_out.attentions, tcs)
    torch.testing.assert_close(logits, clean_out.logits, rtol=1e-4, atol=1e-5)  # the hand-written model is right
    clean = float(metric(logits))
    checked = 0
    for node in result.top(12):
        layer = int(node.hookpoint.split(".")[2])
        edited = _edit(state, layer, "feats", node.position, node.feature)
        with torch.no_grad():
            removed = float(metric(_replacement_forward(model, inputs.input_ids, clean_out.attentions, tcs, edited)[0]))
        assert node.attribution == pytest.approx(clean - removed, rel=1e-3, abs=1e-6), node
        checked += node.feature is None
    assert 0 < checked < 12  # error nodes and features both checked
    nodes = {f"{n.hookpoint}/{n.batch}/{n.position}/{n.feature}": n for n in result.nodes(errors=False)}
    feature_edges = [e for e in result.edges if e.source in nodes and e.target in nodes]
    assert feature_edges
    for edge in feature_edges[:4]:  # an edge is exact on the downstream pre-activation (linear in the source)
        src, dst = nodes[edge.source], nodes[edge.target]
        edited = _edit(state, 0, "feats", src.position, src.feature)
        with torch.no_grad():
            reads = _replacement_forward(model, inputs.input_ids, clean_out.attentions, tcs, edited)[1]["reads"][1]
        tc = tcs[1]

        @torch.no_grad()
        def pre(n2, tc=tc, dst=dst):
            return float((n2[0, dst.position] - tc.b_dec) @ tc.W_enc[:, dst.feature] + tc.b_enc[dst.feature])

        assert edge.weight == pytest.approx(pre(state["reads"][1]) - pre(reads), rel=1e-3, abs=1e-7)


def test_linear_mode_refuses_fused_attention_and_ig(tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=4, vocab_size=200, n_positions=16)).eval()
    ids = torch.randint(0, 200, (1, 6))
    before = _hook_count(gpt2)
    with pytest.raises(ValueError, match="separate q_proj/k_proj modules"):
        attribute(gpt2, _topk("transformer.h.0"), ids, token_logprob(5), linear=True)
    assert _hook_count(gpt2) == before
    with pytest.raises(ValueError, match="use method='atp'"):
        attribute(gpt2, _topk("transformer.h.0"), ids, token_logprob(5), linear=True, method="ig")
