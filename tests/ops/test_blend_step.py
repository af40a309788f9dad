"""The CPU blend_step op against the float32 reference of the spec."""

import math

import pytest
import torch

import blendin_ext
from blendin_ext.testing.op_cases import (
    DTYPES,
    STRATEGIES,
    assert_matches_reference,
    confident_logits,
    mask_some,
    random_guide_map,
)

VOCABS = [1, 7, 50257, 128256, 262144]
BATCHES = [0, 1, 3, 64]


def _pair(batch, vocab, dtype=torch.float32, seed=0, guide_vocab=None, pad=0):
    base = confident_logits(batch, vocab, seed=seed, dtype=dtype, pad=pad)
    guide = confident_logits(batch, guide_vocab or vocab, seed=seed + 1, dtype=dtype, pad=pad)
    return base, guide


@pytest.mark.parametrize("vocab", VOCABS)
@pytest.mark.parametrize("batch", BATCHES)
def test_blendin_greedy_matches_reference(batch, vocab):
    if batch * vocab > 64 * 128256:
        batch = 16  # keep the largest case quick; 64 x 128256 covers the wide batch
    base, guide = _pair(batch, vocab, seed=batch + vocab)
    out = blendin_ext.blend_step(base, guide, **STRATEGIES["blendin"])
    assert out.tokens.shape == (batch,) and out.tokens.dtype == torch.int64
    assert_matches_reference(out, base, guide, **STRATEGIES["blendin"])


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_strategy_and_dtype_greedy(strategy, dtype):
    base, guide = _pair(24, 50257, dtype=dtype, seed=7)
    out = blendin_ext.blend_step(base, guide, **STRATEGIES[strategy])
    assert_matches_reference(out, base, guide, **STRATEGIES[strategy])


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_strategy_and_dtype_sampled(strategy, dtype):
    base, guide = _pair(16, 7919, dtype=dtype, seed=11)
    kwargs = dict(STRATEGIES[strategy], temperature=0.8, seed=1234, offset=5)
    out = blendin_ext.blend_step(base, guide, **kwargs)
    assert_matches_reference(out, base, guide, **kwargs)


@pytest.mark.parametrize("top_k,top_p", [(1, None), (5, None), (None, 0.5), (40, 0.9), (3, 0.3)])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 1.7])
def test_top_k_top_p_sampling_matches_reference(top_k, top_p, temperature):
    base, guide = _pair(32, 50257, seed=3, dtype=torch.bfloat16)
    kwargs = dict(
        gamma=0.6,
        alpha="auto",
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=99,
        offset=2,
    )
    out = blendin_ext.blend_step(base, guide, **kwargs)
    assert_matches_reference(out, base, guide, **kwargs)


