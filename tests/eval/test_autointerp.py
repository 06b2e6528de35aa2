"""Autointerp: context collection, prompts, answer parsing, scorers, the shuffled control, backends, browser.

The constructed case: on a tiny Llama, latent f of a ReLU SAE at the embedding output fires exactly
on token KEY[f] (its encoder column is that token's embedding, its bias cuts every other token).
A scripted judge explains a latent by the token most often marked, and scores by looking for that
token: a perfect explanation must score 1.0 and the shuffled control what its keyword's chance
occurrences give (about 0.5).
"""

import json
import math
import random
import re
from collections import Counter

import huggingface_hub.constants
import pytest
import torch
from chat_server import ChatServer
from test_eval_browser import CHROMIUM, _chromium, make_browser_data
from tiny_models import tiny_llama

from hubsae.eval.autointerp import (
    AutointerpConfig,
    Context,
    LatentContexts,
    collect_contexts,
    derangement,
    run_autointerp,
    scorer_samples,
)
from hubsae.eval.autointerp_backends import ChatBackend, ChatBackendError, OpenAIChat, TransformersChat
from hubsae.eval.autointerp_prompts import (
    DETECT_SYSTEM,
    EXPLAIN_SYSTEM,
    FUZZ_SYSTEM,
    activation_line,
    explain_messages,
    mark_tokens,
    parse_explanation,
    parse_labels,
    score_messages,
)
from hubsae.eval.autointerp_result import write_autointerp
from hubsae.eval.browser import add_explanations, write_browser_files
from hubsae.saes import ReLUSAE, ReLUSAEConfig

KEY = [10, 11, 12, 13, 14, 15]  # latent f fires on token KEY[f]
CONFIG = AutointerpConfig(
    n_top_explain=3, n_sampled_explain=2, n_top_score=2, n_sampled_score=2, n_non_activating=6, radius=3
)


def word(token_id: int) -> str:
    return f"tok{token_id:03d} "


class WordTokenizer:
    """Token i decodes to "tokNNN " (fixed width, so no token's text is inside another's)."""

    all_special_ids = [0, 1, 2]

    def decode(self, ids: list[int]) -> str:
        return "".join(word(i) for i in ids)


def keyword_sae(model) -> ReLUSAE:
    emb = model.get_input_embeddings().weight.detach()
    d = emb.shape[1]
    sae = ReLUSAE(ReLUSAEConfig(d_in=d, d_sae=len(KEY), hookpoint="model.embed_tokens")).eval()
    unit = emb[KEY] / emb[KEY].norm(dim=1, keepdim=True)
    with torch.no_grad():
        sae.W_enc.copy_(100 * unit.T)
        sae.b_enc.copy_(-95 * emb[KEY].norm(dim=1))  # x . e_f / |e_f| > 0.95 |e_f| only for x = e_f
        sae.b_dec.zero_()
    return sae


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = tiny_llama(seed=0)
    ids = torch.randint(3, 128, (60, 24))
    ids[torch.isin(ids, torch.tensor(KEY))] = 100  # keywords only where put below
    for f, token in enumerate(KEY):
        rows = torch.randperm(60)[: 12 + 2 * f]
        ids[rows, torch.randint(0, 24, (len(rows),))] = token
    ids[:, 0] = 1  # BOS, a special token
    return model, keyword_sae(model), list(ids)


@pytest.fixture(scope="module")
def found(setup):
    model, sae, ctxs = setup
    return collect_contexts(model, sae, ctxs, WordTokenizer(), CONFIG, batch_size=16, progress=False)


class KeywordJudge:
    """Explains by the most often marked token; scores by whether the explained token occurs (detection)
    or is what every mark holds (fuzzing). Also the chat server's responder (`answer(request_body)`)."""

    name = "keyword-judge"

    def chat(self, messages, max_tokens: int, temperature: float = 0.0) -> str:
        return self.answer({"messages": messages})

    @staticmethod
    def answer(body: dict) -> str:
        system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
        examples = re.findall(r"^Example \d+: (.*)$", user, re.M)
        if system == EXPLAIN_SYSTEM:
            marked = Counter(t for ex in examples for span in re.findall(r"<<(.*?)>>", ex) for t in span.split())
            return f"Explanation: the token {marked.most_common(1)[0][0]}."
        named = re.search(r"^Explanation: the token (\S+)$", user, re.M)
        key = named.group(1) if named else None  # any other explanation names no token: all 0
        if system == FUZZ_SYSTEM:
            spans = [re.findall(r"<<(.*?)>>", ex) for ex in examples]
            return str([int(bool(s) and all(set(x.split()) == {key} for x in s)) for s in spans])
        assert system == DETECT_SYSTEM
        return str([int(key in ex.split()) for ex in examples])


