"""A property test of blend_step over everything a caller can hand it:
shapes (B = 0 included), dtypes, row strides (padded, expanded, odd strides
of an empty batch), maps (raw int32/int64 tensors or GuideMaps), special
logits (NaN, +-inf, subnormals, huge values, fully masked rows), per-row
tensors (broadcast, per row, expanded) and, one at a time, a wrong argument:
a Python value of the wrong type or range, a per-row tensor of the wrong
shape, dtype or device (meta included), bad logits or a bad map.

Every call must end in exactly one of three ways:
- "reference": the result equals the float32 reference (op_cases'
  near-tie tolerance) and no row is bad;
- "bad rows": token -1 exactly for the rows whose logits the op's README
  calls bad, the other rows equal to the reference;
- "error": the call was given a wrong argument and the error names it.

Derandomised, so CI runs the same cases every time; run with -s to see the
case count and the count per outcome (once on 1 thread, once on 2, where
large rows take the chunk-parallel path)."""

import math
import os
from collections import Counter

import numpy as np
import pytest
import torch

import blendin_ext
from blendin_ext.ops.fused import fresh_seed
from blendin_ext.testing.op_cases import ROW_TENSOR_DTYPES, assert_matches_reference

hypothesis = pytest.importorskip("hypothesis", reason="the fuzz test needs hypothesis (test extra)")
st = hypothesis.strategies

# Cases per thread setting: about 15 s each on a 2-core CI machine.
# BLENDIN_FUZZ_EXAMPLES=2000 (and BLENDIN_FUZZ_RANDOM=1 for new cases) searches longer.
EXAMPLES = int(os.environ.get("BLENDIN_FUZZ_EXAMPLES", "120"))
DERANDOMIZE = os.environ.get("BLENDIN_FUZZ_RANDOM", "0") != "1"
SPECIAL = [math.nan, math.inf, -math.inf, 1e-40, -1e-45, 1e4, -1e4, 0.0]
TINY_TEMPERATURES = [1e-40, 1e-45, 1e-50, 2.0**-101, 1e-30]


# ----------------------------------------------------------------- logits --
def draw_logits(data, batch, vocab, dtype, name):
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31), label=f"{name} seed"))
    scale = data.draw(st.sampled_from([0.01, 1.0, 4.0]), label=f"{name} scale")
    x = torch.randn(max(batch, 1), vocab, generator=gen) * scale
    for row in range(batch):
        kind = data.draw(
            st.sampled_from(["plain"] * 6 + ["special", "masked", "all_masked"]),
            label=f"{name} row {row}",
        )
        if kind == "special":
            x[row, data.draw(st.integers(0, vocab - 1))] = data.draw(st.sampled_from(SPECIAL))
        elif kind == "masked":
            x[row, torch.rand(vocab, generator=gen) < 0.5] = -math.inf
        elif kind == "all_masked":
            x[row] = -math.inf
    x = x.to(dtype)
    layout = data.draw(
        st.sampled_from(["contiguous", "padded", "expanded"]), label=f"{name} layout"
    )
    if batch == 0:
        odd = data.draw(st.sampled_from([(vocab, 1), (0, 0), (1, 7)]), label="empty strides")
        return torch.empty_strided((0, vocab), odd, dtype=dtype)
    if layout == "padded":
        wide = torch.zeros(batch, vocab + 5, dtype=dtype)
        wide[:, :vocab] = x[:batch]
        return wide[:, :vocab]
    if layout == "expanded":
        return x[:1].expand(batch, vocab)
    return x[:batch].contiguous()


def expected_bad_rows(base, guide, g2b):
    b, g = base.float(), guide.float()
    bad = (b.isnan() | (b == math.inf)).any(1) | (g.isnan() | (g == math.inf)).any(1)
    bad |= (b == -math.inf).all(1)
    mapped = torch.ones(g.shape[1], dtype=torch.bool) if g2b is None else g2b >= 0
    bad |= (g[:, mapped] == -math.inf).all(1)
    return bad


