"""The plug-in's parts that need no vLLM: configuration checks (each error
names its field) and the core behind the V1 adapter, driven by a hand-made
persistent batch (rows added, moved, swapped, removed and resumed, tokens
committed at once or as asynchronous placeholders), checked against the
decode loop."""

import pytest
import torch

import blendin_ext
from blendin_ext.guides.factory import make_guide_stream
from blendin_ext.testing import random_prompts, tiny_llama, tiny_llama_for, tiny_tokenizer
from blendin_ext.vllm.config import EngineConfig, RequestConfig, validate_request
from blendin_ext.vllm.core import BlendCore
from blendin_ext.vllm.diagnostics import read_diagnostics
from blendin_ext.vllm.runner_v1 import BatchRows
from blendin_ext.vllm.stats import read_stats
from tests.helpers.tokenizer_fixtures import trained_byte_level, trained_sentencepiece
from tests.helpers.vllm_engine import fake_params

VOCAB = 200


@pytest.mark.parametrize(
    "given, field",
    [
        ({"gamma": -1}, "extra_args.blendin.gamma"),
        ({"gamma": "high"}, "extra_args.blendin.gamma"),
        ({"alpha": 2}, "extra_args.blendin.alpha"),
        ({"agree_bonus": float("nan")}, "extra_args.blendin.agree_bonus"),
        ({"strategy": "nope"}, "extra_args.blendin.strategy"),
        ({"strategy": 3}, "extra_args.blendin.strategy"),
        ({"request_id": 7}, "extra_args.blendin.request_id"),
        ({"request_id": ""}, "extra_args.blendin.request_id"),
        ({"top_p": 0.5}, "unknown key(s) top_p"),
        ("not json", "extra_args.blendin must be a JSON object"),
        ('{"gamma": 0.3', "extra_args.blendin must be a JSON object"),
    ],
)
def test_bad_request_arguments_name_the_field(given, field):
    with pytest.raises(ValueError, match=field.replace("(", r"\(").replace(")", r"\)")):
        RequestConfig.parse({"blendin": given})


def test_request_arguments():
    assert RequestConfig.parse(None) is None and RequestConfig.parse({"other": 1}) is None
    assert RequestConfig.parse({"blendin": True}) == RequestConfig()
    assert RequestConfig.parse({"blendin": '{"gamma": 0.3}'}).gamma == 0.3  # vllm_xargs strings
    assert RequestConfig.parse({"blendin": {"request_id": "q1"}}).request_id == "q1"
    engine = EngineConfig.parse({"blendin": {"guide": "g", "gamma": 0.5}})
    assert engine.guide_dtype == "auto"  # load_model's hardware rule, like every loader
    assert (
        EngineConfig.parse({"blendin": {"guide": "g", "guide_dtype": "bfloat16"}}).guide_dtype
        == "bfloat16"
    )
    choice, bonus = RequestConfig(strategy="nudge").resolve(engine)
    assert (choice.name, choice.gamma, choice.alpha, bonus) == ("nudging", 0.5, 1.0, 0.1)


@pytest.mark.parametrize(
    "given, field",
    [
        ({}, "additional_config.blendin.guide is required"),
        ({"guide": "g", "guide_dtype": "int8"}, "additional_config.blendin.guide_dtype"),
        ({"guide": "g", "lazy": "yes"}, "additional_config.blendin.lazy"),
        ({"guide": "g", "strategy": "x"}, "additional_config.blendin.strategy"),
        ({"guide": "g", "gama": 1}, "unknown key"),
        ({"guide": "g", "guide_sync": "bytes"}, "additional_config.blendin.guide_sync"),
        ({"guide": "g", "stats": 3}, "additional_config.blendin.stats"),
    ],
)
def test_bad_engine_settings_name_the_field(given, field):
    with pytest.raises(ValueError, match=field):
        EngineConfig.parse({"blendin": given})
    assert EngineConfig.parse({}) is None and EngineConfig.parse(None) is None


# ------------------------------------------------------------- the core
STEPS = 10


@pytest.fixture(scope="module")
def pair():
    return tiny_tokenizer(VOCAB), tiny_llama(VOCAB, seed=0), tiny_llama(VOCAB, seed=1)


