"""When may two implementations of the step pick different tokens?

The CPU kernel, the CUDA kernel and the reference share their formulas and
random numbers, but sum in different orders (chunks, blocks, threads), so a
sum differs by float rounding and a decision taken on it may flip. Two
tokens for the same row may therefore differ only where the *exact* step
(the reference evaluated in float64) is itself at a tie, within the
implementations' float32 error:

- **greedy row**: each token's exact mixture probability
  q = a * p~_g + (1 - a) * p_b is within `REL_TIE` (relative) of the row's
  largest;
- **sampled row**: the row's Philox token uniform (the same numbers every
  implementation draws) lies within `EPS` of the token's interval of the
  exact inverse CDF; where the exact weight `a` is within `EPS` of the
  component uniform, either component counts, and where a kept mass is within
  `EPS` of top_p, either side of the cut counts;
- **bad row** (token -1): never a tie; both must say so.

The bounds. Each kernel's softmax sums (up to 262144 `fast_exp` terms in
float32, in its own order) are within 1.6e-6 relative of float64 on this
project's test logits (1/sum measured at V = 50257 ... 262144, fast_exp's own
error is at most 4.5e-7). One mixture probability rests on two sums (and the
weight `a`, a ratio of them), so a kernel's q is within about 3.5e-6 of
exact, and the token it picks within about twice that of the largest q:
REL_TIE = 1e-5 covers this with margin, where 1e-6 would not. A CDF value is
a ratio of two such sums, in [0, 1], so the same reasoning gives EPS = 1e-5
(absolute). A genuine error (a wrong id, component, cut or uniform) misses
these by orders of magnitude; tests/ops/test_near_tie.py checks both sides.
"""

from __future__ import annotations

import torch

from blendin_ext.ops import reference

REL_TIE = 1e-5
EPS = 1e-5


def assert_tokens_agree(
    tokens, other_tokens, base, guide, *, names=("op", "other"), **kwargs
) -> None:
    """Tokens of two implementations of one step (blend_step's inputs and
    keyword arguments) are equal, or both are near ties of the exact step
    in the sense of this module. Raises AssertionError naming each row that
    is not, with both tokens and why."""
    tokens, other_tokens = tokens.cpu().long(), other_tokens.cpu().long()
    differ = (tokens != other_tokens).nonzero().flatten().tolist()
    if not differ:
        return
    exact = reference.evaluate(base, guide, dtype=torch.float64, **kwargs)
    problems = []
    for row in differ:
        for name, token in zip(names, (int(tokens[row]), int(other_tokens[row]))):
            why = not_a_tie(exact, row, token)
            if why:
                problems.append(
                    f"row {row}: {names[0]} {int(tokens[row])} vs {names[1]} "
                    f"{int(other_tokens[row])}: {name}'s token {why}"
                )
    assert not problems, f"{len(differ)} row(s) differ, not all at a near tie:\n" + "\n".join(
        problems
    )


def not_a_tie(exact: reference.Evaluation, row: int, token: int) -> str:
    """Why `token` is not an acceptable choice for `row` of the exact
    evaluation (float64), or "" when it is."""
    want = int(exact.result.tokens[row])
    if want < 0 or token < 0:
        return "" if token == want else f"is {token}, the exact step's is {want} (bad row)"
    if row in exact.sampled:
        return _not_a_sampled_tie(exact.sampled[row], token)
    q = exact.mixture[row]
    if not 0 <= token < len(q):
        return f"is outside the vocabulary ({len(q)})"
    gap = float((q.max() - q[token]) / q.max())
    return "" if gap <= REL_TIE else f"has mixture probability {gap:.2e} below the largest"


def _not_a_sampled_tie(plan: reference.SampledRow, token: int) -> str:
    sides = [plan.u_component < plan.alpha]
    if 0 < plan.alpha < 1 and abs(plan.u_component - plan.alpha) <= EPS:
        sides = [True, False]  # the component choice itself is at a tie
    nearest = float("inf")
    for use_guide in sides:
        logits, ids = reference.component(plan.base, plan.guide, plan.guide_to_base, use_guide)
        for kept, cdf in reference.component_cdfs(
            logits, ids, plan.temperature, plan.top_k, plan.top_p, slack=EPS
        ):
            where = (kept == token).nonzero().flatten()
            if len(where) == 0:
                continue
            pos = int(where[0])
            low, high = (0.0 if pos == 0 else float(cdf[pos - 1])), float(cdf[pos])
            nearest = min(nearest, max(low - plan.u_token, plan.u_token - high, 0.0))
    if nearest <= EPS:
        return ""
    if nearest == float("inf"):
        return "cannot be drawn (not kept by any near-tie cut of the component)"
    return f"lies {nearest:.2e} from the uniform {plan.u_token} in the exact CDF"
