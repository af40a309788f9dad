"""The compiled step model: a static KV cache sized per call and a compiled
one-token forward give the loop's own tokens (the static cache without
compiling here; torch.compile, which takes minutes on a CPU, in slow tests)."""

import pytest

from blendin_ext import BlendInGenerator
from blendin_ext.models.compiled import CACHE_BUCKET, CompiledHFStepModel, compiled_step_model
from blendin_ext.testing import random_prompts, tiny_llama, tiny_tokenizer

PROMPTS = random_prompts(3, min_words=1, max_words=9, seed=3)


@pytest.fixture(scope="module")
def models():
    return tiny_llama(200, seed=0), tiny_llama(200, seed=1), tiny_tokenizer(200)


def tokens(output):
    return [r.token_ids for r in output]


@pytest.mark.parametrize("lazy", [True, False])
def test_static_cache_path_equals_the_dynamic_one(models, lazy):
    base, guide, tok = models
    options = dict(max_new_tokens=12, strategy=["blendin", "nudging", "base"], lazy=lazy)
    ref = BlendInGenerator(base, guide, tok).generate(PROMPTS, **options)
    gen = BlendInGenerator(
        CompiledHFStepModel(base, backend=None), CompiledHFStepModel(guide, backend=None), tok
    )
    assert tokens(gen.generate(PROMPTS, **options)) == tokens(ref)
    # A second call of another size gets a new cache.
    options["strategy"] = options["strategy"][:1]
    assert tokens(gen.generate(PROMPTS[:1], **options)) == tokens(ref)[:1]


def test_cache_lengths_are_bucketed(models):
    step = CompiledHFStepModel(models[0], backend=None)
    step.reserve(10)
    assert step._reserved == CACHE_BUCKET
    step.reserve(CACHE_BUCKET)  # plus half for a guide's longer tokenisation
    assert step._reserved == 2 * CACHE_BUCKET


def test_compile_needs_an_hf_model():
    assert compiled_step_model(len, False) is len
    with pytest.raises(TypeError, match="compile needs a transformers causal LM"):
        compiled_step_model(lambda ids, state: ids, True)


@pytest.mark.slow
@pytest.mark.parametrize("compile", ["eager", True])  # dynamo alone, then inductor
def test_torch_compile_gives_the_same_tokens(models, compile):
    base, guide, tok = models
    options = dict(max_new_tokens=8, strategy="blendin", lazy=True)
    ref = BlendInGenerator(base, guide, tok).generate(PROMPTS, **options)
    gen = BlendInGenerator(base, guide, tok, compile=compile)
    assert isinstance(gen.base.model, CompiledHFStepModel)
    assert tokens(gen.generate(PROMPTS, **options)) == tokens(ref)


def test_cross_tokenizer_guide_on_a_static_cache(tmp_path, monkeypatch):
    """The guide's roll-backs crop the static cache; tokens stay the same."""
    from blendin_ext.testing import tiny_llama_for
    from tests.helpers.tokenizer_fixtures import trained_byte_level, trained_sentencepiece

    monkeypatch.setenv("BLENDIN_CACHE", str(tmp_path))
    guide_tok, base_tok = trained_byte_level(), trained_sentencepiece()
    base, guide = tiny_llama_for(base_tok, seed=1), tiny_llama_for(guide_tok, seed=2)
    prompts = ["the cat sat on", "a dog", "near the river bank while the birds"]
    options = dict(max_new_tokens=16, strategy="blendin", lazy=True)
    ref = BlendInGenerator(base, guide, base_tok, guide_tok).generate(prompts, **options)
    gen = BlendInGenerator(
        CompiledHFStepModel(base, backend=None),
        CompiledHFStepModel(guide, backend=None),
        base_tok,
        guide_tok,
    )
    out = gen.generate(prompts, **options)
    assert tokens(out) == tokens(ref) and out.stats.guide_forwards > 0
