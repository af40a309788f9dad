"""DecodeOptions travel whole: built once, handed on, fields replaced by
keyword; the run state and the op's arguments are built by keyword."""

import dataclasses

import pytest

from blendin_ext.decode.batch import DecodeRun
from blendin_ext.decode.options import DecodeOptions, RowParams


def test_options_of_replaces_fields_and_checks_them_again():
    base = DecodeOptions(strategy="nudging", stop="\n", max_new_tokens=8)
    assert DecodeOptions.of(base) is base
    changed = DecodeOptions.of(base, temperature=0.7)
    assert changed.temperature == 0.7 and changed.strategy == "nudging"
    assert changed.stop_strings == ("\n",) and base.temperature == 0.0
    assert DecodeOptions.of(None, lazy=True).lazy
    with pytest.raises(ValueError, match="guide_sync"):
        DecodeOptions.of(base, guide_sync="bytes")
    with pytest.raises(TypeError, match="options must be a DecodeOptions"):
        DecodeOptions.of({"lazy": True})


def test_row_params_fill_the_op_arguments_by_name():
    params = RowParams.build(2, "cpu", DecodeOptions(gamma=[0.4, 0.0], top_k=5, seed=3))
    args = params.args
    assert args.gamma_tensor.tolist() == pytest.approx([0.4, 0.0])
    assert args.top_k_tensor is None and args.top_k_value == 5
    assert args.seed_tensor.tolist() == [3, 4] and args.offset_tensor is None
    assert params.select([1]).args.gamma_tensor.tolist() == [0.0]


def test_the_run_state_is_built_by_keyword():
    assert all(f.kw_only for f in dataclasses.fields(DecodeRun))


def test_generate_takes_options_whole_or_by_field():
    from blendin_ext import BlendInGenerator
    from blendin_ext.testing import random_prompts, tiny_llama, tiny_tokenizer

    tok = tiny_tokenizer(120)
    gen = BlendInGenerator(tiny_llama(120, seed=0), tiny_llama(120, seed=1), tok)
    prompts = random_prompts(2, seed=3)
    options = DecodeOptions(strategy="blendin", max_new_tokens=4, temperature=0.8, seed=5)
    whole = gen.generate(prompts, options=options)
    fields = gen.generate(prompts, strategy="blendin", max_new_tokens=4, temperature=0.8, seed=5)
    assert [r.token_ids for r in whole] == [r.token_ids for r in fields]
    shorter = gen.generate(prompts, options=options, max_new_tokens=2)
    assert all(len(r.token_ids) <= 2 for r in shorter)