class FakeV1Engine:
    """Greedy decoding of the base with the plug-in deciding blended rows,
    and vLLM's persistent-batch bookkeeping done by hand: rows[i] is the
    (prompt ids, the engine's output list) at batch index i. async_lists:
    each step's token is appended as a placeholder (-1), as vLLM's
    asynchronous scheduling leaves it when nothing repairs the list."""

    def __init__(self, pair, tmp_path, guide_tok=None, async_lists=False, **engine):
        tok, self.base, guide = pair
        self.tok = tok
        config = EngineConfig(
            guide="tiny",
            diagnostics=str(tmp_path / "diag.jsonl"),
            stats=str(tmp_path / "stats.jsonl"),
            **engine,
        )
        stream = make_guide_stream(guide, tok, guide_tok, rows_change=True)
        self.batch = BatchRows(BlendCore(config, stream, tok))
        self.rows = []
        self.truth = {}  # id(output list) -> the real tokens (async placeholders)
        self.async_lists = async_lists

    def added(self, prompt, strategy, index, output=None, request_id=None):
        ids = self.tok(prompt)["input_ids"]
        output = [] if output is None else output
        blendin = None if strategy is None else {"strategy": strategy}
        if blendin is not None and request_id is not None:
            blendin["request_id"] = request_id
        self.truth.setdefault(id(output), list(output))
        return (index, fake_params(blendin), ids, output), (ids, output)

    def update(self, removed=(), added=(), moved=()):
        self.batch.update(list(removed), [a for a, _ in added], list(moved))

    @torch.no_grad()
    def step(self):
        sequences = [p + self.truth[id(o)] for p, o in self.rows]
        logits = torch.stack([self.base(torch.tensor([s])).logits[0, -1] for s in sequences])
        chosen = self.batch.apply(logits).argmax(-1).tolist()
        for request in self.batch.core.requests.values():  # what the guide reads
            assert all(t >= 0 for t in request.tokens)
        for (_, output), token in zip(self.rows, chosen):
            self.truth[id(output)].append(token)
            output.append(-1 if self.async_lists else token)

    def outputs(self):
        return [(p, self.truth[id(o)]) for p, o in self.rows]


@pytest.mark.parametrize("async_lists", [False, True], ids=["committed", "async-placeholders"])
def test_core_follows_the_persistent_batch(pair, tmp_path, async_lists):
    tok, base, guide = pair
    prompts = random_prompts(4, seed=3)
    strategies = ["guide", "blendin", "nudging", "base"]
    expected = blendin_ext.generate(
        base,
        guide,
        prompts,
        tokenizer=tok,
        strategy=strategies,
        max_new_tokens=STEPS,
        stop_token_ids=[],
        lazy=True,
    )
    engine = FakeV1Engine(pair, tmp_path, async_lists=async_lists)
    first = [
        engine.added(prompts[0], strategies[0], 0, request_id="a"),
        engine.added(prompts[1], strategies[1], 1),
    ]
    engine.rows = [row for _, row in first]
    engine.update(added=first)
    for _ in range(3):
        engine.step()
    # Two more join; then rows 0 and 3 swap.
    late = [engine.added(p, s, 2 + i) for i, (p, s) in enumerate(zip(prompts[2:], strategies[2:]))]
    engine.rows += [row for _, row in late]
    engine.update(added=late)
    engine.step()
    rows = engine.rows
    engine.rows = [rows[3], rows[1], rows[2], rows[0]]
    engine.update(moved=[(0, 3, True)])
    for _ in range(2):
        engine.step()
    # Row 1 (prompt 1) is preempted, then comes back, with the output it
    # has (vLLM hands a resumed request its real tokens), at another index.
    kept = engine.rows[1]
    engine.rows = [engine.rows[0], engine.rows[3], engine.rows[2]]
    engine.update(removed=[1], moved=[(3, 1, False)])
    engine.step()
    back = engine.added(prompts[1], strategies[1], 3, output=list(engine.truth[id(kept[1])]))
    engine.rows.append(back[1])
    engine.update(added=[back])
    while min(len(o) for _, o in engine.outputs()) < STEPS:
        engine.step()
    by_prompt = {tuple(p): o for p, o in engine.outputs()}
    for prompt, result in zip(prompts, expected):
        got = by_prompt[tuple(tok(prompt)["input_ids"])]
        assert got[: len(result.token_ids)] == result.token_ids
    engine.update(removed=[0, 1, 2, 3])
    diagnostics = read_diagnostics(tmp_path / "diag.jsonl")
    assert set(diagnostics) == {"a", "request-1", "request-2", "request-3"}
    assert diagnostics["a"]["intervention_rate"] == 1.0  # guide-only
    assert diagnostics["request-1"]["resumed"] == 1  # recognised by prompt and output
    stats = read_stats(tmp_path / "stats.jsonl")[0]
    assert stats["steps"] > 0 and stats["guide_forwards"] > 0 and stats["guide_param_bytes"] == 0


