"""The paper's top-N procedure (`blendin_ext.ops.top_n`, strategy
blendin-top100) against a plain reference written the published way, with
dictionaries of token strings; against the exact op where the lists hold
the whole vocabulary (V <= N); and the documented differences where they
do not (mass outside the lists, guide strings without a base spelling)."""

import math

import pytest
import torch

import blendin_ext
from blendin_ext.ops.args import StepArgs
from blendin_ext.ops.maps import guide_map
from blendin_ext.ops.strategies import choose, op_kwargs
from blendin_ext.ops.top_n import TopNRows, _union_argmax, blend_lists, top_n_step

GREEDY = StepArgs.build(gamma=0.4, alpha="auto")


# ------------------------------------------------------------- the reference
def top_list(logits: torch.Tensor, n: int, spell) -> dict:
    """A model's top-n as a server returns it: {string: probability} (full
    softmax, float64), `spell(id)` giving each token's string."""
    probs = torch.softmax(logits.double(), -1)
    values, ids = probs.topk(min(n, probs.numel()))
    return {spell(int(i)): float(v) for v, i in zip(values, ids)}


def published(base: dict, guide: dict, *, gamma=0.4, alpha="auto", bonus=0.1):
    """The rule on string lists (`blend_lists`): (q by emittable string,
    intervened, weight, agree). A string "b<id>" is a base token; "g<id>"
    is a guide token without a base spelling (never emitted here)."""
    step = blend_lists(
        base,
        guide,
        gamma=gamma,
        alpha=alpha,
        agree_bonus=bonus,
        can_emit=lambda s: s.startswith("b"),
    )
    return step.q, step.intervened, step.alpha, step.agree if step.intervened else None


def reference_token(q: dict) -> int:
    best = max(q.values())
    return min(int(s[1:]) for s, v in q.items() if v == best)


def spell_base(i):
    return f"b{i}"


def spell_guide(g2b):
    return lambda j: f"b{int(g2b[j])}" if int(g2b[j]) >= 0 else f"g{j}"


def assert_matches_reference(out, base, guide, n, g2b=None, **rule):
    spell_g = spell_base if g2b is None else spell_guide(g2b)
    for row in range(base.shape[0]):
        q, intervened, a, agree = published(
            top_list(base[row], n, spell_base), top_list(guide[row], n, spell_g), **rule
        )
        token = int(out.tokens[row])
        assert bool(out.intervened[row]) == intervened
        assert float(out.alpha[row]) == pytest.approx(a, abs=1e-5)
        if intervened:
            assert float(out.agree[row]) == pytest.approx(agree, abs=1e-6)
        expected = reference_token(q)
        # a different token only at a float near-tie of the mixture
        assert token == expected or abs(q[f"b{token}"] - q[f"b{expected}"]) < 1e-5, row


def flat_logits(batch, vocab, seed, spread=1.0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, vocab, generator=gen) * spread


# ---------------------------------------------------- the published rule
@pytest.mark.parametrize("vocab,n", [(40, 100), (300, 100), (1000, 100), (500, 7)])
@pytest.mark.parametrize("spread", [1.0, 3.0])
def test_equals_the_string_list_reference_shared_vocabulary(vocab, n, spread):
    base, guide = flat_logits(16, vocab, 1, spread), flat_logits(16, vocab, 2, spread)
    out = top_n_step(base, guide, None, StepArgs.build(gamma=0.5), n)
    assert_matches_reference(out, base, guide, n, gamma=0.5)


@pytest.mark.parametrize("n", [5, 100])
def test_equals_the_string_list_reference_across_vocabularies(n):
    """Guide strings are mapped to base ids; unmapped ones count towards
    c_g but never win; a third of the guide's tokens have no twin."""
    base_vocab, guide_vocab = 200, 150
    gen = torch.Generator().manual_seed(3)
    g2b = torch.randperm(base_vocab, generator=gen)[:guide_vocab]
    g2b[torch.randperm(guide_vocab, generator=gen)[:50]] = -1
    base, guide = flat_logits(16, base_vocab, 4, 2.5), flat_logits(16, guide_vocab, 5, 2.5)
    out = top_n_step(base, guide, guide_map(g2b, base_vocab), StepArgs.build(gamma=0.6), n)
    assert_matches_reference(out, base, guide, n, g2b=g2b, gamma=0.6)


