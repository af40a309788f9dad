"""The bfloat16 linear op (blendin_ext::bf16_linear) against a float64
product, its kernels against each other, its layout, errors and tracing."""

import pytest
import torch

from blendin_ext.models.bf16_linear import (
    bf16_linear,
    bf16_linear_kernels,
    fast_bf16_linear,
    pack_bf16_weight,
    unpack_bf16_weight,
)

KERNELS = bf16_linear_kernels()
needs_fast = pytest.mark.skipif(not fast_bf16_linear(), reason="this CPU has no AVX512_BF16")


def case(rows, out_features, in_features, bias, seed=0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_features, in_features, generator=g).bfloat16()
    x = torch.randn(*rows, in_features, generator=g).bfloat16()
    b = torch.randn(out_features, generator=g).bfloat16() if bias else None
    return x, weight, b


def reference(x, weight, bias):
    y = x.double() @ weight.double().T
    return y + bias.double() if bias is not None else y


# Odd and block-straddling sizes, one row and many (a prompt), 3-D inputs.
SHAPES = [
    ((1,), 1, 1),
    ((1,), 7, 5),
    ((3,), 65, 1),
    ((2, 3), 100, 33),
    ((8,), 1536, 640),
    ((13,), 130, 64),
    ((64,), 640, 2048),
    ((1,), 262144, 64),
    ((0,), 64, 8),
]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("rows,out_features,in_features", SHAPES)
@pytest.mark.parametrize("bias", [False, True])
def test_the_op_matches_a_float64_product(kernel, rows, out_features, in_features, bias):
    x, weight, b = case(rows, out_features, in_features, bias)
    y = bf16_linear(x, pack_bf16_weight(weight), b, out_features, kernel)
    assert y.dtype == torch.bfloat16 and y.shape == (*rows, out_features)
    expected = reference(x, weight, b)
    # float32 sums rounded once to bfloat16: within a bfloat16 step of the exact value
    torch.testing.assert_close(y.double(), expected, rtol=2**-7, atol=1e-3 * in_features**0.5)
    plain = torch.nn.functional.linear(x, weight, b).double()  # and as close as F.linear
    if y.numel():
        assert (y.double() - expected).abs().max() <= 2 * (plain - expected).abs().max() + 1e-6


@needs_fast
@pytest.mark.parametrize("rows,out_features,in_features", SHAPES)
def test_the_kernels_agree_bit_for_bit(rows, out_features, in_features):
    x, weight, b = case(rows, out_features, in_features, True, seed=1)
    packed = pack_bf16_weight(weight)
    assert torch.equal(
        bf16_linear(x, packed, b, out_features, "avx512_bf16"),
        bf16_linear(x, packed, b, out_features, "generic"),
    )
    assert torch.equal(
        bf16_linear(x, packed, b, out_features),  # "auto": the fast one
        bf16_linear(x, packed, b, out_features, "avx512_bf16"),
    )


def test_special_values_propagate():
    x, weight, _ = case((2,), 70, 9, False)
    x[0, 3] = float("inf")
    x[1, 4] = float("nan")
    y = bf16_linear(x, pack_bf16_weight(weight), None, 70)
    expected = torch.nn.functional.linear(x.float(), weight.float())
    assert torch.equal(y.float().isnan(), expected.isnan())
    assert torch.equal(y.float().isinf(), expected.isinf())


@pytest.mark.parametrize("out_features,in_features", [(1, 1), (64, 2), (65, 3), (200, 77)])
def test_packing_round_trips_exactly(out_features, in_features):
    weight = torch.randn(out_features, in_features).bfloat16()
    packed = pack_bf16_weight(weight)
    assert packed.shape == (-(-out_features // 64), -(-in_features // 2), 64, 2)
    assert packed[0, 0, 0, 0] == weight[0, 0]
    if in_features > 1 and out_features > 1:
        assert packed[0, 0, 1, 1] == weight[1, 1]
    assert torch.equal(unpack_bf16_weight(packed, out_features, in_features), weight)


def test_bad_arguments_name_the_argument():
    x, weight, b = case((2,), 70, 9, True)
    packed = pack_bf16_weight(weight)
    with pytest.raises(RuntimeError, match="x must be a bfloat16 CPU tensor"):
        bf16_linear(x.float(), packed, b, 70)
    with pytest.raises(RuntimeError, match="packed_weight must be a bfloat16"):
        bf16_linear(x, packed.float(), b, 70)
    with pytest.raises(RuntimeError, match=r"packed_weight must have shape \(blocks, input pairs"):
        bf16_linear(x, weight, b, 70)
    with pytest.raises(RuntimeError, match="packed_weight must be contiguous"):
        bf16_linear(x, packed.transpose(0, 1), b, 70)
    with pytest.raises(RuntimeError, match="packed_weight holds 5 input pairs, x has 12"):
        bf16_linear(torch.zeros(2, 12, dtype=torch.bfloat16), packed, b, 70)
    with pytest.raises(RuntimeError, match="out_features 129 does not fit"):
        bf16_linear(x, packed, None, 129)
    with pytest.raises(RuntimeError, match="out_features -1 does not fit"):
        bf16_linear(x, packed, None, -1)
    with pytest.raises(RuntimeError, match=r"bias must have shape \(70,\)"):
        bf16_linear(x, packed, b[:-1], 70)
    with pytest.raises(RuntimeError, match="bias must be a bfloat16"):
        bf16_linear(x, packed, b.float(), 70)
    with pytest.raises(RuntimeError, match="x must have at least one dimension"):
        bf16_linear(x[0, 0], packed, b, 70)
    with pytest.raises(RuntimeError, match="no kernel named 'sse'"):
        bf16_linear(x, packed, b, 70, "sse")
    with pytest.raises(TypeError, match="2-D bfloat16"):
        pack_bf16_weight(weight.float())


def test_non_contiguous_inputs_are_read_correctly():
    x, weight, b = case((6,), 70, 9, True)
    packed = pack_bf16_weight(weight)
    wide = torch.zeros(6, 20, dtype=torch.bfloat16)
    wide[:, :9] = x
    assert torch.equal(bf16_linear(wide[:, :9], packed, b, 70), bf16_linear(x, packed, b, 70))
    assert torch.equal(bf16_linear(x[::2], packed, b, 70), bf16_linear(x, packed, b, 70)[::2])


def test_opcheck():
    x, weight, b = case((3, 2), 70, 9, True)
    packed = pack_bf16_weight(weight)
    for args in ((x, packed, b, 70), (x[0], packed, None, 70)):
        torch.library.opcheck(torch.ops.blendin_ext.bf16_linear.default, args)


def test_inductor_compiles_the_op_without_graph_breaks():
    x, weight, b = case((4,), 70, 9, True)
    packed = pack_bf16_weight(weight)
    fn = torch.compile(lambda v: bf16_linear(v, packed, b, 70, "generic") * 2, fullgraph=True)
    assert torch.equal(fn(x), bf16_linear(x, packed, b, 70) * 2)
