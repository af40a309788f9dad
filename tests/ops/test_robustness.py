"""Inputs that once gave a wrong answer silently (issue 12): tiny
temperatures, expanded seed tensors, meta tensors among CPU ones, scalars
that changed meaning when narrowed, and Python values the wrapper
misread. Each now gives the documented result or an error naming the
argument."""

import math

import numpy as np
import pytest
import torch

import blendin_ext
from blendin_ext.ops.args import StepArgs
from blendin_ext.ops.maps import as_guide_map
from blendin_ext.testing.op_cases import (
    ROW_TENSOR_DTYPES,
    assert_matches_reference,
    confident_logits,
    random_guide_map,
)

OP = torch.ops.blendin_ext.blend_step
B, V = 4, 50


def pair(batch=B, vocab=V, seed=0):
    return confident_logits(batch, vocab, seed=seed), confident_logits(batch, vocab, seed=seed + 1)


def raw(base, guide, **slots):
    return OP(base, guide, None, None, *StepArgs.build()._replace(**slots))


# ------------------------------------------------------------ temperature --
@pytest.mark.parametrize(
    "temperature", [1e-40, 1e-45, 1e-50, 2.0**-101, torch.tensor([1e-40]), torch.tensor(1e-44)]
)
def test_tiny_temperature_is_the_limit_not_a_bad_row(temperature):
    x = torch.tensor([[0.0, 1.0, 2.0]])
    out = blendin_ext.blend_step(x, x, temperature=temperature, seed=3)
    assert out.tokens.tolist() == [2]  # the component's top token, never -1


@pytest.mark.parametrize("alpha", [0.0, 1.0, 0.5])
def test_tiny_temperature_draws_the_top_token_of_the_drawn_component(alpha):
    base, guide = pair(64, 300, seed=5)
    mapping = random_guide_map(300, 300, seed=2)
    temps = torch.tensor([1e-40, 0.0, 1e-38, 2.0**-100] * 16)
    kwargs = dict(guide_to_base=mapping, gamma=2.0, alpha=alpha, temperature=temps, seed=11)
    out = blendin_ext.blend_step(base, guide, **kwargs)
    assert (out.tokens >= 0).all()
    assert_matches_reference(out, base, guide, **kwargs)
    moved = torch.full_like(base, -math.inf)
    moved[:, mapping[mapping >= 0]] = guide[:, mapping >= 0]
    sampled = temps > 0
    tops = torch.stack([base.argmax(1), moved.argmax(1)])
    assert ((out.tokens == tops[0]) | (out.tokens == tops[1]))[sampled].all()
    if alpha in (0.0, 1.0):
        assert torch.equal(out.tokens[sampled], tops[int(alpha)][sampled])


def test_tiny_python_temperature_stays_sampling_after_narrowing():
    """1e-50 is positive: float32 would make it 0 (greedy over the mixture),
    the op samples at 2^-100 instead, like the reference."""
    base, guide = pair(16, 200, seed=7)
    kwargs = dict(gamma=2.0, alpha=0.5, temperature=1e-50, seed=4)
    out = blendin_ext.blend_step(base, guide, **kwargs)
    assert_matches_reference(out, base, guide, **kwargs)
    assert not torch.equal(
        out.tokens,
        blendin_ext.blend_step(base, guide, gamma=2.0, alpha=0.5, temperature=0.0).tokens,
    )


# ------------------------------------------------------------------ seeds --
def test_expanded_seed_tensor_is_one_seed_per_row():
    base, guide = pair(6, 300)
    kwargs = dict(gamma=2.0, alpha=0.5, temperature=1.0, offset=3)
    expanded = blendin_ext.blend_step(base, guide, seed=torch.tensor([7]).expand(6), **kwargs)
    per_row = blendin_ext.blend_step(base, guide, seed=torch.full((6,), 7), **kwargs)
    shared = blendin_ext.blend_step(base, guide, seed=7, **kwargs)
    assert torch.equal(expanded.tokens, per_row.tokens)
    assert not torch.equal(expanded.tokens, shared.tokens)
    assert_matches_reference(expanded, base, guide, seed=torch.tensor([7]).expand(6), **kwargs)