# ------------------------------------------------------------- parameters --
def valid_number(data, name, vocab):
    options = dict(
        gamma=st.sampled_from([0.0, 0.4, 2.0]) | st.floats(0, 1.5),
        alpha=st.just("auto") | st.floats(0, 1),
        temperature=st.just(0.0) | st.floats(0.05, 3) | st.sampled_from(TINY_TEMPERATURES),
        top_k=st.none() | st.integers(0, vocab + 3),
        top_p=st.none() | st.floats(0.05, 1.0) | st.just(1.0),
        seed=st.none() | st.integers(-(2**63), 2**64),
        offset=st.integers(0, 2**40),
    )
    return data.draw(options[name], label=name)


def valid_tensor(data, name, batch):
    shape = data.draw(st.sampled_from(["row", "one", "scalar", "expanded"]), label=f"{name} shape")
    n = batch if shape in ("row", "expanded") else 1
    values = dict(
        gamma=st.floats(0, 1.5, width=32),
        alpha=st.sampled_from([-1.0]) | st.floats(0, 1, width=32),
        temperature=st.sampled_from([0.0, 1e-40, 1e-45]) | st.floats(0.0625, 3, width=32),
        top_k=st.integers(0, 20),
        top_p=st.floats(0.0625, 1, width=32),
        seed=st.integers(-(2**63), 2**63 - 1),
        offset=st.integers(0, 2**40),
    )[name]
    items = data.draw(st.lists(values, min_size=n, max_size=n), label=f"{name} values")
    t = torch.tensor(items, dtype=ROW_TENSOR_DTYPES[name])
    if shape == "scalar":
        return t.reshape(())
    if shape == "expanded" and batch > 0:
        return t[:1].expand(batch)
    return t


WRONG_NUMBERS = dict(
    gamma=[-1e-50, -0.1, math.nan, "0.4", None, [0.4], 1 + 2j],
    alpha=[1 + 1e-12, -0.5, math.nan, None, "sometimes", True],
    temperature=[-1e-50, -1.0, math.nan, None, "hot"],
    top_k=[-1, -(2**32) + 5, 2**31, 2.0, np.float64(3.0), "5", True],
    top_p=[0.0, 1 + 1e-12, -0.5, math.nan, "0.9", True],
    seed=[1.5, np.float64(1.0), "7", True],
    offset=[1.0, None, "3", False],
    agree_bonus=[math.inf, math.nan, None, "0.1"],
)


def wrong_tensor(data, name, batch):
    """A per-row tensor of the wrong dtype, shape or device, or (on the
    CPU, where the op checks every value) with a value out of range."""
    dtype = ROW_TENSOR_DTYPES[name]
    kind = data.draw(st.sampled_from(["dtype", "shape", "meta", "range"]), label=f"{name} wrong")
    if kind == "range" and name in ("seed", "offset"):
        kind = "meta"  # every int64 is a valid seed or offset
    if kind == "dtype":
        other = {torch.float32: torch.float64, torch.int32: torch.int64, torch.int64: torch.int32}[
            dtype
        ]
        return torch.zeros(max(batch, 1), dtype=other)
    if kind == "shape":
        return (
            torch.zeros(batch + 2, dtype=dtype)
            if data.draw(st.booleans())
            else torch.zeros(max(batch, 1), 2, dtype=dtype)
        )
    if kind == "meta":
        return torch.zeros(max(batch, 1), dtype=dtype, device="meta")
    bad = dict(gamma=-1.0, alpha=1.5, temperature=-1.0, top_k=-2, top_p=0.0)[name]
    t = torch.full((max(batch, 1),), 0.5 if dtype.is_floating_point else 1, dtype=dtype)
    t[-1] = bad
    return t


