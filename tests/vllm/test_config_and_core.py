"""The plug-in's parts that need no vLLM: configuration checks (each error
names its field) and the core driven by hand-made batch updates (rows
added, moved, swapped, removed and resumed, as vLLM's persistent batch
does), checked against the decode loop."""
import pytest
import torch

import blendin_ext
from blendin_ext.guides.factory import make_guide_stream
from blendin_ext.testing import random_prompts, tiny_llama, tiny_llama_for, tiny_tokenizer
from blendin_ext.vllm.config import EngineConfig, RequestConfig
from blendin_ext.vllm.core import BlendCore, Sampling
from blendin_ext.vllm.diagnostics import external_id, read_diagnostics
from tests.helpers.tokenizer_fixtures import trained_byte_level, trained_sentencepiece

VOCAB = 200


@pytest.mark.parametrize("given, field", [
    ({"gamma": -1}, "extra_args.blendin.gamma"),
    ({"alpha": 2}, "extra_args.blendin.alpha"),
    ({"agree_bonus": float("nan")}, "extra_args.blendin.agree_bonus"),
    ({"strategy": "nope"}, "extra_args.blendin.strategy"),
    ({"strategy": 3}, "extra_args.blendin.strategy"),
    ({"top_p": 0.5}, "unknown key(s) top_p"),
    ("not json", "extra_args.blendin must be a JSON object"),
])
def test_bad_request_arguments_name_the_field(given, field):
    with pytest.raises(ValueError, match=field.replace("(", r"\(").replace(")", r"\)")):
        RequestConfig.parse({"blendin": given})


def test_request_arguments():
    assert RequestConfig.parse(None) is None and RequestConfig.parse({"other": 1}) is None
    assert RequestConfig.parse({"blendin": True}) == RequestConfig()
    assert RequestConfig.parse({"blendin": '{"gamma": 0.3}'}).gamma == 0.3   # vllm_xargs strings
    engine = EngineConfig.parse({"blendin": {"guide": "g", "gamma": 0.5}})
    assert engine.guide_dtype == "auto"   # load_model's hardware rule, like every loader
    assert EngineConfig.parse({"blendin": {"guide": "g", "guide_dtype": "bfloat16"}}).guide_dtype \
        == "bfloat16"
    choice, bonus = RequestConfig(strategy="nudge").resolve(engine)
    assert (choice.name, choice.gamma, choice.alpha, bonus) == ("nudging", 0.5, 1.0, 0.1)


@pytest.mark.parametrize("given, field", [
    ({}, "additional_config.blendin.guide is required"),
    ({"guide": "g", "guide_dtype": "int8"}, "additional_config.blendin.guide_dtype"),
    ({"guide": "g", "lazy": "yes"}, "additional_config.blendin.lazy"),
    ({"guide": "g", "strategy": "x"}, "additional_config.blendin.strategy"),
    ({"guide": "g", "gama": 1}, "unknown key"),
    ({"guide": "g", "guide_sync": "bytes"}, "additional_config.blendin.guide_sync"),
])
def test_bad_engine_settings_name_the_field(given, field):
    with pytest.raises(ValueError, match=field):
        EngineConfig.parse({"blendin": given})
    assert EngineConfig.parse({}) is None and EngineConfig.parse(None) is None


def test_external_ids():
    assert external_id("0-84f42f9d") == "0"
    assert external_id("cmpl-abc-0-1234abcd") == "cmpl-abc-0"
    assert external_id("plain") == "plain"


# ------------------------------------------------------------- the core
STEPS = 10


@pytest.fixture(scope="module")
def pair():
    return tiny_tokenizer(VOCAB), tiny_llama(VOCAB, seed=0), tiny_llama(VOCAB, seed=1)


class FakeEngine:
    """Greedy decoding of the base with the core deciding blended rows, and
    vLLM's persistent-batch bookkeeping done by hand."""

    def __init__(self, pair, tmp_path, guide_tok=None, **engine):
        tok, self.base, guide = pair
        self.tok = tok
        config = EngineConfig(guide="tiny", diagnostics=str(tmp_path / "diag.jsonl"), **engine)
        stream = make_guide_stream(guide, tok, guide_tok, rows_change=True)
        self.core = BlendCore(config, stream, tok)
        self.rows = []   # batch index -> (prompt ids, output ids)

    def add(self, prompt, strategy, index, output=None):
        ids = self.tok(prompt)["input_ids"]
        output = [] if output is None else output
        request = self.core.new_request(RequestConfig(strategy=strategy),
                                        Sampling.of(0.0, None, None, 0), ids, output)
        return index, request, (ids, output)

    @torch.no_grad()
    def step(self):
        logits = torch.stack([self.base(torch.tensor([p + o])).logits[0, -1] for p, o in self.rows])
        chosen = self.core.apply(logits).argmax(-1).tolist()
        for (_, output), token in zip(self.rows, chosen):
            output.append(token)


