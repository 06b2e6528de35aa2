import pytest
import torch

from hubsae.eval.examples import PAD_TOKEN, ActivationHistogram, TopActivations


def _sparse_features(n_seq, T, F):
    f = torch.relu(torch.randn(n_seq, T, F) - 0.8)  # continuous values: no ties
    f[:, :, 3] = 0.0  # latent 3 never fires
    f[:2, :, 4] = torch.rand(2, T) + 0.1  # latent 4 fires in only two sequences
    f[2:, :, 4] = 0.0
    return f


def test_top_activations_equal_brute_force_sort():
    n_seq, T, F, k, r = 23, 9, 6, 5, 2
    feats = _sparse_features(n_seq, T, F)
    ids = torch.randint(0, 100, (n_seq, T))
    mask = torch.ones(n_seq, T, dtype=torch.bool)
    mask[5, 6:] = False  # padding: never an example
    feats[5, 7, 0] = 100.0
    top = TopActivations(F, k=k, radius=r)
    for i in range(0, n_seq, 4):  # batches of 4 (the last one shorter)
        top.update(feats[i : i + 4], ids[i : i + 4], mask[i : i + 4])
    masked = feats * mask.unsqueeze(-1)
    peak, pos = masked.max(dim=1)  # (n_seq, F)
    for f in range(F):
        order = sorted(range(n_seq), key=lambda s: -float(peak[s, f]))
        order = [s for s in order if peak[s, f] > 0][:k]
        got = top.examples(f)
        assert [e["seq"] for e in got] == order
        assert [e["value"] for e in got] == pytest.approx([float(peak[s, f]) for s in order])
        for e in got:
            p = int(pos[e["seq"], f])
            lo, hi = max(p - r, 0), min(p + r + 1, T)
            assert e["pos"] == p
            assert e["tokens"] == ids[e["seq"], lo:hi].tolist()
            assert e["acts"] == pytest.approx(masked[e["seq"], lo:hi, f].tolist())
    assert top.examples(3) == []
    assert len(top.examples(4)) == 2
    assert top.examples(0)[0]["value"] != 100.0  # the masked spike was ignored


def test_window_padding_at_sequence_edges():
    feats = torch.zeros(1, 4, 2)
    feats[0, 0, 0] = 1.0
    feats[0, 3, 1] = 2.0
    top = TopActivations(2, k=1, radius=2)
    top.update(feats, torch.tensor([[10, 11, 12, 13]]))
    assert top.tokens[0, 0].tolist() == [PAD_TOKEN, PAD_TOKEN, 10, 11, 12]
    assert top.tokens[1, 0].tolist() == [11, 12, 13, PAD_TOKEN, PAD_TOKEN]
    assert top.examples(1)[0]["acts"] == [0.0, 0.0, 2.0]


def test_top_activations_shape_errors():
    top = TopActivations(4, k=2)
    with pytest.raises(ValueError, match="must be"):
        top.update(torch.zeros(2, 3, 5), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="k > 0"):
        TopActivations(4, k=0)


def test_activation_histogram_is_exact_after_width_doubling():
    F, bins = 5, 10
    hist = ActivationHistogram(F, bins=bins)
    batches = [torch.relu(torch.randn(50, F)) * scale for scale in (0.1, 1.0, 7.0, 0.5, 40.0)]
    for b in batches:
        hist.update(b)
    allf = torch.cat(batches).double()
    for f in range(F):
        w = float(hist.width[f])
        v = allf[:, f][allf[:, f] > 0]
        assert float(v.max()) < bins * w  # every value inside the final range
        expected = torch.bincount(torch.floor(v / w).long(), minlength=bins)
        assert hist.counts[f].tolist() == expected.tolist()
        assert hist.edges(f)[-1] == pytest.approx(bins * w)
    assert hist.width[0] > 0.0


def test_activation_histogram_dead_latent_and_odd_bins():
    hist = ActivationHistogram(2, bins=4)
    hist.update(torch.tensor([[0.0, 1.0], [0.0, 3.0]]))
    assert hist.counts[0].tolist() == [0, 0, 0, 0] and hist.width[0] == 0
    assert hist.counts[1].sum() == 2
    with pytest.raises(ValueError, match="even"):
        ActivationHistogram(2, bins=5)


def test_sampled_examples_are_a_uniform_sample_of_firing_sequences():
    n_seq, T = 30, 5
    feats = torch.rand(n_seq, T, 2) + 0.01  # latent 0 fires in every sequence
    feats[:, :, 1] = 0.0
    feats[[3, 7], 2, 1] = 1.0  # latent 1 fires in two sequences only
    ids = torch.randint(0, 50, (n_seq, T))
    hits = torch.zeros(n_seq)
    trials = 250
    for seed in range(trials):
        s = TopActivations(2, k=3, radius=1, sample=True, seed=seed)
        for i in range(0, n_seq, 8):
            s.update(feats[i : i + 8], ids[i : i + 8])
        got = [e["seq"] for e in s.examples(0)]
        assert len(set(got)) == 3
        hits[got] += 1
        assert sorted(e["seq"] for e in s.examples(1)) == [3, 7]  # fewer firing than k: all of them
        values = [e["value"] for e in s.examples(0)]
        assert values == sorted(values, reverse=True)
        assert values == pytest.approx([float(feats[q, :, 0].max()) for q in got])
    # each sequence is kept with probability k / n_seq = 0.1 (binomial sd 0.019 over 250 trials)
    assert (hits / trials - 0.1).abs().max() < 0.08