def test_seed_none_draws_from_torch_default_generator():
    base, guide = pair(32, 500)
    kwargs = dict(gamma=2.0, alpha=0.5, temperature=1.0)
    torch.manual_seed(123)
    first = blendin_ext.blend_step(base, guide, **kwargs).tokens
    second = blendin_ext.blend_step(base, guide, **kwargs).tokens
    torch.manual_seed(123)
    again = blendin_ext.blend_step(base, guide, **kwargs).tokens
    assert torch.equal(first, again) and not torch.equal(first, second)
    explicit = blendin_ext.blend_step(base, guide, seed=0, **kwargs).tokens
    assert torch.equal(explicit, blendin_ext.blend_step(base, guide, seed=0, **kwargs).tokens)


def test_greedy_call_does_not_consume_the_default_generator():
    base, guide = pair()
    torch.manual_seed(5)
    blendin_ext.blend_step(base, guide)
    after = torch.rand(1)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(1))


def test_seed_beyond_int64_is_taken_modulo_2_to_64():
    base, guide = pair()
    kwargs = dict(gamma=2.0, alpha=0.5, temperature=1.0)
    big = blendin_ext.blend_step(base, guide, seed=2**63, **kwargs)
    assert torch.equal(
        big.tokens, blendin_ext.blend_step(base, guide, seed=-(2**63), **kwargs).tokens
    )


# ------------------------------------------------------------- meta tensors --
@pytest.mark.parametrize("name", sorted(ROW_TENSOR_DTYPES))
def test_meta_row_tensor_among_cpu_arguments_is_named(name):
    base, guide = pair()
    value = torch.ones(B, dtype=ROW_TENSOR_DTYPES[name], device="meta")
    with pytest.raises((ValueError, RuntimeError), match=f"{name} must be on cpu"):
        blendin_ext.blend_step(base, guide, **{name: value})


def test_meta_logits_or_map_among_cpu_arguments_is_named():
    base, guide = pair()
    with pytest.raises(ValueError, match="guide_logits must be on cpu"):
        blendin_ext.blend_step(base, guide.to("meta"))
    with pytest.raises(ValueError, match="guide_to_base must be on cpu"):
        blendin_ext.blend_step(base, guide, guide_to_base=torch.arange(V, device="meta"))
    maps = blendin_ext.guide_map(torch.arange(V), V)
    with pytest.raises(ValueError, match="base_to_guide must be on cpu"):
        OP(base, guide, maps.guide_to_base, maps.base_to_guide.to("meta"), *StepArgs.build())
    with pytest.raises(ValueError, match="guide_to_base is a meta tensor"):
        blendin_ext.guide_map(torch.arange(V, device="meta"), V)


def test_all_meta_arguments_only_compute_shapes():
    base, guide = pair()
    out = blendin_ext.blend_step(
        base.to("meta"), guide.to("meta"), guide_to_base=torch.arange(V, device="meta")
    )
    assert out.tokens.device.type == "meta" and out.tokens.shape == (B,)


# ------------------------------------------------- scalars before narrowing --
@pytest.mark.parametrize(
    "slot, value, match",
    [
        ("top_k_value", -(2**32) + 5, "top_k must be >= 0"),
        ("top_k_value", 2**31, "top_k must fit in int32"),
        ("gamma_value", -1e-50, "gamma must be >= 0, got -1e-50"),
        ("temperature_value", -1e-50, "temperature must be >= 0, got -1e-50"),
        ("top_p_value", 1 + 1e-12, r"top_p must lie in \(0, 1\], got 1.000000000001"),
        ("alpha_value", 1 + 1e-12, r"alpha must lie in \[0, 1\]"),
        ("gamma_value", math.nan, "gamma must be >= 0"),
        ("temperature_value", math.nan, "temperature must be >= 0"),
    ],
)
def test_raw_op_checks_scalars_before_narrowing_them(slot, value, match):
    base, guide = pair()
    with pytest.raises(RuntimeError, match=match):
        raw(base, guide, **{slot: value})


@pytest.mark.parametrize(
    "name, value",
    [
        ("top_k", -(2**32) + 5),
        ("gamma", -1e-50),
        ("temperature", -1e-50),
        ("top_p", 1 + 1e-12),
        ("top_k", np.float64(3.0)),
        ("top_k", np.float32(3.7)),
        ("top_k", 3.0),
        ("seed", np.float64(1)),
        ("alpha", None),
        ("agree_bonus", None),
        ("gamma", None),
        ("temperature", None),
        ("gamma", "0.4"),
        ("top_p", True),
        ("offset", 1.0),
    ],
)
def test_wrapper_names_each_bad_value(name, value):
    base, guide = pair()
    with pytest.raises(ValueError, match=f"^{name} must"):
        blendin_ext.blend_step(base, guide, **{name: value})


