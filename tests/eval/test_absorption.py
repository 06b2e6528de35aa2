"""Feature absorption on constructed SAEs with a known answer, and one offline end-to-end run.

A ReLU SAE whose latents are the letters' directions scores no absorption; one where half of the
"a" words are carried by token-specific latents (decoder = the "a" direction plus the word's own
direction, while the main "a" latent is switched off on them) scores exactly that half.
"""

import math

import pytest
import torch
from transformers import AutoTokenizer

from hubsae.eval.absorption import (
    LETTERS,
    AbsorptionConfig,
    absorption,
    absorption_from_activations,
    absorption_scores,
    alphabetic_tokens,
    first_letter_prompt,
    plot_absorption,
)
from hubsae.eval.probes import train_test_split
from hubsae.llm import smollm2_path
from hubsae.plots import have_matplotlib
from hubsae.saes import ReLUSAE, ReLUSAEConfig

D = 72
PER_LETTER = 20
N_ABSORBED = 20  # of the 40 "a" words
N_LETTERS = 6  # words for a..f only (the other letters are skipped: no words), to keep the test short


def _words(gen: torch.Generator):
    """Activations: scale * letter direction (+ the word's own direction for absorbed "a" words) + noise."""
    eye = torch.eye(D)
    labels = torch.tensor([0] * 2 * PER_LETTER + [c for c in range(1, N_LETTERS) for _ in range(PER_LETTER)])
    scale = 1 + torch.rand(len(labels), generator=gen)
    acts = scale[:, None] * eye[labels] + 0.01 * torch.randn(len(labels), D, generator=gen)
    absorbed = torch.arange(N_ABSORBED)  # the first 20 "a" words
    acts[absorbed] += scale[absorbed, None] * eye[26 + absorbed]
    return acts, labels, absorbed


def _sae(d_sae: int, enc: torch.Tensor, dec: torch.Tensor) -> ReLUSAE:
    sae = ReLUSAE(ReLUSAEConfig(d_in=D, d_sae=d_sae, hookpoint="x")).eval()
    with torch.no_grad():
        sae.W_enc.copy_(enc)
        sae.W_dec.copy_(dec)
        sae.b_enc.fill_(-0.1)  # the noise never fires a latent
        sae.b_dec.zero_()
    return sae


def _letter_sae() -> ReLUSAE:
    eye = torch.eye(D)
    return _sae(26, eye[:26].T, eye[:26])


def _splitting_sae() -> ReLUSAE:
    """Latents 0..25 the letters, 26.. one per absorbed "a" word; latent 0 is off on absorbed words."""
    eye = torch.eye(D)
    word_dirs = eye[26 : 26 + N_ABSORBED]
    enc = torch.cat([eye[:26], word_dirs]).T.clone()
    enc[:, 0] -= 2 * word_dirs.sum(0)
    dec = torch.cat([eye[:26], eye[0] + word_dirs])
    return _sae(26 + N_ABSORBED, enc, dec)


def test_letter_latents_score_no_absorption():
    acts, labels, _ = _words(torch.Generator().manual_seed(0))
    result = absorption_from_activations(acts, labels, _letter_sae(), AbsorptionConfig(seed=1))
    assert len(result.letters) == N_LETTERS and len(result.skipped) == 26 - N_LETTERS
    assert result.mean_absorption_fraction < 0.01 and result.mean_full_absorption < 0.01
    assert all(r.main_latents == [LETTERS.index(r.letter)] for r in result.letters)


def test_token_specific_latents_absorb_their_letter():
    acts, labels, absorbed = _words(torch.Generator().manual_seed(0))
    config = AbsorptionConfig(seed=1)
    result = absorption_from_activations(acts, labels, _splitting_sae(), config)
    a = next(r for r in result.letters if r.letter == "a")
    assert a.main_latents == [0]  # the word latents fire on one word each: no F1 jump, no split
    # the answer: the share of absorbed words among the "a" test words the probe finds
    test = train_test_split(len(acts), config.test_fraction, config.seed, labels)[1]
    a_test = test[labels[test] == 0]
    share = float(torch.isin(a_test, absorbed).float().mean())
    assert a.num_probe_true_positives == len(a_test)
    assert 0.25 < share < 0.9  # neither none nor all: the score must tell the two kinds of word apart
    assert math.isclose(a.mean_absorption_fraction, share, abs_tol=0.02)
    assert math.isclose(a.full_absorption_rate, share, abs_tol=0.02)
    others = [r for r in result.letters if r.letter != "a"]
    assert max(r.mean_absorption_fraction for r in others) < 0.01


def test_partial_absorption_fraction_formula():
    """One token, probe along x0: main latent carries 1 of 3, an aligned absorber 2 -> fraction 2/3."""
    config = AbsorptionConfig()
    decoder = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])  # main, absorber (cos 0.71), orthogonal
    latents = torch.tensor([[1.0, 2.0, 5.0]])
    acts = torch.tensor([[3.0, 7.0]])
    fraction, full = absorption_scores(acts, latents, decoder, torch.tensor([1.0, 0.0]), [0], config)
    assert math.isclose(float(fraction[0]), 2 / 3, rel_tol=1e-6) and not full[0]  # main fires: not full
    fraction, full = absorption_scores(
        acts, torch.tensor([[0.0, 3.0, 5.0]]), decoder, torch.tensor([1.0, 0.0]), [0], config
    )
    assert float(fraction[0]) == 1.0 and full[0]
    # an absorber carrying < 0.4 of the projection is not absorption
    fraction, _ = absorption_scores(
        acts, torch.tensor([[0.0, 1.0, 5.0]]), decoder, torch.tensor([1.0, 0.0]), [0], config
    )
    assert float(fraction[0]) == 0.0


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(smollm2_path())


def test_vocabulary_words_and_prompt(tokenizer):
    words = alphabetic_tokens(tokenizer)
    assert len(words) > 10_000
    assert all(w.strip().isascii() and w.strip().isalpha() for _, w in words)
    prompt = first_letter_prompt(" cat", [" dog", "Owl"], "{word} has the first letter:")
    assert prompt == "\n dog has the first letter: D\nOwl has the first letter: O\n cat has the first letter:"


def test_end_to_end_offline_on_a_tiny_llama(tokenizer, tmp_path):
    from tiny_models import WIDTH, tiny_llama_for, topk_sae

    model = tiny_llama_for(tokenizer)
    sae = topk_sae("model.layers.1", d_sae=64, k=8)
    config = AbsorptionConfig(max_words=260, icl_examples=3, max_k=3, min_probe_f1=0.0, batch_size=64)
    result = absorption(model, tokenizer, sae, config=config)
    out = result.to_dict()
    assert out["settings"]["hookpoint"] == "model.layers.1" and 200 < out["settings"]["num_words"] <= 260
    assert len(result.letters) + len(result.skipped) == 26 and result.letters
    for r in result.letters:
        assert 0 <= r.mean_absorption_fraction <= 1 and 0 <= r.full_absorption_rate <= 1
        assert 1 <= len(r.main_latents) <= 3 and all(0 <= i < 64 for i in r.main_latents)
    assert 0 <= result.mean_absorption_fraction <= 1 and WIDTH == sae.config.d_in
    if have_matplotlib():
        assert plot_absorption(result, tmp_path / "absorption.png").read_bytes()[:4] == b"\x89PNG"