def test_collect_contexts_matches_a_direct_computation(setup, found):
    model, sae, ctxs = setup
    assert [lc.latent for lc in found] == list(range(len(KEY)))  # all fire
    for lc in found:
        key = word(KEY[lc.latent]).strip()
        n_firing = sum(bool((c == KEY[lc.latent]).any()) for c in ctxs)
        assert len(lc.explain) == 3 + 2 and len(lc.activating) == 2 + 2 <= n_firing - 5
        for c in lc.explain + lc.activating:
            # the latent fires exactly on its key token, the window is centred on a firing token
            assert [a > 0 for a in c.acts] == [t.strip() == key for t in c.tokens]
            assert c.tokens[c.center].strip() == key and c.acts[c.center] == c.peak > 0
            assert len(c.tokens) <= 2 * CONFIG.radius + 1 and "tok001" not in "".join(c.tokens)  # no BOS
        assert len(lc.non_activating) == 6
        for c in lc.non_activating:
            assert key not in "".join(c.tokens) and set(c.acts) == {0.0}
        # held-out contexts come from other sequences than the explainer's
        shown = {tuple(c.tokens) for c in lc.explain}
        assert not any(tuple(c.tokens) in shown for c in lc.activating)
        peaks = [c.peak for c in lc.explain]
        assert peaks[:3] == sorted(peaks[:3], reverse=True)


def test_prompt_formatting():
    assert mark_tokens(["a", " b", " c", "\n", "d"], [False, True, True, False, True]) == "a<< b c>>↵<<d>>"
    assert mark_tokens(["x", "y"], [True, True]) == "<<xy>>"
    with pytest.raises(ValueError, match="2 tokens but 1 marks"):
        mark_tokens(["x", "y"], [True])
    line = activation_line(["a", " b", "c"], [0.0, 2.0, 0.3], [False, True, True])
    assert line == "Activations: ('b', 10), ('c', 2)"  # ceil(10 x 0.3 / 2) = 2
    msgs = explain_messages(["one <<two>>", "three"], ["Activations: ('two', 10)", "Activations: "])
    assert [m["role"] for m in msgs] == ["system", "user"] and msgs[0]["content"] == EXPLAIN_SYSTEM
    assert msgs[-1]["content"].startswith(
        "Example 1: one <<two>>\nActivations: ('two', 10)\nExample 2: three\nActivations: \n\nWhat does"
    )
    msgs = score_messages("fuzzing", "the token x", ["a <<b>>"])
    assert msgs[0]["content"] == FUZZ_SYSTEM and msgs[-1]["content"] == "Explanation: the token x\n\nExample 1: a <<b>>"
    # worked examples have as many excerpts as the prompt: one excerpt, three one-item turns
    assert [m["content"] for m in msgs if m["role"] == "assistant"] == ["[1]", "[0]", "[1]"] and len(msgs) == 8
    msgs = score_messages("detection", "e", ["a", "b", "c", "d", "e"])
    assert msgs[0]["content"] == DETECT_SYSTEM and msgs[2]["content"] == "[1, 0, 1]"
    assert msgs[1]["content"].count("Example ") == 3


def test_scorer_samples_mark_what_delphi_marks():
    act = Context(["a", "b", "c", "d"], [0.0, 1.0, 0.2, 0.5], center=1)
    quiet = [Context(["p", "q", "r", "s", "t"], [0.0] * 5, center=2) for _ in range(20)]
    lc = LatentContexts(0, [act], [act, act], quiet)
    det = scorer_samples("detection", lc, CONFIG, random.Random(0))
    assert sorted(det, key=lambda s: s[1])[-1] == ("abcd", True) and "<<" not in "".join(t for t, _ in det)
    fuzz = scorer_samples("fuzzing", lc, CONFIG, random.Random(0))
    assert sum(label for _, label in fuzz) == 2 and ("a<<b>>c<<d>>", True) in fuzz  # 0.5 >= 0.3 x 1.0
    # non-activating: ceil(mean 2 marks) = 2 tokens marked, the centre "r" always one of them
    for text, label in fuzz:
        if not label:
            assert text.count("<<") + text.count(">><<") in (1, 2) and "r" in "".join(re.findall("<<(.*?)>>", text))
            assert sum(len(s) for s in re.findall("<<(.*?)>>", text)) == 2
    with pytest.raises(ValueError, match="unknown scorer 'x'"):
        scorer_samples("x", lc, CONFIG, random.Random(0))


