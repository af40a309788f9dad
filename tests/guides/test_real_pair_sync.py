"""(slow) The default pair (Gemma-3-270m base, SmolLM2-135M-Instruct guide):
with strategy "guide" and token-level sync, the loop writes the guide's own
greedy chat answer token for token (its choices all have base twins here),
because the guide is handed back exactly the tokens it produced."""

import pytest
import torch

from blendin_ext import BlendInGenerator
from blendin_ext.cli.args import DEFAULT_BASE, DEFAULT_GUIDE
from blendin_ext.models import builtins
from blendin_ext.models.loading import load_model

PROMPTS = [
    # Re-tokenising the text hands the guide "ĊĊ" where it wrote "Ċ" "Ċ"
    # and, from there, a different list (the text mode's answer).
    "Question: Name a primary colour.\nAnswer:",
    "Question: What is the capital of France?\nAnswer:",
    "Write a haiku about the sea.",
    "Question: How many legs does a spider have?\nAnswer:",
]
NEW_TOKENS = 32


@pytest.fixture(scope="module")
def pair():
    for name in (DEFAULT_BASE, DEFAULT_GUIDE):
        try:
            builtins.builtin_chunks(builtins.BUILTIN_MODELS[name])
        except builtins.MissingModelPackage as missing:
            pytest.skip(f"demo model packages not installed: {missing.install}")
    # float32: in bf16 the guide's batched, padded forwards and its own
    # one-prompt generate() round differently and flip near-ties.
    return (
        load_model(DEFAULT_BASE, dtype="float32", progress=False),
        load_model(DEFAULT_GUIDE, dtype="float32", progress=False),
    )


@pytest.mark.slow
def test_guide_only_equals_the_guides_own_greedy_chat_answer(pair):
    base, guide = pair
    gen = BlendInGenerator(base.model, guide.model, base.tokenizer, guide.tokenizer)
    to_guide = gen.guide.guide_to_base.base_to_guide
    out = gen.generate(PROMPTS, strategy="guide", max_new_tokens=NEW_TOKENS)
    for row, prompt in enumerate(PROMPTS):
        ids = gen.guide.prompt_ids([prompt])[0]
        with torch.inference_mode():
            own = guide.model.generate(
                torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False
            )[0, len(ids) :].tolist()
        mine = [int(to_guide[t]) for t in out[row].token_ids]
        assert mine == own, (prompt, guide.tokenizer.decode(own), out[row].text)
        assert out[row].diagnostics.guide_twin_share == 1.0
