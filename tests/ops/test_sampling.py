"""Sampling: seeded reproducibility and draw frequencies against the exact
mixture q_T = a * p~_g^(T) + (1 - a) * p_b^(T), computed here in float64
independently of the kernel and of the reference."""

import pytest
import torch
from scipy import stats

import blendin_ext
from blendin_ext.testing.op_cases import confident_logits, random_guide_map

DRAWS = 200_000


def filtered_component(logits, ids, temperature, top_k, top_p):
    """p^(T) of one component after top-k then top-p, in float64, indexed
    like `logits`. Rank: larger logit first, ties to the smaller id."""
    x = logits.double()
    p = torch.softmax(x / temperature, 0)
    order = sorted(range(len(x)), key=lambda i: (-float(x[i]), int(ids[i])))
    order = [i for i in order if x[i] != float("-inf")]
    if top_k:
        order = order[:top_k]
    if top_p is not None:
        mass = sum(float(p[i]) for i in order)
        kept, before = [], 0.0
        for i in order:
            if before / mass >= top_p:
                break
            kept.append(i)
            before += float(p[i])
        order = kept
    keep = torch.zeros(len(x), dtype=torch.bool)
    keep[order] = True
    p = torch.where(keep, p, torch.zeros_like(p))
    return p / p.sum()


def exact_mixture(base, guide, alpha, temperature, top_k=None, top_p=None, guide_to_base=None):
    vocab = len(base)
    p_b = filtered_component(base, torch.arange(vocab), temperature, top_k, top_p)
    if guide_to_base is None:
        p_g = filtered_component(guide, torch.arange(vocab), temperature, top_k, top_p)
    else:
        m = guide_to_base.long()
        masked = torch.where(m >= 0, guide, torch.tensor(float("-inf")))
        moved = filtered_component(masked, m, temperature, top_k, top_p)
        p_g = torch.zeros(vocab, dtype=torch.float64)
        p_g[m[m >= 0]] = moved[m >= 0]
    return alpha * p_g + (1 - alpha) * p_b


def assert_frequencies(tokens, expected):
    counts = torch.bincount(tokens, minlength=len(expected)).double()
    assert counts[expected == 0].sum() == 0, "a token with zero mixture mass was drawn"
    support = expected > 0
    observed, wanted = counts[support], expected[support] * len(tokens)
    if len(observed) > 1:
        result = stats.chisquare(observed.numpy(), wanted.numpy())
        assert result.pvalue > 1e-4, f"chi-square p = {result.pvalue:.2e}"
    tv = 0.5 * (counts / len(tokens) - expected).abs().sum()
    assert tv < 0.01, f"total variation {tv:.4f}"


@pytest.mark.parametrize(
    "temperature,top_k,top_p",
    [
        (1.0, None, None),
        (0.5, None, None),
        (2.0, 3, None),
        (1.0, None, 0.7),
        (0.8, 4, 0.8),
        (1.3, 1, None),
    ],
)
@pytest.mark.parametrize("alpha", [0.3, "auto"])
def test_draw_frequencies_match_exact_mixture(temperature, top_k, top_p, alpha):
    gen = torch.Generator().manual_seed(1)
    base, guide = torch.randn(1, 7, generator=gen), torch.randn(1, 7, generator=gen) * 1.5
    out = blendin_ext.blend_step(
        base.expand(DRAWS, 7),
        guide.expand(DRAWS, 7),
        gamma=2.0,
        alpha=alpha,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=2024,
        offset=3,
    )
    a = float(out.alpha[0])
    assert torch.all(out.alpha == a)
    expected = exact_mixture(base[0], guide[0], a, temperature, top_k, top_p)
    assert_frequencies(out.tokens, expected)


def test_draw_frequencies_with_vocabulary_map():
    gen = torch.Generator().manual_seed(2)
    base, guide = torch.randn(1, 9, generator=gen), torch.randn(1, 12, generator=gen)
    mapping = random_guide_map(12, 9, seed=3, unmapped=0.4)
    out = blendin_ext.blend_step(
        base.expand(DRAWS, 9),
        guide.expand(DRAWS, 12),
        gamma=2.0,
        alpha=0.6,
        temperature=1.2,
        top_k=5,
        seed=7,
        guide_to_base=mapping,
    )
    expected = exact_mixture(base[0], guide[0], 0.6, 1.2, top_k=5, guide_to_base=mapping)
    assert_frequencies(out.tokens, expected)


def test_frequencies_on_a_large_vocabulary():
    base = confident_logits(1, 50257, seed=4)
    guide = confident_logits(1, 50257, seed=5)
    out = blendin_ext.blend_step(
        base.expand(20_000, -1),
        guide.expand(20_000, -1),
        gamma=2.0,
        alpha=0.5,
        temperature=0.7,
        top_k=20,
        seed=11,
    )
    expected = exact_mixture(base[0], guide[0], 0.5, 0.7, top_k=20)
    assert_frequencies(out.tokens, expected)


def test_same_seed_and_offset_give_the_same_tokens():
    base, guide = confident_logits(64, 50257, seed=1), confident_logits(64, 50257, seed=2)
    kwargs = dict(gamma=0.9, temperature=1.0, top_p=0.95)
    first = blendin_ext.blend_step(base, guide, seed=5, offset=17, **kwargs)
    again = blendin_ext.blend_step(base, guide, seed=5, offset=17, **kwargs)
    assert torch.equal(first.tokens, again.tokens)
    fresh = blendin_ext.blend_step(base, guide, seed=5, offset=18, **kwargs)
    other_seed = blendin_ext.blend_step(base, guide, seed=6, offset=17, **kwargs)
    assert (fresh.tokens != first.tokens).sum() > 16
    assert (other_seed.tokens != first.tokens).sum() > 16


def test_per_row_seed_makes_draws_independent_of_batch_position():
    base, guide = confident_logits(8, 5003, seed=3), confident_logits(8, 5003, seed=4)
    seeds = torch.arange(100, 108)
    offsets = torch.arange(8) * 3
    batch = blendin_ext.blend_step(
        base, guide, gamma=0.8, temperature=1.0, seed=seeds, offset=offsets
    )
    for row in [5, 0, 7]:
        alone = blendin_ext.blend_step(
            base[row : row + 1],
            guide[row : row + 1],
            gamma=0.8,
            temperature=1.0,
            seed=seeds[row : row + 1],
            offset=offsets[row : row + 1],
        )
        assert int(alone.tokens) == int(batch.tokens[row])
    shuffled = torch.tensor([3, 1, 0, 2, 7, 6, 5, 4])
    again = blendin_ext.blend_step(
        base[shuffled],
        guide[shuffled],
        gamma=0.8,
        temperature=1.0,
        seed=seeds[shuffled],
        offset=offsets[shuffled],
    )
    assert torch.equal(again.tokens, batch.tokens[shuffled])


def test_philox_known_answers():
    from blendin_ext.ops.reference import philox4x32_10

    # Random123's published known-answer vectors for Philox4x32-10.
    assert philox4x32_10((0, 0, 0, 0), (0, 0)) == (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)
    ones = 0xFFFFFFFF
    assert philox4x32_10((ones,) * 4, (ones, ones)) == (
        0x408F276D,
        0x41C83B0E,
        0xA20BC7C6,
        0x6D5451FD,
    )
    assert philox4x32_10(
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0)
    ) == (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)
