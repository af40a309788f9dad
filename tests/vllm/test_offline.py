"""The plug-in inside a real vLLM engine (offline LLM) on tiny saved models.

What must hold: a request without extra_args.blendin, and strategy base,
equal vLLM alone (bit for bit, greedy and seeded sampling); greedy BlendIn,
nudging and guide-only equal blendin_ext.generate for the same models and
prompts (ragged prompts, several strategies in one batch), lazy and eager,
same- and cross-tokenizer; seeded sampling is reproducible and equals our
loop's; preemption changes nothing; bad per-request arguments fail that
request with the field's name and the engine keeps serving.

Each engine runs in its own subprocess (tests/vllm/engine_run.py); the
module starts five, ~10 s each.
"""

import pytest

pytest.importorskip("vllm")

import torch

import blendin_ext
from blendin_ext.testing import random_prompts
from tests.helpers.tiny_folders import save_tiny
from tests.helpers.vllm_engine import request, run_engine, tokens

PROMPTS = random_prompts(4, min_words=1, max_words=9, seed=3)  # ragged on purpose
STRATEGIES = ["base", "guide", "blendin", "nudging"]
STEPS = 12
SAMPLED = dict(temperature=0.8, top_p=0.9, top_k=50)
LONG = random_prompts(6, min_words=3, max_words=6, seed=9)
LONG_STEPS = 150  # with 32-token blocks and 12 blocks, six of these must preempt


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    words = [f"x{i}" for i in range(150)] + [f"w{i}" for i in range(42)]
    return {
        "base": save_tiny(root / "base", seed=0),
        "guide": save_tiny(root / "guide", seed=1),
        "cross": save_tiny(root / "cross", seed=2, words=words),
    }


def engine(folders, guide=None, **blendin):
    config = dict(
        model=str(folders["base"]),
        max_model_len=256,
        enforce_eager=True,
        dtype="float32",
        max_num_seqs=16,
        seed=0,
    )
    if guide is not None:
        config["additional_config"] = {
            "blendin": {"guide": str(folders[guide]), "guide_dtype": "float32", **blendin}
        }
    return config


def common_batches():
    return [
        [request(p) for p in PROMPTS],  # 0 untouched
        [request(p, blendin={"strategy": "base"}) for p in PROMPTS],  # 1 base
        [request(p, seed=11 + i, **SAMPLED) for i, p in enumerate(PROMPTS)],  # 2 sampled
    ]


def blend_batches():
    mixed = [
        request(p, blendin={"strategy": s, "request_id": f"mixed-{i}"})
        for i, (p, s) in enumerate(zip(PROMPTS, STRATEGIES))
    ]
    untouched_sampled = [request(PROMPTS[0], seed=11, **SAMPLED)]
    seeded = [
        request(p, blendin={"strategy": "blendin"}, seed=7 + i, **SAMPLED)
        for i, p in enumerate(PROMPTS)
    ]
    many = [request(p, blendin={"strategy": s}) for s in STRATEGIES for p in PROMPTS]
    return (
        common_batches()
        + [
            mixed,  # 3
            untouched_sampled + mixed[1:],  # 4
            seeded,
            seeded,  # 5, 6
            many,  # 7
            [request(PROMPTS[0], blendin={"gamma": -1})],  # 8 bad
            [request(PROMPTS[0], blendin={"strategy": "nope"})],  # 9 bad
            [request(PROMPTS[0], blendin={"temperature": 1})],  # 10 bad key
            [request(PROMPTS[0], blendin={"strategy": "guide"}, logprobs=1)],  # 11 after errors
            long_batch(),  # 12
        ]
    )


def long_batch():
    return [
        request(p, blendin={"strategy": s}, max_tokens=LONG_STEPS)
        for p, s in zip(LONG, STRATEGIES * 2)
    ]


@pytest.fixture(scope="module")
def plain(folders):
    return run_engine(engine(folders), common_batches())


@pytest.fixture(scope="module")
def blend(folders):
    return run_engine(engine(folders, "guide"), blend_batches())


@pytest.fixture(scope="module")
def models(folders):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    load = lambda name: AutoModelForCausalLM.from_pretrained(folders[name]).eval()  # noqa: E731
    return {name: load(name) for name in folders} | {
        "tok": AutoTokenizer.from_pretrained(folders["base"]),
        "cross_tok": AutoTokenizer.from_pretrained(folders["cross"]),
    }


def loop(models, guide="guide", prompts=PROMPTS, **options):
    """Our own decode loop on the same models: its tokens per prompt."""
    out = blendin_ext.generate(
        models["base"],
        models[guide],
        prompts,
        tokenizer=models["tok"],
        guide_tokenizer=models["cross_tok"] if guide == "cross" else None,
        max_new_tokens=options.pop("max_new_tokens", STEPS),
        lazy=True,
        **options,
    )
    return [r.token_ids for r in out]


def same_prefix(engine_tokens, loop_tokens):
    """vLLM ignores EOS here; the loop stops at the stop ids of both
    models' conventions, so it may end earlier: compare its length."""
    return [e[: len(t)] for e, t in zip(engine_tokens, loop_tokens)] == loop_tokens


