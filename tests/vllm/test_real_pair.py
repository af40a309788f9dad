"""The default cross-tokenizer pair inside vLLM (Gemma-3-270m base served by
vLLM, SmolLM2-135M-Instruct guide loaded by our loader): greedy base,
guide-only, BlendIn and nudging tokens equal blendin_ext.generate's, in one
batch of ragged prompts. Needs the demo pair's packages (converted once)."""

import pytest

pytest.importorskip("vllm")

from tests.helpers.vllm_engine import request, run_engine, tokens

pytestmark = pytest.mark.slow

PROMPTS = [
    "Question: What is the capital of France?\nAnswer:",
    "Give three tips for sleeping well.",
    "Write a haiku about rain.",
    "The best way to learn Python is",
]
STRATEGIES = ["base", "guide", "blendin", "nudging"]
STEPS = 24


@pytest.fixture(scope="module")
def pair():
    from blendin_ext.models.builtins import MissingModelPackage
    from blendin_ext.models.loading import load_model

    try:
        # float32 like the engine below (dtype="float32", guide_dtype="float32")
        return (
            load_model("gemma3-270m", dtype="float32"),
            load_model("smollm2-135m-instruct", dtype="float32"),
        )
    except MissingModelPackage as exc:
        pytest.skip(str(exc))


def test_default_pair_equals_our_loop(pair):
    import blendin_ext

    base, guide = pair
    run = run_engine(
        dict(
            model=base.path,
            max_model_len=512,
            enforce_eager=True,
            dtype="float32",
            max_num_seqs=8,
            seed=0,
            additional_config={
                "blendin": {"guide": "smollm2-135m-instruct", "guide_dtype": "float32"}
            },
        ),
        [
            [
                request(p, blendin={"strategy": s, "request_id": f"r{i}"}, max_tokens=STEPS)
                for i, (p, s) in enumerate(zip(PROMPTS, STRATEGIES))
            ]
        ],
    )
    expected = blendin_ext.generate(
        base.model,
        guide.model,
        PROMPTS,
        tokenizer=base.tokenizer,
        guide_tokenizer=guide.tokenizer,
        strategy=STRATEGIES,
        max_new_tokens=STEPS,
        lazy=True,
    )
    got = tokens(run["batches"][0])
    for engine_tokens, result in zip(got, expected):
        assert engine_tokens[: len(result.token_ids)] == result.token_ids
    by_id = run["diagnostics"]
    rates = [by_id[f"r{i}"]["intervention_rate"] for i in range(len(PROMPTS))]
    assert rates[0] == 0.0 and rates[1] == 1.0