@pytest.mark.parametrize("map_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_guide_vocabulary_map(map_dtype, temperature):
    base, guide = _pair(12, 32000, seed=5, guide_vocab=49152)
    mapping = random_guide_map(49152, 32000, seed=5, dtype=map_dtype)
    kwargs = dict(gamma=0.7, alpha="auto", temperature=temperature, seed=4, guide_to_base=mapping)
    out = blendin_ext.blend_step(base, guide, **kwargs)
    assert_matches_reference(out, base, guide, **kwargs)
    # The guide's choices are always base ids that have a guide twin.
    guide_only = blendin_ext.blend_step(
        base, guide, gamma=2.0, alpha=1.0, guide_to_base=mapping, temperature=temperature, seed=4
    )
    inverse = blendin_ext.guide_map(mapping, 32000).base_to_guide
    assert (inverse[guide_only.tokens] >= 0).all()


def test_prebuilt_guide_map_object_equals_raw_tensor():
    base, guide = _pair(4, 1000, seed=8, guide_vocab=1500)
    mapping = random_guide_map(1500, 1000, seed=8)
    a = blendin_ext.blend_step(base, guide, guide_to_base=mapping, gamma=2.0)
    b = blendin_ext.blend_step(
        base, guide, guide_to_base=blendin_ext.guide_map(mapping, 1000), gamma=2.0
    )
    assert torch.equal(a.tokens, b.tokens)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_strided_rows_and_masks(dtype):
    base, guide = _pair(9, 50257, dtype=dtype, seed=21, pad=13)
    assert not base.is_contiguous()
    base, guide = mask_some(base, 0.3, seed=1), mask_some(guide, 0.3, seed=2)
    for kwargs in (dict(gamma=0.5), dict(gamma=0.5, temperature=1.0, seed=3, top_k=50)):
        out = blendin_ext.blend_step(base, guide, **kwargs)
        assert_matches_reference(out, base, guide, **kwargs)
        chosen = out.tokens[:, None]
        # a token masked in both models has zero mixture mass
        assert (
            torch.isfinite(base.float().gather(1, chosen))
            | torch.isfinite(guide.float().gather(1, chosen))
        ).all()


def test_per_row_parameters_mix_strategies_in_one_batch():
    names = sorted(STRATEGIES)
    base, guide = _pair(len(names) * 4, 4099, seed=31)
    rows = len(names) * 4
    gamma = torch.tensor([STRATEGIES[names[i % len(names)]]["gamma"] for i in range(rows)])
    alpha = torch.tensor(
        [
            -1.0
            if STRATEGIES[names[i % len(names)]]["alpha"] == "auto"
            else STRATEGIES[names[i % len(names)]]["alpha"]
            for i in range(rows)
        ]
    )
    temperature = torch.tensor([0.0, 0.7] * (rows // 2))
    kwargs = dict(gamma=gamma, alpha=alpha, temperature=temperature, seed=5)
    out = blendin_ext.blend_step(base, guide, **kwargs)
    assert_matches_reference(out, base, guide, **kwargs)
    for i in range(rows):  # each row equals the same strategy run on its own
        one = blendin_ext.blend_step(
            base[i : i + 1],
            guide[i : i + 1],
            gamma=float(gamma[i]),
            alpha="auto" if alpha[i] < 0 else float(alpha[i]),
            temperature=float(temperature[i]),
            seed=5,
            offset=0,
        )
        if temperature[i] == 0:
            assert int(one.tokens) == int(out.tokens[i])


def test_exact_greedy_when_candidates_cannot_decide():
    # Nearly flat rows: the top-8 lists cannot bound the mixture's argmax, so
    # the kernel must fall back to its full pass and still be exact.
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(6, 50257, generator=gen) * 0.01
    guide = torch.randn(6, 50257, generator=gen) * 0.01
    for alpha in (0.3, 0.5, "auto"):
        out = blendin_ext.blend_step(base, guide, gamma=1.0, alpha=alpha)
        assert out.intervened.all()
        assert_matches_reference(out, base, guide, gamma=1.0, alpha=alpha)


def test_greedy_ties_go_to_the_smallest_id():
    base = torch.zeros(2, 10)
    base[1, [3, 7]] = 5.0
    guide = torch.zeros(2, 10)
    guide[1, [7, 3]] = 5.0
    out = blendin_ext.blend_step(base, guide, gamma=2.0, alpha=0.5)
    assert out.tokens.tolist() == [0, 3]
    only_guide = blendin_ext.blend_step(base, guide, gamma=2.0, alpha=1.0)
    assert only_guide.tokens.tolist() == [0, 3]


def test_masked_token_is_never_chosen():
    base = torch.full((1, 5), -math.inf)
    base[0, 3] = 0.0
    guide = torch.zeros(1, 5)
    guide[0, 3] = -math.inf
    out = blendin_ext.blend_step(base, guide, gamma=2.0, alpha=0.99)
    assert int(out.tokens) in (0, 1, 2, 4)  # the guide's mass dominates
    base_only = blendin_ext.blend_step(base, guide, gamma=0.0)
    assert int(base_only.tokens) == 3
    draws = blendin_ext.blend_step(
        base.expand(4000, 5), guide.expand(4000, 5), gamma=2.0, alpha=0.5, temperature=1.0, seed=1
    )
    # base mass only on 3, guide mass only off 3: both appear, nothing masked twice
    assert set(draws.tokens.tolist()) <= {0, 1, 2, 3, 4}
    masked_both = torch.tensor([[0.0, -math.inf, 0.0, -math.inf, 0.0]])
    many = blendin_ext.blend_step(
        masked_both.expand(4000, 5), masked_both.expand(4000, 5), gamma=2.0, temperature=2.0, seed=2
    )
    assert not ({1, 3} & set(many.tokens.tolist()))


def test_agreement_and_confidences_by_hand():
    base = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    guide = torch.log(torch.tensor([[0.1, 0.7, 0.2]]))
    out = blendin_ext.blend_step(base, guide, gamma=0.6, alpha="auto", agree_bonus=0.1)
    assert out.intervened.item()
    torch.testing.assert_close(out.base_top_prob, torch.tensor([0.5]))
    torch.testing.assert_close(out.guide_top_prob, torch.tensor([0.7]))
    torch.testing.assert_close(out.agree, torch.tensor([0.3]))
    alpha = 0.7 / 1.2 + 0.1 * 0.3
    torch.testing.assert_close(out.alpha, torch.tensor([alpha]))
    q = torch.tensor([0.1, 0.7, 0.2]) * alpha + torch.tensor([0.5, 0.3, 0.2]) * (1 - alpha)
    assert int(out.tokens) == int(q.argmax())