def test_finished_requests_log_at_once_and_rejoin_if_they_go_on(pair, tmp_path):
    """A request whose token reaches max_tokens is logged (and its guide
    row released) in that step, before vLLM removes it; if the engine
    steps it again anyway, it rejoins and its tokens stay right."""
    tok, base, guide = pair
    prompt = random_prompts(1, seed=4)[0]
    expected = blendin_ext.generate(
        base,
        guide,
        [prompt],
        tokenizer=tok,
        strategy="guide",
        max_new_tokens=STEPS,
        stop_token_ids=[],
        lazy=True,
    )
    engine = FakeV1Engine(pair, tmp_path)
    entry, row = engine.added(prompt, "guide", 0, request_id="q")
    entry[1].max_tokens = 3
    engine.rows = [row]
    engine.update(added=[(entry, row)])
    for _ in range(3):
        engine.step()
    assert read_diagnostics(tmp_path / "diag.jsonl")["q"]["tokens"] == 3
    assert engine.batch.core.guide_rows.requests == []  # released
    assert read_stats(tmp_path / "stats.jsonl")[0]["blended_rows"] == 3
    for _ in range(STEPS - 3):  # stepped on regardless (a stop the plug-in misjudged)
        engine.step()
    assert engine.outputs()[0][1][: len(expected[0].token_ids)] == expected[0].token_ids


def test_cross_tokenizer_diagnostics_match_the_loop(tmp_path):
    """A guide with another tokenizer: each request's twin share (and its
    map coverage) reaches the diagnostics when it leaves, as the loop
    reports them; a base-only request has none."""
    guide_tok, base_tok = trained_byte_level(), trained_sentencepiece()
    base, guide = tiny_llama_for(base_tok, seed=1), tiny_llama_for(guide_tok, seed=2)
    prompts = [p.replace("w", "the ") for p in random_prompts(3, seed=7)]
    strategies = ["blendin", "guide", "base"]
    # The loop's share covers the tokens it pushed to the guide, which never
    # include its last one; the plug-in's covers the output when it leaves.
    expected = blendin_ext.generate(
        base,
        guide,
        prompts,
        tokenizer=base_tok,
        guide_tokenizer=guide_tok,
        strategy=strategies,
        max_new_tokens=STEPS + 1,
        stop_token_ids=[],
        lazy=True,
    )
    engine = FakeV1Engine((base_tok, base, guide), tmp_path, guide_tok=guide_tok)
    added = [
        engine.added(p, s, i, request_id=k)
        for i, (p, s, k) in enumerate(zip(prompts, strategies, "abc"))
    ]
    engine.rows = [row for _, row in added]
    engine.update(added=added)
    for _ in range(STEPS):
        engine.step()
    assert [o for _, o in engine.outputs()] == [r.token_ids[:STEPS] for r in expected]
    engine.update(removed=[0, 1, 2])
    diagnostics = read_diagnostics(tmp_path / "diag.jsonl")
    for key, result in zip("ab", expected):
        assert diagnostics[key]["guide_twin_share"] == result.diagnostics.guide_twin_share
        assert 0.0 < diagnostics[key]["map_coverage"] <= 1.0
    assert diagnostics["a"]["guide_twin_share"] < 1.0  # some stretch was re-tokenised
    assert diagnostics["c"]["guide_twin_share"] is None and diagnostics["c"]["map_coverage"] is None


