"""The near-tie rule that lets two implementations' tokens differ
(blendin_ext.testing.near_tie): it accepts genuine ties of the exact step,
built here by hand so that each sits within float rounding of a decision,
and rejects real mismatches of every kind."""

import math

import pytest
import torch

import blendin_ext
from blendin_ext.ops.reference import row_uniforms
from blendin_ext.testing.near_tie import REL_TIE, assert_tokens_agree
from blendin_ext.testing.op_cases import STRATEGIES, confident_logits

SEED, OFFSET = 77, 3


def _uniforms(row=0):
    """The (component, token) uniforms the op draws for `row` at SEED, OFFSET."""
    return row_uniforms(SEED, OFFSET, row)


def _agree(tokens, other, base, guide, **kwargs):
    assert_tokens_agree(
        torch.tensor(tokens), torch.tensor(other), base, guide, seed=SEED, offset=OFFSET, **kwargs
    )


def _disagree(tokens, other, base, guide, match, **kwargs):
    with pytest.raises(AssertionError, match=match):
        _agree(tokens, other, base, guide, **kwargs)


def test_equal_tokens_need_no_tie():
    base, guide = confident_logits(8, 1000, seed=1), confident_logits(8, 1000, seed=2)
    out = blendin_ext.blend_step(base, guide, **STRATEGIES["blendin"])
    assert_tokens_agree(out.tokens, out.tokens.clone(), base, guide, **STRATEGIES["blendin"])


def test_greedy_tie_of_one_component_is_accepted():
    base = torch.zeros(1, 9)
    base[0, 3] = 4.0
    base[0, 5] = torch.nextafter(torch.tensor(4.0), torch.tensor(0.0))  # one ulp below
    _agree([3], [5], base, base.clone(), gamma=0.0)


def test_greedy_tie_of_the_mixture_is_accepted():
    # the base favours 3 as much as the guide favours 5: q(3) == q(5) at alpha 0.5
    base, guide = torch.zeros(1, 9), torch.zeros(1, 9)
    base[0, 3], base[0, 5] = 5.0, 1.0
    guide[0, 5], guide[0, 3] = 5.0, 1.0
    _agree([3], [5], base, guide, gamma=2.0, alpha=0.5)


def test_greedy_mismatch_is_rejected():
    base, guide = confident_logits(6, 5000, seed=3), confident_logits(6, 5000, seed=4)
    kwargs = STRATEGIES["blendin"]
    out = blendin_ext.blend_step(base, guide, **kwargs)
    q = blendin_ext.ops.reference.evaluate(base, guide, dtype=torch.float64, **kwargs).mixture
    runner_up = q.topk(2, dim=-1).indices[:, 1]
    gaps = 1 - q.gather(1, runner_up[:, None]).squeeze(1) / q.max(-1).values
    row = int(gaps.argmin())  # the closest second place of the batch is still no tie
    assert gaps[row] > 100 * REL_TIE
    wrong = out.tokens.clone()
    wrong[row] = runner_up[row]
    with pytest.raises(AssertionError, match=f"row {row}: .*below the largest"):
        assert_tokens_agree(wrong, out.tokens, base, guide, **kwargs)


def test_bad_row_is_never_a_tie():
    base = torch.zeros(2, 9)
    base[1, 2] = math.nan
    _disagree([0, 4], [0, -1], base, base.clone(), "bad row", gamma=0.0)


def _two_tokens_split_at(u):
    """Logits of a 2-token row whose inverse CDF steps from 0 to 1 at u."""
    return torch.tensor([[0.0, math.log((1 - u) / u)]])


def test_uniform_at_a_cdf_step_is_accepted():
    _, u = _uniforms()
    base = _two_tokens_split_at(u)  # float32 logits put the step within ~1e-7 of u
    _agree([0], [1], base, base.clone(), gamma=0.0, temperature=1.0)


def test_uniform_away_from_a_cdf_step_is_rejected():
    _, u = _uniforms()
    base = _two_tokens_split_at(min(u + 0.1, 0.95) if u < 0.5 else u - 0.1)
    exact = int(
        blendin_ext.blend_step(
            base, base.clone(), gamma=0.0, temperature=1.0, seed=SEED, offset=OFFSET
        ).tokens
    )
    _disagree(
        [1 - exact], [exact], base, base.clone(), "from the uniform", gamma=0.0, temperature=1.0
    )


def _opposed_pair():
    """The base almost surely draws 0, the guide almost surely 1."""
    return torch.tensor([[30.0, 0.0]]), torch.tensor([[0.0, 30.0]])


def test_component_uniform_at_the_weight_is_accepted():
    u_component, _ = _uniforms()
    base, guide = _opposed_pair()
    _agree([0], [1], base, guide, gamma=2.0, alpha=u_component, temperature=1.0)


def test_component_uniform_away_from_the_weight_is_rejected():
    u_component, _ = _uniforms()
    alpha = u_component + 0.2 if u_component < 0.5 else u_component - 0.2
    base, guide = _opposed_pair()
    # with alpha above the uniform the guide draws 1; below it the base draws 0
    exact = 1 if u_component < alpha else 0
    _disagree(
        [1 - exact],
        [exact],
        base,
        guide,
        "from the uniform",
        gamma=2.0,
        alpha=alpha,
        temperature=1.0,
    )


def _seed_with_token_uniform_above(bound):
    for seed in range(1000):
        if row_uniforms(seed, OFFSET, 0)[1] > bound:
            return seed
    raise AssertionError("no seed found")


@pytest.mark.parametrize("top_p,accepted", [(0.8, True), (0.6, False)])
def test_top_p_cut_at_a_kept_mass(top_p, accepted):
    # masses 0.5, 0.3, 0.2: the third token's exclusive mass is 0.8, so at
    # top_p = 0.8 the cut itself is a tie; at 0.6 the third is surely out
    base = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    seed = _seed_with_token_uniform_above(0.85)
    kwargs = dict(gamma=0.0, temperature=1.0, top_p=top_p, offset=OFFSET)
    if accepted:  # kept {0, 1}: u > 0.625 draws 1; kept {0, 1, 2}: u > 0.8 draws 2
        assert_tokens_agree(
            torch.tensor([1]), torch.tensor([2]), base, base.clone(), seed=seed, **kwargs
        )
    else:
        with pytest.raises(AssertionError, match="cannot be drawn"):
            assert_tokens_agree(
                torch.tensor([2]), torch.tensor([1]), base, base.clone(), seed=seed, **kwargs
            )


@pytest.mark.parametrize(
    "batch,vocab,kwargs",
    [
        (48, 262144, STRATEGIES["blendin"]),
        (16, 50257, dict(gamma=0.9, temperature=1.0, top_p=0.95, seed=4)),
        (16, 50257, dict(gamma=0.9, temperature=0.7, top_k=50, seed=5)),
    ],
    ids=["greedy", "top_p", "top_k"],
)
def test_cpu_op_agrees_with_the_exact_step(batch, vocab, kwargs):
    """The bounds hold for the CPU op: its tokens equal the float64 step's
    or are ties by the rule (its sums are float32, in its own order)."""
    base, guide = confident_logits(batch, vocab, seed=5), confident_logits(batch, vocab, seed=6)
    out = blendin_ext.blend_step(base, guide, **kwargs)
    exact = blendin_ext.ops.reference.evaluate(base, guide, dtype=torch.float64, **kwargs)
    assert_tokens_agree(
        out.tokens, exact.result.tokens, base, guide, names=("CPU op", "float64 step"), **kwargs
    )