@pytest.mark.parametrize(
    ("answer", "n", "labels"),
    [
        ("[1, 0, 1]", 3, [1, 0, 1]),
        ("Sure! [1,0,1]\nbecause ...", 3, [1, 0, 1]),
        ("['yes', 'no']", 2, [1, 0]),
        ("[True, False, True]", 3, [1, 0, 1]),
        ("Example 1: yes\nExample 2: No\nExample 3: 1", 3, [1, 0, 1]),
        ("1 0 0 1", 4, [1, 0, 0, 1]),
        ("yes, no", 2, [1, 0]),
        ("None", 3, [0, 0, 0]),
        ("2, 4", 5, [0, 1, 0, 1, 0]),
        ("1 and 3.", 3, [1, 0, 1]),
        ("[1, 0]", 3, None),  # wrong count
        ("7", 5, None),  # no such example
        ("I think the latent is about boats", 3, None),
        ("", 2, None),
    ],
)
def test_parse_labels(answer, n, labels):
    assert parse_labels(answer, n) == (None if labels is None else [bool(x) for x in labels])


@pytest.mark.parametrize(
    ("answer", "explanation"),
    [
        ("Explanation: places where ships moor.", "places where ships moor"),
        ('Let me think.\n[EXPLANATION]: The token "er" in comparatives', 'The token "er" in comparatives'),
        ("This neuron activates on words about money.", "words about money"),
        ("  'the <<harbour>> word'\nmore text", "the harbour word"),
        ("", ""),
    ],
)
def test_parse_explanation(answer, explanation):
    assert parse_explanation(answer) == explanation


def test_derangement():
    for seed in range(20):
        p = derangement(5, random.Random(seed))
        assert sorted(p) == list(range(5)) and all(p[i] != i for i in range(5))
    with pytest.raises(ValueError, match="at least 2 latents"):
        derangement(1, random.Random(0))


def _expected_detection(lc: LatentContexts, key: str) -> float:
    """Balanced accuracy of "the context holds `key`", computed from the contexts themselves."""
    tpr = sum(key in "".join(c.tokens).split() for c in lc.activating) / len(lc.activating)
    tnr = sum(key not in "".join(c.tokens).split() for c in lc.non_activating) / len(lc.non_activating)
    return (tpr + tnr) / 2


