"""Per-call state and per-row state of the decode loop.

- Finished rows leave the batch (`compact=True`, the default): both models'
  caches, the op's per-row arguments, the lazy guide's pending tokens and a
  cross-tokenizer guide's rows shrink to the live rows, and every token,
  intervention and text equals the run that keeps them (`compact=False`).
- Calls are re-entrant: two interleaved `stream()` calls on one generator
  each give what they give alone.
"""

import pytest

from blendin_ext import BlendInGenerator
from blendin_ext.models.streams import cache_argument, returned_cache
from blendin_ext.testing import random_prompts, tiny_llama, tiny_llama_for, tiny_tokenizer
from tests.helpers.tokenizer_fixtures import trained_byte_level, trained_sentencepiece

VOCAB = 200
STEPS = 14
PROMPTS = random_prompts(5, min_words=1, max_words=9, seed=5)  # ragged on purpose
STRATEGIES = ["blendin", "nudging", "base", "blendin", "guide"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BLENDIN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def same_pair():
    tok = tiny_tokenizer(VOCAB)
    return BlendInGenerator(tiny_llama(VOCAB, seed=0), tiny_llama(VOCAB, seed=1), tok)


@pytest.fixture(scope="module")
def cross_pair():
    guide_tok, base_tok = trained_byte_level(), trained_sentencepiece()
    base, guide = tiny_llama_for(base_tok, seed=1), tiny_llama_for(guide_tok, seed=2)
    return BlendInGenerator(base, guide, base_tok, guide_tok)


def staggered_stops(gen, prompts, **options):
    """Stop ids that end the rows at different steps: the token each row
    picks at a different step of an uncompacted run."""
    out = gen.generate(prompts, compact=False, **options)
    return sorted(
        {r.token_ids[min(2 + 3 * i, len(r.token_ids) - 1)] for i, r in enumerate(out.results)}
    )


def summary(output):
    return [
        (
            r.token_ids,
            r.text,
            r.finish_reason,
            [
                (i.position, i.token, i.winner, round(i.alpha, 5))
                for i in r.diagnostics.interventions
            ],
        )
        for r in output
    ]


@pytest.mark.parametrize("pair", ["same_pair", "cross_pair"])
@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("sampling", [{}, {"temperature": 0.9, "top_p": 0.95, "seed": 11}])
def test_compaction_changes_no_token(request, pair, lazy, sampling):
    gen = request.getfixturevalue(pair)
    prompts = PROMPTS if pair == "same_pair" else [p.replace("w", "the ") for p in PROMPTS]
    options = dict(strategy=STRATEGIES, max_new_tokens=STEPS, lazy=lazy, **sampling)
    stops = staggered_stops(gen, prompts, **options)
    kept = gen.generate(prompts, compact=False, stop_ids=stops, **options)
    compacted = gen.generate(prompts, compact=True, stop_ids=stops, **options)
    ends = {len(r.token_ids) for r in kept}
    assert len(ends) > 1, "the rows should end at different steps"
    assert summary(compacted) == summary(kept)
    assert [r.map_coverage for r in compacted] == pytest.approx(
        [r.map_coverage for r in kept], abs=1e-5
    )
    shares = [r.diagnostics.guide_twin_share for r in compacted]
    assert shares == [r.diagnostics.guide_twin_share for r in kept]
    assert (None in shares) == (pair == "same_pair")  # saved before the rows left
    # The base was fed fewer row-positions: finished rows really left.
    assert compacted.stats.base_tokens < kept.stats.base_tokens


@pytest.mark.parametrize("pair", ["same_pair", "cross_pair"])
def test_rows_leave_before_a_lazy_guide_ever_ran(request, pair):
    """Base-only rows never need the guide: rows leave a guide stream that
    has not started its model yet."""
    gen = request.getfixturevalue(pair)
    options = dict(strategy="base", max_new_tokens=STEPS, lazy=True)
    stops = staggered_stops(gen, PROMPTS, **options)
    kept = gen.generate(PROMPTS, compact=False, stop_ids=stops, **options)
    compacted = gen.generate(PROMPTS, stop_ids=stops, **options)
    assert summary(compacted) == summary(kept) and compacted.stats.guide_forwards == 0


def test_compaction_with_stop_strings_and_a_step_hook(same_pair):
    """The hook still sees every prompt (finished ones as not live)."""
    seen = []

    def hook(tokens, live):
        seen.append((len(tokens), list(live)))
        return [False] * len(tokens)

    options = dict(strategy="blendin", max_new_tokens=STEPS, lazy=True)
    stops = staggered_stops(same_pair, PROMPTS, **options)
    kept = same_pair.generate(PROMPTS, compact=False, stop_ids=stops, step_hook=hook, **options)
    seen_kept, seen[:] = list(seen), []
    compacted = same_pair.generate(PROMPTS, stop_ids=stops, step_hook=hook, **options)
    assert summary(compacted) == summary(kept)
    assert seen == seen_kept and all(n == len(PROMPTS) for n, _ in seen)


def test_a_callable_model_keeps_its_rows(same_pair):
    """A model that cannot drop rows (a plain callable): compaction turns
    itself off and the tokens stay the same."""
    model = same_pair.base_model
    cache = cache_argument(model)  # the name this transformers keeps

    def base(ids, state, attention_mask=None, position_ids=None):
        out = model(
            input_ids=ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            **{cache: state},
        )
        return out.logits, returned_cache(out)

    gen = BlendInGenerator(base, same_pair.guide.model, same_pair.tokenizer)
    options = dict(strategy="blendin", max_new_tokens=STEPS)
    stops = staggered_stops(same_pair, PROMPTS, **options)
    ours = gen.generate(PROMPTS, stop_ids=stops, **options)
    assert summary(ours) == summary(same_pair.generate(PROMPTS, stop_ids=stops, **options))


@pytest.mark.parametrize("pair", ["same_pair", "cross_pair"])
def test_interleaved_streams_do_not_share_state(request, pair):
    gen = request.getfixturevalue(pair)
    first_prompts, second_prompts = ["the cat sat on", "w1 w2"], ["a dog", "w3", "w4 w5 w6"]
    options = dict(max_new_tokens=10, strategy="blendin", lazy=True)
    alone_first = gen.generate(first_prompts, **options)
    alone_second = gen.generate(second_prompts, temperature=0.8, seed=4, **options)
    first = gen.stream(first_prompts, **options)
    second = gen.stream(second_prompts, temperature=0.8, seed=4, **options)
    got = {0: [], 1: []}
    for a, b in zip(first, second):  # one event of each, in turn
        got[0].append(a)
        got[1].append(b)
    got[0].extend(first)
    got[1].extend(second)  # `second` finishes last
    assert gen.last_output.texts == alone_second.texts
    for events, alone in ((got[0], alone_first), (got[1], alone_second)):
        by_row = {}
        for ev in events:
            by_row.setdefault(ev.row, []).append(ev.token)
        assert [by_row[i] for i in range(len(alone))] == [r.token_ids for r in alone]
        assert [ev.row for ev in events if ev.finished] and sorted(
            ev.row for ev in events if ev.finished
        ) == list(range(len(alone)))


def test_last_output_is_the_call_that_finished_last(same_pair):
    first = same_pair.stream(["w1"], max_new_tokens=3)
    out = same_pair.generate(["w2", "w3"], max_new_tokens=2)
    assert same_pair.last_output is out
    list(first)
    assert [r.prompt for r in same_pair.last_output] == ["w1"]
    assert same_pair.guide.forwards == same_pair.last_output.stats.guide_forwards


def test_compact_option_is_checked_by_the_op_options(same_pair):
    with pytest.raises(TypeError):
        same_pair.generate(["w1"], compaction=True)