def test_fixed_alpha_and_per_row_parameters():
    base, guide = flat_logits(6, 300, 6, 2.0), flat_logits(6, 300, 7, 2.0)
    gamma = torch.tensor([0.0, 2.0, 2.0, 0.5, 2.0, 2.0])
    alpha = torch.tensor([-1.0, -1.0, 0.3, 1.0, 0.0, -1.0])
    out = top_n_step(
        base,
        guide,
        None,
        StepArgs.build(gamma=gamma, alpha=alpha, agree_bonus=0.2),
        torch.tensor([100, 100, 100, 100, 100, 4]),
    )
    for row in range(6):
        n = 4 if row == 5 else 100
        rule = dict(
            gamma=float(gamma[row]),
            bonus=0.2,
            alpha="auto" if alpha[row] < 0 else float(alpha[row]),
        )
        q, intervened, a, _ = published(
            top_list(base[row], n, spell_base), top_list(guide[row], n, spell_base), **rule
        )
        assert bool(out.intervened[row]) == intervened
        assert float(out.alpha[row]) == pytest.approx(a, abs=1e-6)
        assert int(out.tokens[row]) == reference_token(q)
    assert int(out.tokens[0]) == int(base[0].argmax())  # gamma 0: the base's own token


def test_union_by_pairs_and_by_dense_rows_agree():
    """Short lists compare entries pairwise, lists near the vocabulary's
    size scatter into dense rows (what `--explain` of the exactness
    benchmark asks for at V = 262144); both give the same best and id,
    repeated ids summed, -1 never chosen, ties to the smallest id."""
    gen = torch.Generator().manual_seed(21)
    ids = torch.randint(-1, 50, (64, 30), generator=gen)
    # multiples of 1/8: sums exact in any order, so ties are exact ties
    weights = (torch.rand(64, 30, generator=gen) * 8).floor() / 8
    weights = weights.masked_fill(ids < 0, 0.0)
    by_pairs = _union_argmax(ids, weights, 10**6)  # 30^2 <= 4 * 10^6: pairs
    dense = _union_argmax(ids, weights, 50)  # 30^2 > 4 * 50: dense rows
    assert torch.equal(by_pairs[1], dense[1])
    assert torch.allclose(by_pairs[0], dense[0])
    for row in range(64):
        q = {}
        for i, w in zip(ids[row].tolist(), weights[row].tolist()):
            if i >= 0:
                q[i] = q.get(i, 0.0) + w
        best = max(q.values())
        assert int(dense[1][row]) == min(i for i, v in q.items() if v == best)


# ----------------------------------------------- where it equals the op
@pytest.mark.parametrize("vocab", [2, 37, 100])
@pytest.mark.parametrize("spread", [1.0, 4.0])
def test_whole_vocabulary_lists_give_the_op_result(vocab, spread):
    """V <= N: both lists hold every token, so the union is the whole
    vocabulary and nothing is truncated: the op's result, value for value."""
    base, guide = flat_logits(64, vocab, 8, spread), flat_logits(64, vocab, 9, spread)
    out = top_n_step(base, guide, None, GREEDY, 100)
    exact = blendin_ext.blend_step(base, guide, **op_kwargs("blendin"))
    for name in ("intervened", "alpha", "base_top_prob", "guide_top_prob", "agree"):
        assert torch.allclose(
            getattr(out, name).float(), getattr(exact, name).float(), atol=1e-6
        ), name
    assert_same_tokens_up_to_near_ties(out.tokens, exact, base, guide)


def assert_same_tokens_up_to_near_ties(tokens, exact, base, guide):
    a = exact.alpha[:, None]
    q = a * torch.softmax(guide.double(), -1) + (1 - a) * torch.softmax(base.double(), -1)
    for row in (tokens != exact.tokens).nonzero().flatten().tolist():
        gap = q[row, exact.tokens[row]] - q[row, tokens[row]]
        assert abs(float(gap)) < 1e-6, (row, float(gap))