def test_core_follows_the_persistent_batch(pair, tmp_path):
    tok, base, guide = pair
    prompts = random_prompts(4, seed=3)
    strategies = ["guide", "blendin", "nudging", "base"]
    expected = blendin_ext.generate(base, guide, prompts, tokenizer=tok, strategy=strategies,
                                    max_new_tokens=STEPS, stop_token_ids=[], lazy=True)
    engine = FakeEngine(pair, tmp_path)
    added = [engine.add(p, s, i) for i, (p, s) in enumerate(zip(prompts[:2], strategies))]
    engine.rows = [row for _, _, row in added]
    engine.core.update([], [(i, r) for i, r, _ in added], [], ["a-00000000", "b-00000000"])
    for _ in range(3):
        engine.step()
    # Two more join; then rows 0 and 3 swap, row 1 moves to the free index.
    late = [engine.add(p, s, 2 + i) for i, (p, s) in enumerate(zip(prompts[2:], strategies[2:]))]
    engine.rows += [row for _, _, row in late]
    engine.core.update([], [(i, r) for i, r, _ in late], [], None)
    engine.step()
    rows = engine.rows
    engine.rows = [rows[3], rows[1], rows[2], rows[0]]
    engine.core.update([], [], [(0, 3, True)], None)
    for _ in range(2):
        engine.step()
    # Row 1 (prompt 1) is preempted, then comes back with its output so far.
    kept = engine.rows[1]
    engine.rows = [engine.rows[0], engine.rows[3], engine.rows[2]]
    engine.core.update([1], [], [(3, 1, False)], None)
    engine.step()
    index, request, _ = engine.add(prompts[1], strategies[1], 3, output=kept[1])
    request.prompt_ids = kept[0]
    engine.rows.append(kept)
    engine.core.update([], [(3, request)], [], [None, None, None, "b-00000000"])
    while min(len(o) for _, o in engine.rows) < STEPS:
        engine.step()
    by_prompt = {tuple(p): o for p, o in engine.rows}
    for prompt, result in zip(prompts, expected):
        got = by_prompt[tuple(tok(prompt)["input_ids"])]
        assert got[: len(result.token_ids)] == result.token_ids
    engine.core.update([0, 1, 2, 3], [], [], None)
    diagnostics = read_diagnostics(tmp_path / "diag.jsonl")
    assert {"a", "b"} <= set(diagnostics)
    assert diagnostics["a"]["intervention_rate"] == 1.0   # guide-only
    assert sum(d["resumed"] for d in diagnostics.values()) == 1


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
    expected = blendin_ext.generate(base, guide, prompts, tokenizer=base_tok,
                                    guide_tokenizer=guide_tok, strategy=strategies,
                                    max_new_tokens=STEPS + 1, stop_token_ids=[], lazy=True)
    engine = FakeEngine((base_tok, base, guide), tmp_path, guide_tok=guide_tok)
    added = [engine.add(p, s, i) for i, (p, s) in enumerate(zip(prompts, strategies))]
    engine.rows = [row for _, _, row in added]
    engine.core.update([], [(i, r) for i, r, _ in added], [], ["a-00000000", "b-00000000",
                                                               "c-00000000"])
    for _ in range(STEPS):
        engine.step()
    assert [o for _, o in engine.rows] == [r.token_ids[:STEPS] for r in expected]
    engine.core.update([0, 1, 2], [], [], None)
    diagnostics = read_diagnostics(tmp_path / "diag.jsonl")
    for key, result in zip("ab", expected):
        assert diagnostics[key]["guide_twin_share"] == result.diagnostics.guide_twin_share
        assert 0.0 < diagnostics[key]["map_coverage"] <= 1.0
    assert diagnostics["a"]["guide_twin_share"] < 1.0   # some stretch was re-tokenised
    assert diagnostics["c"]["guide_twin_share"] is None and diagnostics["c"]["map_coverage"] is None


def test_core_reads_consecutive_rows_in_place_and_others_by_copy(pair, tmp_path):
    """Blended rows that sit together are read and written in place; a plain
    request between them makes them a copy. Tokens are the same either way,
    and the plain request keeps its own logits."""
    tok, base, guide = pair
    prompts = random_prompts(3, seed=5)
    expected = blendin_ext.generate(base, guide, prompts, tokenizer=tok,
                                    strategy=["nudging", "base", "blendin"],
                                    max_new_tokens=STEPS, stop_token_ids=[], lazy=True)
    for blended, plain in (([0, 1, 2], None), ([0, 2], 1)):
        engine = FakeEngine(pair, tmp_path)
        added = [engine.add(p, s, i) for i, (p, s) in
                 enumerate(zip(prompts, ["nudging", "base", "blendin"]))]
        engine.rows = [row for _, _, row in added]
        engine.core.update([], [(i, r if i != plain else None) for i, r, _ in added], [], None)
        groups = engine.core._step_params(torch.device("cpu"))[1]
        assert [g.window is not None for g in groups.values()] == [plain is None]
        for _ in range(STEPS):
            engine.step()
        for (_, got), result in zip(engine.rows, expected):   # the loop may stop sooner
            assert got[: len(result.token_ids)] == result.token_ids


def test_row_window():
    from blendin_ext.vllm.core import row_window
    assert row_window([2, 3, 4]) == slice(2, 5)
    assert row_window([0]) == slice(0, 1)
    assert row_window([0, 2]) is None and row_window([1, 0]) is None and row_window([]) is None
