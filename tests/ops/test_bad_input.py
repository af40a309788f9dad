"""Every bad argument gets an error naming it; bad rows get token -1 and NaN
statistics without disturbing the other rows."""

import math

import pytest
import torch

import blendin_ext
from blendin_ext.ops.args import StepArgs
from blendin_ext.testing.op_cases import confident_logits, random_guide_map

B, V = 3, 11


def good():
    return confident_logits(B, V, seed=0), confident_logits(B, V, seed=1)


def call(base=None, guide=None, **kwargs):
    b, g = good()
    return blendin_ext.blend_step(
        b if base is None else base, g if guide is None else guide, **kwargs
    )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(base=torch.zeros(V)), "base_logits must be a 2-D"),
        (dict(guide=torch.zeros(B, V, 1)), "guide_logits must be a 2-D"),
        (
            dict(base=torch.zeros(B, V, dtype=torch.int32)),
            "base_logits must be float32, float16 or bfloat16",
        ),
        (dict(base=torch.zeros(B, V, dtype=torch.float64)), "base_logits must be float32"),
        (dict(guide=torch.zeros(B, V, dtype=torch.float16)), "guide_logits must have the dtype"),
        (dict(guide=torch.zeros(B + 1, V)), "guide_logits must have 3 rows"),
        (dict(guide=torch.zeros(B, V + 1)), "need guide_to_base"),
        (dict(base=torch.zeros(B, 0)), "base_logits must have a vocabulary of at least 1"),
        (dict(base=torch.zeros(V, B).t()), "base_logits must be contiguous along the vocabulary"),
        (dict(gamma=-0.1), "gamma must be a number >= 0"),
        (dict(gamma=float("nan")), "gamma must be a number >= 0"),
        (dict(gamma=torch.tensor([0.4, -1.0, 0.4])), "gamma must be >= 0 in every row"),
        (dict(gamma=torch.tensor([0.4, 0.4, 0.4], dtype=torch.float64)), "gamma must be Float"),
        (
            dict(gamma=torch.tensor([0.4, 0.4])),
            r"gamma must be a scalar tensor or have shape \(3,\)",
        ),
        (dict(alpha=1.5), r'alpha must be "auto" or a number in \[0, 1\]'),
        (dict(alpha=-0.5), r'alpha must be "auto" or a number in \[0, 1\]'),
        (dict(alpha="always"), 'alpha must be "auto"'),
        (dict(alpha=torch.tensor([0.5, 1.5, -1.0])), r"alpha must lie in \[0, 1\] in every row"),
        (dict(temperature=-1.0), "temperature must be a number >= 0"),
        (dict(temperature=torch.tensor([1.0, -1.0, 0.0])), "temperature must be >= 0 in every row"),
        (dict(top_p=0.0), r"top_p must be None or a number in \(0, 1\]"),
        (dict(top_p=1.5), r"top_p must be None or a number in \(0, 1\]"),
        (dict(top_p=torch.tensor([0.5, 0.0, 1.0])), r"top_p must lie in \(0, 1\] in every row"),
        (dict(top_k=-1), "top_k must be None or an int >= 0"),
        (dict(top_k=torch.tensor([1, 2, 3])), "top_k must be Int"),
        (
            dict(top_k=torch.tensor([1, -2, 3], dtype=torch.int32)),
            "top_k must be >= 0 in every row",
        ),
        (dict(seed=torch.tensor([1.0])), "seed must be Long"),
        (dict(offset=torch.tensor([1, 2], dtype=torch.int64)), "offset must be a scalar tensor"),
        (dict(agree_bonus=float("inf")), "agree_bonus must be a finite number"),
    ],
)
def test_bad_argument_is_named(kwargs, match):
    with pytest.raises((RuntimeError, ValueError), match=match):
        call(**kwargs)