def test_perfect_explanation_beats_the_shuffled_control(found, tmp_path):
    judge = KeywordJudge()
    assert isinstance(judge, ChatBackend)
    result = run_autointerp(found, judge, config=CONFIG, progress=False)
    by_latent = {li.latent: li for li in result.latents}
    for lc in found:
        li = by_latent[lc.latent]
        assert li.explanation == f"the token {word(KEY[lc.latent]).strip()}"
        assert li.scores["detection"].score == 1.0 and li.scores["fuzzing"].score == 1.0
        assert li.shuffled_from != lc.latent and li.shuffled_from in by_latent
        other_key = word(KEY[li.shuffled_from]).strip()
        assert li.shuffled_scores["detection"].score == pytest.approx(_expected_detection(lc, other_key))
        assert li.shuffled_scores["fuzzing"].score <= 0.5 + 1 / 6  # only a random mark on other_key scores
        counts = li.scores["detection"]
        assert counts.true_positives + counts.false_negatives == 4 and counts.n_unparsed == 0
    s = result.summary()
    assert s["detection"] == 1.0 and s["fuzzing"] == 1.0
    assert 0.4 <= s["detection_shuffled"] <= 0.6 and 0.4 <= s["fuzzing_shuffled"] <= 0.6
    assert s["detection_unparsed"] == 0 and s["n_latents"] == len(KEY)
    path = write_autointerp(result, tmp_path)
    assert json.loads(path.read_text())["summary"] == s
    assert (tmp_path / "autointerp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class Mumbler:
    name = "mumbler"

    def chat(self, messages, max_tokens: int, temperature: float = 0.0) -> str:
        return "Hmm, hard to say."


def test_unreadable_answers_are_counted_not_guessed(found):
    result = run_autointerp(found[:2], Mumbler(), config=CONFIG, progress=False)
    for li in result.latents:
        assert li.explanation == "Hmm, hard to say"  # the first line, when nothing better is there
        for s in [*li.scores.values(), *li.shuffled_scores.values()]:
            assert math.isnan(s.score) and s.n_unparsed == 4 + 6 and s.true_positives == 0
            assert (
                s.unparsed_answers == ["Hmm, hard to say."] * 2
            )  # one per prompt of 5 and s.to_dict()["score"] is None
    summary = result.summary()
    assert summary["detection"] is None and summary["detection_unparsed"] == 2 * 2 * 10


def test_given_explanations_and_n_latents(found):
    given = {lc.latent: "nothing at all" for lc in found}
    result = run_autointerp(found, None, KeywordJudge(), CONFIG, n_latents=3, explanations=given, progress=False)
    assert len(result.latents) == 3 and result.explainer == "given"
    assert all(li.explanation == "nothing at all" for li in result.latents)
    assert result.summary()["detection"] == 0.5 == result.summary()["detection_shuffled"]  # says 0 to all
    with pytest.raises(ValueError, match="no latent with contexts"):
        run_autointerp([], KeywordJudge(), config=CONFIG)


def test_config_counts():
    d = AutointerpConfig.delphi()
    assert (d.n_sampled_explain, d.n_sampled_score, d.n_non_activating, d.examples_per_prompt) == (40, 50, 50, 5)
    s = AutointerpConfig()
    assert (s.n_top_explain, s.n_sampled_explain, s.n_top_score, s.n_sampled_score, s.n_non_activating) == (
        10, 5, 2, 2, 10,
    )  # fmt: skip
    with pytest.raises(ValueError, match="n_non_activating"):
        AutointerpConfig(n_non_activating=-1)
    with pytest.raises(ValueError, match="no context"):
        AutointerpConfig(n_top_explain=0, n_sampled_explain=0)
    with pytest.raises(ValueError, match="highlight_threshold"):
        AutointerpConfig(highlight_threshold=0)


def test_openai_backend_round_trip_through_a_local_server(found, monkeypatch):
    direct = run_autointerp(found, KeywordJudge(), config=CONFIG, progress=False)
    # huggingface_hub refuses every request in offline mode, 127.0.0.1 included: first that message
    with pytest.raises(ChatBackendError, match="HF_HUB_OFFLINE=1"):
        OpenAIChat("http://127.0.0.1:9").chat([{"role": "user", "content": "hi"}], 4)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with ChatServer(KeywordJudge.answer) as server:
        backend = OpenAIChat(server.url, model="judge-1")
        served = run_autointerp(found, backend, config=CONFIG, progress=False)
    assert [li.to_dict() for li in served.latents] == [li.to_dict() for li in direct.latents]
    assert served.explainer == served.scorer == "judge-1"
    body = server.requests[0]["body"]
    assert server.requests[0]["path"] == "/v1/chat/completions"
    assert (
        body["model"] == "judge-1"
        and body["temperature"] == 0.0
        and body["max_tokens"] == CONFIG.max_tokens_explanation
    )
    assert body["messages"][0] == {"role": "system", "content": EXPLAIN_SYSTEM}


@pytest.mark.parametrize(
    ("fail", "message"), [("500", "failed: .*500"), ("json", "sent a reply that is not an OpenAI chat completion")]
)
def test_openai_backend_errors_name_the_url(fail, message, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with ChatServer(KeywordJudge.answer, fail=fail) as server:
        with pytest.raises(ChatBackendError, match=f"chat endpoint {re.escape(server.url)} {message}"):
            OpenAIChat(server.url).chat([{"role": "user", "content": "hi"}], 4)
    with pytest.raises(ChatBackendError, match="could not be reached"):
        OpenAIChat(server.url).chat([{"role": "user", "content": "hi"}], 4)  # the server is gone


def _browser_result(found):
    return run_autointerp(found[:3], KeywordJudge(), config=CONFIG, progress=False)


def test_features_json_and_page_carry_explanations(found, tmp_path):
    feats = torch.relu(torch.randn(6, 16, 24) - 1)
    ids = torch.randint(0, 50, (6, 16))
    data = make_browser_data(feats, ids, lambda i: f"t{i[0]} ", "autointerp", {"d_sae": 24})
    result = _browser_result(found)
    add_explanations(data, result.neuronpedia_explanations(), result.summary())
    write_browser_files(data, tmp_path)
    saved = json.loads((tmp_path / "features.json").read_text())
    assert saved["autointerp"]["detection"] == 1.0 and saved["autointerp"]["n_latents"] == 3
    [ex] = saved["features"][1]["explanations"]
    assert ex["description"] == "the token tok011" and ex["typeName"] == "hubsae_autointerp"
    assert ex["explanationModelName"] == "keyword-judge"
    names = [s["explanationScoreTypeName"] for s in ex["scores"]]
    assert names == ["hubsae_detection", "hubsae_fuzz"] and ex["scores"][0]["value"] == 1.0
    details = json.loads(ex["scores"][0]["jsonDetails"])
    li = result.latents[1]
    assert details["shuffled_score"] == li.shuffled_scores["detection"].score
    assert details["shuffled_from"] == li.shuffled_from and details["true_positives"] == 4
    assert saved["features"][7]["explanations"] == []
    with pytest.raises(ValueError, match=r"latents \[30\] outside"):
        add_explanations(data, {30: []})
    if CHROMIUM is None:
        pytest.skip("chromium is not installed: the page itself is not checked")
    url = (tmp_path / "index.html").as_uri()
    dom = _chromium(tmp_path, "--dump-dom", url + "#feature=1").stdout
    assert 'data-status="ok"' in dom and '<p id="explanation">the token tok011</p>' in dom
    assert '<section id="explsec">' in dom and "<td>hubsae_fuzz</td>" in dom
    assert "autointerp detection (real / shuffled)" in dom
    dom = _chromium(tmp_path, "--dump-dom", url + "#feature=7").stdout
    assert '<section id="explsec" hidden="">' in dom


@pytest.fixture(scope="module")
def smollm2():
    from hubsae.llm import load_smollm2

    return load_smollm2()


@pytest.mark.slow
def test_smollm2_explains_and_scores_offline(smollm2):
    from hubsae.eval import text_contexts
    from hubsae.saes import TopKSAE, TopKSAEConfig

    model, tok = smollm2
    text = "The ship sailed into the harbour at dawn. Fishing boats filled the old port, and the docks were busy."
    sae = TopKSAE(TopKSAEConfig(d_in=model.config.hidden_size, d_sae=32, k=4, hookpoint="model.layers.2")).eval()
    config = AutointerpConfig(
        n_top_explain=2, n_sampled_explain=0, n_top_score=1, n_sampled_score=0, n_non_activating=1,
        radius=3, examples_per_prompt=2, max_tokens_explanation=12,
    )  # fmt: skip
    chat = TransformersChat(model, tok, name="SmolLM2-135M-Instruct")
    found = collect_contexts(model, sae, text_contexts([text] * 3, tok, 16), tok, config, progress=False)
    result = run_autointerp(found, chat, config=config, n_latents=2, progress=False)
    assert len(result.latents) == 2 and result.explainer == "SmolLM2-135M-Instruct"
    n_shown = {lc.latent: len(lc.activating) + len(lc.non_activating) for lc in found}
    for li in result.latents:
        assert isinstance(li.explanation, str) and li.raw_explanation
        for s in [*li.scores.values(), *li.shuffled_scores.values()]:
            counted = s.true_positives + s.false_negatives + s.true_negatives + s.false_positives
            assert counted + s.n_unparsed == n_shown[li.latent] > 0  # every context answered or counted
            assert math.isnan(s.score) or 0.0 <= s.score <= 1.0
    json.dumps(result.to_dict())  # JSON-able


def test_sampled_only_counts_as_delphi(setup):
    model, sae, ctxs = setup
    config = AutointerpConfig(
        n_top_explain=0, n_sampled_explain=3, n_top_score=0, n_sampled_score=2, n_non_activating=3, radius=3
    )
    found = collect_contexts(model, sae, ctxs, WordTokenizer(), config, latents=[0, 5], progress=False)
    assert [lc.latent for lc in found] == [0, 5]
    for lc in found:
        key = word(KEY[lc.latent]).strip()
        assert len(lc.explain) == 3 and len(lc.activating) == 2 and len(lc.non_activating) == 3
        assert all(c.tokens[c.center].strip() == key for c in lc.explain + lc.activating)
    with pytest.raises(ValueError, match="subset of 0..5"):
        collect_contexts(model, sae, ctxs, WordTokenizer(), config, latents=[6])


def test_report_browser_data_carries_autointerp(setup, found):
    from hubsae.eval import evaluate
    from hubsae.eval.report import browser_data

    model, sae, ctxs = setup
    [evaluation] = evaluate(model, sae, ctxs[:8], n_examples=3, special_ids=[0, 1, 2], progress=False)
    result = _browser_result(found)
    data = browser_data(evaluation, sae, model, WordTokenizer(), autointerp=result)
    assert data["autointerp"] == result.summary()
    assert [len(f["explanations"]) for f in data["features"]] == [1, 1, 1, 0, 0, 0]
