"""The op under torch.library.opcheck and torch.compile(fullgraph=True)."""

import pytest
import torch

import blendin_ext
from blendin_ext.ops.args import StepArgs
from blendin_ext.testing.op_cases import confident_logits, random_guide_map


def _op_args(base, guide, *, mapping=None, per_row=False, temperature=0.0):
    """The raw op's positional arguments, per-row tensors or scalars."""
    batch = base.shape[0]
    maps = blendin_ext.guide_map(mapping, base.shape[1]) if mapping is not None else None

    def value(v, dtype=torch.float32):
        return torch.full((batch,), v, dtype=dtype) if per_row else v

    args = StepArgs.build(
        gamma=value(0.4),
        alpha=value(-1.0) if per_row else "auto",
        temperature=value(temperature),
        top_k=value(5, torch.int32),
        top_p=value(0.9),
        agree_bonus=0.1,
        seed=torch.arange(batch, dtype=torch.int64) if per_row else 3,
        offset=torch.tensor([4], dtype=torch.int64) if per_row else 4,
    )
    return (
        base,
        guide,
        None if maps is None else maps.guide_to_base,
        None if maps is None else maps.base_to_guide,
        *args,
    )


@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
@pytest.mark.parametrize("with_map", [False, True])
def test_opcheck(per_row, temperature, with_map):
    base = confident_logits(4, 300, seed=1)
    guide = confident_logits(4, 350 if with_map else 300, seed=2)
    mapping = random_guide_map(350, 300, seed=3) if with_map else None
    args = _op_args(base, guide, mapping=mapping, per_row=per_row, temperature=temperature)
    torch.library.opcheck(torch.ops.blendin_ext.blend_step.default, args)


def test_opcheck_half_precision_and_empty_batch():
    for dtype in (torch.float16, torch.bfloat16):
        base = confident_logits(3, 129, seed=4, dtype=dtype)
        guide = confident_logits(3, 129, seed=5, dtype=dtype)
        torch.library.opcheck(torch.ops.blendin_ext.blend_step.default, _op_args(base, guide))
    empty = torch.zeros(0, 10)
    torch.library.opcheck(torch.ops.blendin_ext.blend_step.default, _op_args(empty, empty))


def test_compiled_step_matches_eager():
    def step(base_logits, guide_logits, gamma, offset):
        base_logits = base_logits.float() / 1.0  # some surrounding graph work
        out = blendin_ext.blend_step(
            base_logits,
            guide_logits,
            gamma=gamma,
            alpha="auto",
            temperature=0.7,
            top_k=50,
            seed=123,
            offset=offset,
        )
        return out.tokens + 0, out.alpha * 2

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    base, guide = confident_logits(5, 1000, seed=6), confident_logits(5, 1000, seed=7)
    gamma = torch.full((5,), 0.6)
    offset = torch.tensor([9])
    eager = step(base, guide, gamma, offset)
    got = compiled(base, guide, gamma, offset)
    assert torch.equal(got[0], eager[0])
    torch.testing.assert_close(got[1], eager[1])