def test_whole_vocabulary_lists_with_a_one_to_one_map_give_the_op_result():
    """A guide whose every token has a base twin (a permutation): mapped
    probabilities need no renormalising, so again the op's result."""
    vocab = 90
    g2b = torch.randperm(vocab, generator=torch.Generator().manual_seed(10))
    base, guide = flat_logits(32, vocab, 11, 3.0), flat_logits(32, vocab, 12, 3.0)
    maps = guide_map(g2b, vocab)
    out = top_n_step(base, guide, maps, GREEDY, 100)
    exact = blendin_ext.blend_step(base, guide, guide_to_base=maps, **op_kwargs("blendin"))
    assert torch.allclose(out.alpha, exact.alpha, atol=1e-6)
    moved = torch.empty_like(guide)
    moved[:, g2b] = guide
    assert_same_tokens_up_to_near_ties(out.tokens, exact, base, moved)


# -------------------------------------------- where it does not, and why
def logits_of(probs: dict, vocab: int) -> torch.Tensor:
    """Logits of a distribution giving `probs` to some ids and the rest of
    the mass evenly to every other id."""
    rest = (1 - sum(probs.values())) / (vocab - len(probs))
    p = torch.full((vocab,), rest, dtype=torch.float64)
    for i, v in probs.items():
        p[i] = v
    return p.log().float()


def test_mass_outside_the_base_list_can_change_the_token():
    """V = 1000: two guide favourites x and y, both outside the base's top
    100. The exact blend adds x's base probability (rank 101) and picks x;
    the lists count it 0 and pick y, by exactly the guide's margin."""
    vocab, x, y = 1000, 500, 600
    base_probs = {0: 0.3, **{i: 0.005 for i in range(1, 100)}, x: 0.004}  # x ranks 101st
    base = logits_of(base_probs, vocab)[None]
    guide = logits_of({y: 0.45, x: 0.449, 0: 0.001}, vocab)[None]
    exact = blendin_ext.blend_step(base, guide, **op_kwargs("blendin"))
    out = top_n_step(base, guide, None, GREEDY, 100)
    assert int(exact.tokens[0]) == x and int(out.tokens[0]) == y
    p_b = torch.softmax(base[0].double(), -1)
    a = float(out.alpha[0])
    # the difference is the base mass the list drops: (1 - a) p_b(x) > a (p_g(y) - p_g(x))
    assert (1 - a) * float(p_b[x]) > a * (0.45 - 0.449)
    # the agreement the list sees is 0 (y is not in the base's list), the op's p_b(y)
    assert float(out.agree[0]) == 0.0 and float(exact.agree[0]) == pytest.approx(float(p_b[y]))
    # with the whole vocabulary in the lists the two agree again
    assert int(top_n_step(base, guide, None, GREEDY, vocab).tokens[0]) == x


def test_guide_strings_without_a_base_spelling():
    """The guide's favourite has no base twin: the lists keep the guide's
    raw probabilities (c_g counts the favourite, agree is 0, nothing is
    renormalised); the op renormalises over mapped tokens and takes the
    best mapped one as the favourite."""
    base_vocab, guide_vocab, lost = 50, 60, 55
    g2b = torch.full((guide_vocab,), -1, dtype=torch.int64)
    g2b[:40] = torch.arange(40)
    maps = guide_map(g2b, base_vocab)
    base = logits_of({3: 0.3, 7: 0.05}, base_vocab)[None]
    guide = logits_of({lost: 0.9, 7: 0.05}, guide_vocab)[None]
    out = top_n_step(base, guide, maps, GREEDY, 100)
    exact = blendin_ext.blend_step(base, guide, guide_to_base=maps, **op_kwargs("blendin"))
    assert float(out.guide_top_prob[0]) == pytest.approx(0.9, abs=1e-5)
    assert float(out.agree[0]) == 0.0
    assert float(out.alpha[0]) == pytest.approx(0.9 / 1.2, abs=1e-5)
    mapped_mass = 1 - 0.9 - 19 * (0.05 / 58)  # unmapped: `lost` and 19 tokens at the rest
    c_g = 0.05 / mapped_mass
    assert float(exact.guide_top_prob[0]) == pytest.approx(c_g, rel=1e-4)
    assert float(exact.alpha[0]) == pytest.approx(c_g / (0.3 + c_g) + 0.1 * 0.05, rel=1e-4)
    # the lists weigh token 7 by the guide's raw 0.05 and keep the base's 3;
    # renormalised, 7 carries the guide's whole mapped mass and wins
    assert int(out.tokens[0]) == 3 and int(exact.tokens[0]) == 7
    assert_matches_reference(out, base, guide, 100, g2b=g2b)