def test_numpy_integers_are_ints():
    base, guide = pair()
    out = blendin_ext.blend_step(base, guide, top_k=np.int64(3), seed=np.int32(2), temperature=1.0)
    ref = blendin_ext.blend_step(base, guide, top_k=3, seed=2, temperature=1.0)
    assert torch.equal(out.tokens, ref.tokens)


# ------------------------------------------------------ shapes and Nones --
@pytest.mark.parametrize("name", ["base_logits", "guide_logits"])
def test_missing_logits_are_named(name):
    base, guide = pair()
    args = dict(base_logits=base, guide_logits=guide)
    args[name] = None
    with pytest.raises(ValueError, match=f"{name} must be a tensor"):
        blendin_ext.blend_step(args["base_logits"], args["guide_logits"])


def test_one_dimensional_base_with_a_map_blames_base_logits():
    base, guide = pair()
    with pytest.raises(ValueError, match="base_logits must be a 2-D"):
        blendin_ext.blend_step(base[0], guide, guide_to_base=torch.arange(V))


def test_empty_batch_with_zero_strides_is_accepted():
    empty = torch.empty_strided((0, V), (0, 0))
    out = blendin_ext.blend_step(empty, empty, temperature=1.0)
    assert all(t.shape == (0,) for t in out)


# ------------------------------------------------------------------- maps --
def test_map_made_in_inference_mode():
    base, guide = pair()
    with torch.inference_mode():
        mapping = torch.arange(V).flip(0)
    out = blendin_ext.blend_step(base, guide, guide_to_base=mapping, gamma=2.0, alpha=1.0)
    assert torch.equal(out.tokens, V - 1 - guide.argmax(1))
    with torch.inference_mode():
        again = blendin_ext.blend_step(base, guide, guide_to_base=mapping, gamma=2.0, alpha=1.0)
    assert torch.equal(out.tokens, again.tokens)


def _guide_only(base, guide, mapping):
    return blendin_ext.blend_step(base, guide, guide_to_base=mapping, gamma=2.0, alpha=1.0).tokens


def test_map_changed_through_data_is_not_served_stale():
    base, guide = pair()
    mapping = torch.arange(V).flip(0).contiguous()
    assert torch.equal(_guide_only(base, guide, mapping), V - 1 - guide.argmax(1))
    mapping.data[:] = torch.arange(V)  # bypasses the version counter
    assert torch.equal(_guide_only(base, guide, mapping), guide.argmax(1))
    mapping.data[0] = 9  # now two guide tokens map to 9: no longer injective
    with pytest.raises(ValueError, match="injective"):
        _guide_only(base, guide, mapping)


def test_map_changed_through_numpy_memory_is_not_served_stale():
    base, guide = pair()
    array = np.arange(V)[::-1].copy()
    mapping = torch.from_numpy(array)
    assert torch.equal(_guide_only(base, guide, mapping), V - 1 - guide.argmax(1))
    array[:] = np.arange(V)
    assert torch.equal(_guide_only(base, guide, mapping), guide.argmax(1))
    inverse = as_guide_map(mapping, V).base_to_guide  # what the kernels read
    assert torch.equal(inverse, torch.arange(V, dtype=torch.int32))


def test_map_cache_frees_entries_with_their_tensors():
    from blendin_ext.ops import maps

    base, guide = pair()
    before = len(maps._map_cache)
    for _ in range(50):
        _guide_only(base, guide, torch.randperm(V))
    assert len(maps._map_cache) <= before + 1


def test_compile_fullgraph_with_a_raw_map_tensor():
    base, guide = pair(5, 300, seed=3)
    guide_wide = confident_logits(5, 350, seed=4)
    mapping = random_guide_map(350, 300, seed=6)

    def step(b, g, m):
        return blendin_ext.blend_step(
            b, g, guide_to_base=m, gamma=0.6, temperature=0.7, seed=5
        ).tokens

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    assert torch.equal(compiled(base, guide_wide, mapping), step(base, guide_wide, mapping))