# -------------------------------------------------------------------- maps --
def random_map(data, guide_vocab, vocab, dtype):
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31), label="map seed"))
    n = min(guide_vocab, vocab)
    mapping = torch.full((guide_vocab,), -1, dtype=torch.int64)
    slots = torch.randperm(guide_vocab, generator=gen)[:n]
    mapping[slots] = torch.randperm(vocab, generator=gen)[:n]
    unmapped = data.draw(st.sampled_from([0.0, 0.3, 1.0]), label="unmapped share")
    mapping[torch.rand(guide_vocab, generator=gen) < unmapped] = -1
    return mapping.to(dtype)


def wrong_map(data, guide_vocab, vocab):
    kind = data.draw(
        st.sampled_from(["length", "float", "range", "twice", "meta", "2d", "list"]),
        label="wrong map",
    )
    ok = random_map(data, guide_vocab, vocab, torch.int64)
    if kind == "length":
        return torch.cat([ok, torch.tensor([-1])])
    if kind == "float":
        return ok.float()
    if kind == "range":
        ok[0] = data.draw(st.sampled_from([vocab, vocab + 7, -2]))
        return ok
    if kind == "twice":
        return torch.zeros(guide_vocab, dtype=torch.int64) if guide_vocab > 1 else ok.double()
    if kind == "meta":
        return ok.to("meta")
    if kind == "2d":
        return ok[None]
    return ok.tolist()