# ----------------------------------------------------------- untouched / base
def test_untouched_requests_equal_vllm_alone(plain, blend):
    assert tokens(blend["batches"][0]) == tokens(plain["batches"][0])
    assert tokens(blend["batches"][2]) == tokens(plain["batches"][2])  # seeded sampling too
    # ... also beside blended rows in one batch.
    assert tokens(blend["batches"][4])[0] == tokens(plain["batches"][2])[0]


def test_strategy_base_equals_vllm_alone(plain, blend):
    assert tokens(blend["batches"][1]) == tokens(plain["batches"][0])


# ------------------------------------------------------------ the decode loop
def test_mixed_strategies_equal_our_loop(blend, models):
    expected = loop(models, strategy=STRATEGIES)
    assert same_prefix(tokens(blend["batches"][3]), expected)
    many = tokens(blend["batches"][7])
    for k, strategy in enumerate(STRATEGIES):
        assert same_prefix(many[4 * k : 4 * k + 4], loop(models, strategy=strategy)), strategy


def test_seeded_sampling_is_reproducible_and_equals_our_loop(blend, models):
    first, second = tokens(blend["batches"][5]), tokens(blend["batches"][6])
    assert first == second
    expected = loop(
        models, strategy="blendin", seed=[7 + i for i in range(len(PROMPTS))], **SAMPLED
    )
    assert same_prefix(first, expected)


def test_preemption_changes_nothing(folders, blend):
    budget = engine(folders, "guide") | dict(block_size=32, num_gpu_blocks_override=12)
    tight = run_engine(budget, [long_batch()])
    assert tokens(tight["batches"][0]) == tokens(blend["batches"][12])
    assert sum(d["resumed"] for d in tight["diagnostics"].values()) > 0, "nothing was preempted"


def test_eager_equals_lazy(folders, blend, models):
    eager = run_engine(engine(folders, "guide", lazy=False), [blend_batches()[3]])
    assert tokens(eager["batches"][0]) == tokens(blend["batches"][3])


def test_cross_tokenizer_guide_equals_our_loop(folders, models):
    run = run_engine(
        engine(folders, "cross"),
        [[request(p, blendin={"strategy": s}) for p, s in zip(PROMPTS, STRATEGIES)]],
    )
    assert same_prefix(tokens(run["batches"][0]), loop(models, "cross", strategy=STRATEGIES))


# ------------------------------------------------------- errors, diagnostics
def test_bad_arguments_name_the_field_and_the_engine_survives(blend):
    assert "extra_args.blendin.gamma" in blend["batches"][8]["error"]
    assert "extra_args.blendin.strategy" in blend["batches"][9]["error"]
    assert "unknown key(s) temperature" in blend["batches"][10]["error"]
    assert len(tokens(blend["batches"][11])[0]) == STEPS


def test_diagnostics_by_request_id(blend):
    """Keyed by extra_args.blendin.request_id; requests without one get
    request-N; requests without BlendIn get none."""
    diagnostics = blend["diagnostics"]
    for i, strategy in enumerate(STRATEGIES):
        diag = diagnostics[f"mixed-{i}"]
        assert diag["strategy"] == strategy and diag["tokens"] == STEPS
    assert diagnostics["mixed-0"]["interventions"] == 0
    assert diagnostics["mixed-1"]["intervention_rate"] == 1.0
    assert any(key.startswith("request-") for key in diagnostics)


@pytest.mark.parametrize("async_scheduling", [True, False], ids=["async", "sync"])
def test_async_scheduling_changes_nothing(folders, blend, models, async_scheduling):
    """vLLM's asynchronous scheduling leaves placeholders in the engine's
    output lists; the plug-in fills them with its own tokens and never feeds
    one to the guide: greedy and seeded tokens are the same either way."""
    config = engine(folders, "guide") | dict(async_scheduling=async_scheduling)
    batches = blend_batches()
    run = run_engine(config, [batches[3], batches[5]])
    assert tokens(run["batches"][0]) == tokens(blend["batches"][3])
    assert tokens(run["batches"][1]) == tokens(blend["batches"][5])
    assert same_prefix(tokens(run["batches"][0]), loop(models, strategy=STRATEGIES))


def test_logprobs_are_the_base_models(blend, models):
    """vLLM returns raw logprobs: the base model's, before the plug-in."""
    result = blend["batches"][11][0]
    ids = models["tok"](PROMPTS[0])["input_ids"]
    with torch.no_grad():
        full = torch.tensor([ids + result["tokens"]])
        logp = models["base"](full).logits[0].log_softmax(-1)
    expected = [float(logp[len(ids) - 1 + i, t]) for i, t in enumerate(result["tokens"])]
    assert result["logprobs"] == pytest.approx(expected, abs=1e-3)


def test_a_guide_that_cannot_load_stops_start_up_with_our_message(folders, tmp_path):
    with pytest.raises(AssertionError, match="BlendIn: could not load the guide"):
        run_engine(
            engine(folders)
            | {"additional_config": {"blendin": {"guide": str(tmp_path / "no-such-model")}}},
            [],
        )
