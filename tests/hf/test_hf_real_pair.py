"""(slow) The default pair: BlendIn through transformers' generate() writes
the same text as `blendin generate`."""

import json

import pytest

from blendin_ext import cli
from blendin_ext.cli.args import DEFAULT_BASE, DEFAULT_GUIDE
from blendin_ext.hf import BlendIn
from blendin_ext.models import builtins
from blendin_ext.models.loading import load_model

PROMPT = "Question: What is the capital of France?\nAnswer:"


@pytest.mark.slow
def test_generate_and_the_command_line_agree_on_the_default_pair(capsys):
    for name in (DEFAULT_BASE, DEFAULT_GUIDE):
        try:
            builtins.builtin_chunks(builtins.BUILTIN_MODELS[name])
        except builtins.MissingModelPackage as missing:
            pytest.skip(f"demo model packages not installed: {missing.install}")
    assert (
        cli.main(["generate", "--prompt", PROMPT, "--max-new-tokens", "24", "--json", "--quiet"])
        == 0
    )
    expected = json.loads(capsys.readouterr().out)["results"][0]["text"]

    base = load_model(DEFAULT_BASE, progress=False)
    guide = load_model(DEFAULT_GUIDE, progress=False)
    blend = BlendIn(guide.model, guide.tokenizer, tokenizer=base.tokenizer)
    inputs = base.tokenizer([PROMPT], return_tensors="pt")
    # generate() ends rows at its EOS ids only; give it the loop's (both models' conventions).
    stop_ids = sorted(blend.generator_for(base.model).stop_ids)
    sequences = base.model.generate(
        **inputs, max_new_tokens=24, do_sample=False, eos_token_id=stop_ids, custom_generate=blend
    )
    assert blend.last_output[0].text == expected
    new = sequences[0, inputs["input_ids"].shape[1] :]
    assert base.tokenizer.decode(new, skip_special_tokens=True).startswith(expected)
