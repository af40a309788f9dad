"""The op's argument types and the one set of parameter checks: StepArgs
follows the registered schema, and every bad value is named."""

import math

import pytest
import torch

import blendin_ext
from blendin_ext.ops import validate
from blendin_ext.ops.args import BlendStepResult, StepArgs
from blendin_ext.ops.strategies import AUTO


def test_step_args_follow_the_schema():
    schema = torch.ops.blendin_ext.blend_step.default._schema
    names = [a.name for a in schema.arguments]
    assert names[:4] == ["base_logits", "guide_logits", "guide_to_base", "base_to_guide"]
    assert tuple(names[4:]) == StepArgs._fields
    assert tuple(r.name for r in schema.returns) == BlendStepResult._fields


def test_step_args_build_pairs_numbers_and_tensors():
    gamma = torch.tensor([0.1, 0.9])
    args = StepArgs.build(gamma=gamma, alpha="auto", top_k=None, top_p=None, seed=-1)
    assert args.gamma_tensor is gamma and args.alpha_value == AUTO
    assert (args.top_k_value, args.top_p_value) == (0, 1.0)
    assert args.seed_value == -1 and args.at_offset(7).offset_value == 7
    assert StepArgs.build(seed=2**64 - 1).seed_value == -1  # same 64 bits, as int64
    assert StepArgs.build(seed=2**63).seed_value == -(2**63)


@pytest.mark.parametrize(
    "name, value, match",
    [
        ("gamma", -0.1, "gamma must be a number >= 0"),
        ("gamma", math.nan, "gamma must be a number >= 0"),
        ("alpha", 1.5, 'alpha must be "auto" or a number in \\[0, 1\\]'),
        ("alpha", "sometimes", "alpha must be"),
        ("alpha", None, "alpha must be"),
        ("agree_bonus", None, "agree_bonus must be a finite number"),
        ("temperature", -1, "temperature must be a number >= 0"),
        ("top_k", -2, "top_k must be None or an int >= 0"),
        ("top_k", 2.0, "top_k must be None or an int >= 0"),
        ("top_p", 0.0, "top_p must be None or a number in \\(0, 1\\]"),
        ("top_p", 1.5, "top_p must be None or a number in \\(0, 1\\]"),
        ("seed", 1.5, "seed must be an int"),
        ("offset", True, "offset must be an int"),
    ],
)
def test_blend_step_names_each_bad_number(name, value, match):
    x = torch.zeros(1, 5)
    with pytest.raises(ValueError, match=match):
        blendin_ext.blend_step(x, x, **{name: value})


def test_checks_return_canonical_values_and_name_the_caller():
    assert validate.check_alpha("auto") == "auto" and validate.check_alpha(1) == 1.0
    assert validate.check_top_k(None) is None and validate.check_top_p(1) == 1.0
    with pytest.raises(ValueError, match=r"--batch-size must be an int >= 1, got 0 \(here\)"):
        validate.check_count(0, "--batch-size", " (here)")
    with pytest.raises(ValueError, match="^must be a number >= 0"):
        validate.check_gamma(-1, "")  # argparse prefixes the option itself