def test_core_reads_consecutive_rows_in_place_and_others_by_copy(pair, tmp_path):
    """Blended rows that sit together are read and written in place; a plain
    request between them makes them a copy. Tokens are the same either way,
    and the plain request keeps its own logits."""
    tok, base, guide = pair
    prompts = random_prompts(3, seed=5)
    expected = blendin_ext.generate(
        base,
        guide,
        prompts,
        tokenizer=tok,
        strategy=["nudging", "base", "blendin"],
        max_new_tokens=STEPS,
        stop_token_ids=[],
        lazy=True,
    )
    for plain in (None, 1):
        engine = FakeV1Engine(pair, tmp_path)
        added = [
            engine.added(p, None if i == plain else s, i)
            for i, (p, s) in enumerate(zip(prompts, ["nudging", "base", "blendin"]))
        ]
        engine.rows = [row for _, row in added]
        engine.update(added=added)
        engine.step()
        groups = engine.batch.core.stepper._groups
        assert [g.window is not None for g in groups.values()] == [plain is None]
        for _ in range(STEPS - 1):
            engine.step()
        for (_, got), result in zip(engine.outputs(), expected):  # the loop may stop sooner
            assert got[: len(result.token_ids)] == result.token_ids


def test_masked_tokens_stay_masked(pair, tmp_path):
    """Tokens the engine masked (-inf: a grammar, bad words) are never
    chosen, and never raised: guide-only decoding stays inside the mask."""
    tok, base, guide = pair
    prompt = random_prompts(1, seed=6)[0]
    engine = FakeV1Engine(pair, tmp_path)
    entry, row = engine.added(prompt, "guide", 0)
    engine.rows = [row]
    engine.update(added=[(entry, row)])
    allowed = torch.zeros(VOCAB, dtype=torch.bool)
    allowed[torch.arange(10, VOCAB, 3)] = True
    for _ in range(STEPS):
        sequence = row[0] + engine.truth[id(row[1])]
        with torch.no_grad():
            logits = base(torch.tensor([sequence])).logits[0, -1:].clone()
        logits[:, ~allowed] = float("-inf")
        before = logits.clone()
        out = engine.batch.apply(logits)
        assert torch.isneginf(out[:, ~allowed]).all()
        token = int(out.argmax(-1))
        assert allowed[token] and out[0, token] == 0 and before[0, token] > float("-inf")
        engine.truth[id(row[1])].append(token)
        row[1].append(token)


@pytest.mark.parametrize("lazy", [True, False], ids=["lazy", "eager"])
def test_top_n_strategy_gives_the_loops_tokens(pair, tmp_path, lazy):
    """The paper's top-N procedure (blendin-top100 and a short list that
    parts from the exact blend) beside blendin in one batch: the plug-in
    gives the decode loop's tokens."""
    tok, base, guide = pair
    prompts = random_prompts(3, seed=11)
    strategies = ["blendin-top100", "blendin-top3", "blendin"]
    expected = blendin_ext.generate(
        base,
        guide,
        prompts,
        tokenizer=tok,
        strategy=strategies,
        max_new_tokens=STEPS,
        stop_token_ids=[],
        lazy=lazy,
    )
    engine = FakeV1Engine(pair, tmp_path, lazy=lazy)
    added = [engine.added(p, s, i) for i, (p, s) in enumerate(zip(prompts, strategies))]
    engine.rows = [row for _, row in added]
    engine.update(added=added)
    while min(len(o) for _, o in engine.outputs()) < STEPS:
        engine.step()
    for (_, got), result in zip(engine.outputs(), expected):
        assert got[: len(result.token_ids)] == result.token_ids


def test_top_n_strategy_is_greedy_only():
    assert (
        validate_request(fake_params({"strategy": "blendin-top100"})).strategy == "blendin-top100"
    )
    with pytest.raises(ValueError, match="extra_args.blendin.strategy"):
        validate_request(fake_params({"strategy": "blendin-top100"}, temperature=0.8))