@pytest.mark.parametrize(
    "mapping,match",
    [
        (torch.zeros(V - 1, dtype=torch.int64), r"guide_to_base must have shape \(11,\)|injective"),
        (torch.arange(V).float(), "guide_to_base must be int32 or int64"),
        (torch.arange(V) + 1, r"guide_to_base entries must lie in \[-1, 11\)"),
        (torch.full((V,), -2), r"guide_to_base entries must lie in \[-1, 11\)"),
        (torch.tensor([0, 0] + [-1] * (V - 2)), "guide_to_base must be injective"),
        (torch.arange(V)[None], "guide_to_base must be a 1-D tensor"),
    ],
)
def test_bad_guide_map_is_named(mapping, match):
    with pytest.raises((RuntimeError, ValueError), match=match):
        call(guide_to_base=mapping)


def test_raw_op_checks_the_map_too():
    base, guide = good()
    op = torch.ops.blendin_ext.blend_step
    args = StepArgs.build()
    with pytest.raises(RuntimeError, match="base_to_guide .* is required"):
        op(base, guide, torch.arange(V), None, *args)
    with pytest.raises(RuntimeError, match="guide_to_base entries must lie in"):
        op(base, guide, torch.arange(V) + 5, torch.arange(V, dtype=torch.int32), *args)
    with pytest.raises(RuntimeError, match=r"base_to_guide must have shape"):
        op(base, guide, torch.arange(V), torch.arange(V + 1, dtype=torch.int32), *args)


@pytest.mark.parametrize(
    "slot, value, match",
    [
        ("gamma_value", -0.1, "gamma must be >= 0"),
        ("alpha_value", 1.5, r"alpha must lie in \[0, 1\]"),
        ("temperature_value", -1.0, "temperature must be >= 0"),
        ("top_k_value", -1, "top_k must be >= 0"),
        ("top_p_value", 0.0, r"top_p must lie in \(0, 1\]"),
        ("agree_bonus", float("inf"), "agree_bonus must be finite"),
    ],
)
def test_raw_op_checks_scalars_on_its_own(slot, value, match):
    """Without the Python wrapper the C++ op still names every bad scalar."""
    base, guide = good()
    with pytest.raises(RuntimeError, match=match):
        torch.ops.blendin_ext.blend_step(
            base, guide, None, None, *StepArgs.build()._replace(**{slot: value})
        )


def test_empty_batch_returns_empty_outputs():
    out = blendin_ext.blend_step(torch.zeros(0, 50257), torch.zeros(0, 50257), temperature=1.0)
    assert all(t.shape == (0,) for t in out)
    assert out.tokens.dtype == torch.int64 and out.intervened.dtype == torch.bool


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_bad_rows_get_minus_one_and_nan(temperature, dtype):
    rows, vocab, guide_vocab = 8, 4099, 5000
    base = confident_logits(rows, vocab, seed=3, dtype=dtype)
    guide = confident_logits(rows, guide_vocab, seed=4, dtype=dtype)
    mapping = random_guide_map(guide_vocab, vocab, seed=5)
    kwargs = dict(gamma=0.7, temperature=temperature, seed=9, guide_to_base=mapping)
    clean = blendin_ext.blend_step(base, guide, **kwargs)
    base[1, 17] = math.nan
    guide[2, 4000] = math.inf
    base[3] = -math.inf
    guide[4, mapping >= 0] = -math.inf  # only unmapped guide tokens left
    guide[5, int((mapping < 0).nonzero()[0])] = math.nan  # NaN counts even where unmapped
    out = blendin_ext.blend_step(base, guide, **kwargs)
    bad = [1, 2, 3, 4, 5]
    good_rows = [0, 6, 7]
    assert out.tokens[bad].tolist() == [-1] * 5
    assert not out.intervened[bad].any()
    for name in ("alpha", "base_top_prob", "guide_top_prob", "agree"):
        assert torch.isnan(getattr(out, name)[bad]).all()
    for a, b in zip(out, clean):
        torch.testing.assert_close(a[good_rows], b[good_rows])
    with pytest.raises(ValueError, match=r"rows \[1, 2, 3, 4, 5\]"):
        blendin_ext.raise_on_bad_rows(out)
    assert blendin_ext.raise_on_bad_rows(clean) is clean