# -------------------------------------------------------------------- call --
def draw_call(data):
    """(base, guide, kwargs, the wrong argument's name or None)."""
    batch = data.draw(st.sampled_from([0, 1, 2, 3, 5]), label="B")
    vocab = data.draw(
        st.sampled_from([1, 2, 7, 64, 257]) | st.sampled_from([4097, 9000]), label="V"
    )
    dtype = data.draw(
        st.sampled_from([torch.float32, torch.float16, torch.bfloat16]), label="dtype"
    )
    map_kind = data.draw(st.sampled_from(["none", "raw32", "raw64", "guide_map"]), label="map")
    guide_vocab = (
        vocab
        if map_kind == "none"
        else data.draw(st.sampled_from([vocab, vocab + 9, max(1, vocab // 2)]), label="Vg")
    )
    base = draw_logits(data, batch, vocab, dtype, "base")
    guide = draw_logits(data, batch, guide_vocab, dtype, "guide")
    kwargs = {}
    if map_kind != "none":
        index_dtype = torch.int32 if map_kind == "raw32" else torch.int64
        mapping = random_map(data, guide_vocab, vocab, index_dtype)
        kwargs["guide_to_base"] = (
            blendin_ext.guide_map(mapping, vocab) if map_kind == "guide_map" else mapping
        )
    for name in ROW_TENSOR_DTYPES:
        if data.draw(st.booleans(), label=f"{name} given"):
            tensor = data.draw(st.booleans(), label=f"{name} as tensor")
            kwargs[name] = (
                valid_tensor(data, name, batch) if tensor else valid_number(data, name, vocab)
            )
    if data.draw(st.booleans(), label="agree_bonus given"):
        kwargs["agree_bonus"] = data.draw(st.floats(-1, 1))
    wrong = data.draw(
        st.sampled_from([None] * 4 + ["number", "tensor", "logits", "map"]), label="wrong argument"
    )
    if wrong == "number":
        name = data.draw(st.sampled_from(sorted(WRONG_NUMBERS)))
        kwargs[name] = data.draw(st.sampled_from(WRONG_NUMBERS[name]), label=f"bad {name}")
        return base, guide, kwargs, name
    if wrong == "tensor":
        name = data.draw(st.sampled_from(sorted(ROW_TENSOR_DTYPES)))
        kwargs[name] = wrong_tensor(data, name, batch)
        return base, guide, kwargs, name
    if wrong == "map":
        kwargs["guide_to_base"] = wrong_map(data, guide_vocab, vocab)
        return base, guide, kwargs, "guide_to_base"
    if wrong == "logits":
        return wrong_logits(data, base, guide, kwargs)
    if guide_vocab != vocab and "guide_to_base" not in kwargs:
        return base, guide, kwargs, "guide_to_base"
    return base, guide, kwargs, None


def wrong_logits(data, base, guide, kwargs):
    kind = data.draw(
        st.sampled_from(["dtype", "1d", "3d", "rows", "mixed", "meta", "stride", "none"]),
        label="wrong logits",
    )
    if kind == "dtype":
        other = data.draw(st.sampled_from([torch.float64, torch.int32]))
        return base.to(other), guide, kwargs, "base_logits"
    if kind == "1d":
        return base.reshape(-1), guide, kwargs, "base_logits"
    if kind == "3d":
        return base, guide[None], kwargs, "guide_logits"
    if kind == "rows":
        extra = torch.zeros(1, guide.shape[1], dtype=guide.dtype)
        return base, torch.cat([guide, extra]), kwargs, "guide_logits"
    if kind == "mixed":
        other = torch.float32 if guide.dtype != torch.float32 else torch.float16
        return base, guide.to(other), kwargs, "guide_logits"
    if kind == "meta":
        return base, guide.to("meta"), kwargs, "guide_logits"
    if kind == "stride" and base.shape[0] >= 1 and base.shape[1] >= 2:
        every_other = torch.zeros(base.shape[0], 2 * base.shape[1], dtype=base.dtype)[:, ::2]
        every_other.copy_(base)
        return every_other, guide, kwargs, "base_logits"
    return None, guide, kwargs, "base_logits"


def splits_into_chunks(base, guide) -> bool:
    """More vocabulary chunks (4096 logits) than one thread's grain (8): the
    CPU kernel then spreads a step over threads."""
    if not all(isinstance(t, torch.Tensor) and t.dim() == 2 for t in (base, guide)):
        return False
    chunks = -(-base.shape[1] // 4096) + -(-guide.shape[1] // 4096)
    return base.shape[0] * chunks > 8


def check_one(base, guide, kwargs, wrong, outcomes):
    seed = kwargs.get("seed", None)
    state = torch.random.get_rng_state()
    drawn = fresh_seed()  # what seed=None draws, for the reference
    torch.random.set_rng_state(state)
    try:
        out = blendin_ext.blend_step(base, guide, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any error must name the argument
        assert wrong is not None, f"unexpected error for a valid call: {exc!r}"
        assert wrong in str(exc), f"error does not name {wrong}: {exc!r}"
        outcomes["error"] += 1
        return
    assert wrong is None, f"wrong {wrong} was accepted"
    ref_kwargs = dict(kwargs, seed=drawn if seed is None else seed)
    assert_matches_reference(out, base, guide, **ref_kwargs)
    mapping = kwargs.get("guide_to_base")
    g2b = getattr(mapping, "guide_to_base", mapping)
    bad = expected_bad_rows(base, guide, None if g2b is None else g2b.long())
    assert torch.equal(out.tokens == -1, bad), (out.tokens, bad)
    outcomes["bad rows" if bad.any() else "reference"] += 1
    outcomes["large"] += splits_into_chunks(base, guide)


@pytest.mark.parametrize("threads", [1, 2], ids=["1-thread", "2-threads"])
def test_every_call_matches_the_reference_flags_bad_rows_or_names_its_wrong_argument(threads):
    outcomes = Counter()
    before = torch.get_num_threads()

    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=DERANDOMIZE,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(st.data())
    def run(data):
        check_one(*draw_call(data), outcomes)

    try:
        torch.set_num_threads(threads)
        run()
    finally:
        torch.set_num_threads(before)
    total = outcomes["reference"] + outcomes["bad rows"] + outcomes["error"]
    print(
        f"\nfuzz ({threads} thread(s)): {total} cases: reference {outcomes['reference']}, "
        f"bad rows {outcomes['bad rows']}, error {outcomes['error']} "
        f"({outcomes['large']} results from rows large enough to split across threads)"
    )
    assert all(outcomes[k] > 0 for k in ("reference", "bad rows", "error")), outcomes