def test_all_guide_strings_unspellable_at_full_weight_keeps_the_base_token():
    base = logits_of({4: 0.3}, 20)[None]
    guide = logits_of({30: 0.999}, 40)[None]
    maps = guide_map(torch.full((40,), -1, dtype=torch.int64), 20)
    out = top_n_step(base, guide, maps, StepArgs.build(gamma=0.4, alpha=1.0), 5)
    assert int(out.tokens[0]) == 4 and float(out.alpha[0]) == 1.0


# ------------------------------------------------------ rows, errors
def test_only_the_asked_rows_are_replaced():
    base, guide = flat_logits(5, 400, 13, 2.0), flat_logits(5, 400, 14, 2.0)
    args = StepArgs.build(gamma=torch.full((5,), 2.0))
    exact = blendin_ext.ops.run_step(base, guide, None, args)
    rows = TopNRows.of([0, 3, 0, 0, 100])
    mixed = rows.apply(exact, base, guide, None, args)
    alone = top_n_step(
        base[[1, 4]],
        guide[[1, 4]],
        None,
        args.take(torch.tensor([1, 4]), 5),
        torch.tensor([3, 100]),
    )
    for full, part, op in zip(mixed, alone, exact):
        assert torch.equal(full[[1, 4]], part.to(full.dtype))
        assert torch.equal(full[[0, 2, 3]], op[[0, 2, 3]])
    assert TopNRows.of([0, 0]) is None


def test_bad_rows_get_token_minus_one():
    base, guide = flat_logits(3, 30, 15), flat_logits(3, 30, 16)
    base[1, 4] = float("nan")
    guide[2] = float("-inf")
    out = top_n_step(base, guide, None, GREEDY, 10)
    assert out.tokens.tolist()[1:] == [-1, -1] and int(out.tokens[0]) >= 0
    assert math.isnan(float(out.alpha[1])) and not bool(out.intervened[2])


def test_errors_name_the_argument():
    base, guide = flat_logits(2, 30, 17), flat_logits(2, 30, 18)
    with pytest.raises(ValueError, match="temperature must be 0"):
        top_n_step(base, guide, None, StepArgs.build(temperature=0.7), 10)
    with pytest.raises(ValueError, match="top_n must be >= 1"):
        top_n_step(base, guide, None, GREEDY, torch.tensor([3, 0]))
    with pytest.raises(ValueError, match="guide_to_base"):
        top_n_step(base, guide[:, :20], None, GREEDY, 10)
    assert top_n_step(base[:0], guide[:0], None, GREEDY, 10).tokens.shape == (0,)


def test_strategy_names():
    assert choose("blendin-top100", gamma=0.3) == choose(" BlendIn-Top100 ", gamma=0.3)
    choice = choose("blendin-top100", gamma=0.3, alpha=0.2)
    assert (choice.name, choice.gamma, choice.alpha, choice.top_n) == (
        "blendin-top100",
        0.3,
        "auto",
        100,
    )
    assert choose("blendin-top007").name == "blendin-top7"
    assert choose("blendin").top_n == 0
    for bad in ("blendin-top0", "blendin-top", "blendin-topx", "blendin-top-3"):
        with pytest.raises(ValueError, match="strategy.*N >= 1"):
            choose(bad)
    with pytest.raises(ValueError, match="not a point of blend_step"):
        op_kwargs("blendin-top100")


def test_string_lists_as_a_client_blends_them():
    base = {" the": 0.3, " a": 0.25, " cat": 0.1}
    guide = {" dog": 0.5, " a": 0.3}
    sure = blend_lists({" the": 0.6, " a": 0.1}, None)
    assert (sure.token, sure.intervened, sure.alpha) == (" the", False, 0.0)
    step = blend_lists(base, guide)
    assert step.agree == 0.0 and step.alpha == pytest.approx(0.5 / 0.8)
    assert step.token == " dog"  # a client appends any string it gets back
    assert step.q[" a"] == pytest.approx(0.625 * 0.3 + 0.375 * 0.25)
    assert blend_lists(base, guide, can_emit=lambda s: s != " dog").token == " a"
    with pytest.raises(ValueError, match="guide's list is needed"):
        blend_lists(base, None)
