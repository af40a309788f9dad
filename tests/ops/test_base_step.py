"""`run_base_step`, the first call of a lazy step: the op with the base
alone. Its `intervened` and its tokens for rows that do not intervene must be
the full op's, whatever the guide; greedy, its tokens are the base argmax."""

import pytest
import torch

from blendin_ext.ops.args import StepArgs
from blendin_ext.ops.fused import run_base_step, run_step
from blendin_ext.testing.op_cases import DTYPES, confident_logits


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("vocab", [1, 7, 50257])
@pytest.mark.parametrize(
    "sampling", [dict(temperature=0.0), dict(temperature=0.8, top_k=40, top_p=0.9)]
)
def test_base_step_equals_the_op_where_it_does_not_intervene(dtype, vocab, sampling):
    base = confident_logits(16, vocab, seed=vocab, dtype=dtype)
    guide = confident_logits(16, vocab, seed=vocab + 1, dtype=dtype)
    base[3, :] = float("nan")  # a bad row stays bad
    alpha = torch.tensor([-1.0, 0.5, 1.0, 0.3] * 4)  # per-row weights are set aside
    args = StepArgs.build(gamma=0.4, alpha=alpha, seed=torch.arange(16), offset=5, **sampling)
    full, first = run_step(base, guide, None, args), run_base_step(base, args)
    assert torch.equal(first.intervened, full.intervened)
    assert torch.equal(first.base_top_prob.isnan(), full.base_top_prob.isnan())
    assert torch.equal(first.base_top_prob.nan_to_num(), full.base_top_prob.nan_to_num())
    keep = ~full.intervened
    assert torch.equal(first.tokens[keep], full.tokens[keep])
    assert (first.alpha.nan_to_num() == 0).all()
    if vocab > 1:
        assert full.intervened.any() and keep.any()
    if not sampling["temperature"]:
        good = torch.arange(16) != 3
        assert torch.equal(first.tokens[good], base.float().argmax(-1)[good])
        assert first.tokens[3] == -1


def test_base_step_with_a_wide_batch_and_strided_rows():
    wide = confident_logits(8, 1000, seed=9, pad=24)
    args = StepArgs.build(gamma=0.4)
    first = run_base_step(wide, args)
    assert torch.equal(first.tokens, wide.argmax(-1))
    assert torch.equal(first.intervened, run_step(wide, wide, None, args).intervened)
