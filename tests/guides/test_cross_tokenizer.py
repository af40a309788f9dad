"""Decoding with a guide whose tokenizer differs from the base's: text-level
sync with KV rollback, eager == lazy, batch == one by one, and the guide's
cached state equals a fresh forward on the re-tokenised text."""

import pytest
import torch

from blendin_ext import BlendInGenerator
from blendin_ext.guides.cross_tokenizer import CrossTokenizerGuide
from blendin_ext.guides.synced import common_prefix, plan_sync
from blendin_ext.testing import tiny_llama, tiny_llama_for, tiny_tokenizer
from tests.helpers.tokenizer_fixtures import trained_byte_level, trained_sentencepiece

PROMPTS = ["the cat sat on", "a dog", "near the river bank while the birds"]
STRATEGIES = ["blendin", "nudging", "blendin"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BLENDIN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def pair():
    guide_tok, base_tok = trained_byte_level(), trained_sentencepiece()
    base, guide = tiny_llama_for(base_tok, seed=1), tiny_llama_for(guide_tok, seed=2)
    return base, guide, base_tok, guide_tok


def run(pair, prompts=PROMPTS, strategies=STRATEGIES, max_new_tokens=24, **options):
    base, guide, base_tok, guide_tok = pair
    gen = BlendInGenerator(base, guide, base_tok, guide_tok)
    out = gen.generate(prompts, strategy=strategies, max_new_tokens=max_new_tokens, **options)
    return gen, out


def test_common_prefix():
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([], [1]) == 0


def test_plan_sync_feeds_only_new_tokens_when_nothing_changed():
    held, columns = [[5, 6], [7]], [[0, 1], [1]]
    cut, feeds = plan_sync(held, columns, [[5, 6, 8], [7]], length=2)
    assert cut == 2 and feeds == [[8], []]


def test_plan_sync_rolls_back_to_the_common_prefix():
    # Row 0 re-tokenised its last token (" Par" "is" -> " Paris"): cut at its column;
    # row 1 loses its token in that column too and feeds it again.
    held, columns = [[5, 6, 9], [7, 3, 4]], [[0, 1, 2], [0, 1, 2]]
    cut, feeds = plan_sync(held, columns, [[5, 6, 10], [7, 3, 4, 8]], length=3)
    assert cut == 2 and feeds == [[10], [4, 8]]


def test_plan_sync_refeeds_tokens_a_cut_removed_from_other_rows():
    # Row 1 holds a token in column 3 (a hole for row 0) that the cut removes.
    held, columns = [[1, 2, 3], [4, 5]], [[0, 1, 2], [1, 3]]
    cut, feeds = plan_sync(held, columns, [[1, 2, 9], [4, 5]], length=4)
    assert cut == 2 and feeds == [[9], [5]]


def test_plan_sync_never_leaves_a_cut_row_without_a_token_to_feed():
    # Defensive case (text does not shrink in practice): row 1 wants fewer
    # tokens than the cut leaves it, so the cut moves back one of its tokens
    # and the row feeds that token again to get its logits.
    held, columns = [[1, 2, 3], [4, 5]], [[0, 1, 2], [1, 3]]
    cut, feeds = plan_sync(held, columns, [[1, 2, 9], [4]], length=4)
    assert cut == 1 and feeds == [[2, 9], [4]]


def test_pair_uses_the_cross_tokenizer_guide(pair):
    gen, out = run(pair)
    guide = gen.guide
    assert isinstance(guide, CrossTokenizerGuide)
    assert guide.map_report.mapped_share > 0.9
    # The guide's EOS (<|im_end|>) stops rows as the base's <eos>.
    assert guide.stop_token_ids() == {pair[2].eos_token_id}
    assert len(out) == 3 and all(r.diagnostics.tokens > 0 for r in out)
    assert sum(r.diagnostics.intervention_count for r in out) > 0
    coverage = guide.coverage_by_row()
    assert all(0.0 < c <= 1.0 for c in coverage)


def test_lazy_guide_gives_the_same_text_as_eager(pair):
    _, eager = run(pair)
    gen, lazy = run(pair, lazy=True)
    assert lazy.texts == eager.texts
    assert [r.token_ids for r in lazy] == [r.token_ids for r in eager]
    assert lazy.stats.guide_forwards <= eager.stats.guide_forwards


def test_batch_equals_one_by_one(pair):
    _, batch = run(pair)
    for i, prompt in enumerate(PROMPTS):
        _, single = run(pair, [prompt], [STRATEGIES[i]])
        assert single.texts == [batch.texts[i]]


@pytest.mark.parametrize("guide_sync", ["tokens", "text"])
def test_cached_guide_state_equals_a_fresh_forward(pair, guide_sync):
    gen, out = run(pair, max_new_tokens=20, guide_sync=guide_sync)
    guide = gen.guide
    guide.push(None, [0] * 3, [False] * 3)  # no new tokens, just sync
    logits = guide.logits()
    for row in range(3):
        ids = guide._wanted_ids(row)
        assert guide._held[row] == ids
        fresh = pair[1](torch.tensor([ids])).logits[0, -1]
        torch.testing.assert_close(logits[row], fresh, atol=1e-4, rtol=1e-4)


def test_sampling_is_reproducible(pair):
    _, first = run(pair, temperature=0.8, seed=3)
    _, second = run(pair, temperature=0.8, seed=3, lazy=True)
    assert first.texts == second.texts


def test_tokenizers_without_shared_text_need_a_map():
    base_tok = tiny_tokenizer(40)
    guide_tok = tiny_tokenizer(40, words=[f"x{i}" for i in range(40)])
    base, guide = tiny_llama(40), tiny_llama(40, seed=1)
    with pytest.raises(ValueError, match="guide_to_base"):
        BlendInGenerator(base, guide, base_tok, guide_tok)
    # With an explicit map it runs.
    table = torch.full((40,), -1, dtype=torch.int64)
    table[8:20] = torch.arange(8, 20)
    gen = BlendInGenerator(base, guide, base_tok, guide_tok, guide_to_base=table)
    assert isinstance(gen.guide, CrossTokenizerGuide)
    assert len(gen.generate(["w1 w2"], max_new_tokens=3)) == 1


def test_text_sync_mode_still_works_and_shares_are_recorded(pair):
    _, tokens = run(pair)
    gen, eager = run(pair, guide_sync="text")
    _, lazy = run(pair, guide_sync="text", lazy=True)
    assert lazy.texts == eager.texts
    assert gen.guide.guide_sync == "text"
    assert all(r.diagnostics.guide_twin_share == 0.0 for r in eager)
    assert all(0.5 < r.diagnostics.guide_twin_share <= 1.0 for r in tokens)
    assert tokens[0].diagnostics.summary()["guide_twin_share"] > 0.5


def test_guide_only_writes_the_guides_own_greedy_answer(pair):
    """With strategy "guide" every chosen token is the twin of the guide's
    own choice, so token sync hands it back exactly what it produced: the
    loop equals the guide's greedy decode up to its first choice without a
    base twin (which the op cannot pick)."""
    base, guide_model, base_tok, guide_tok = pair
    gen, out = run(pair, strategies=["guide"] * 3, max_new_tokens=16)
    table = gen.guide.guide_to_base.guide_to_base
    inverse = gen.guide.guide_to_base.base_to_guide
    compared = 0
    for row, prompt in enumerate(PROMPTS):
        ids = gen.guide.prompt_ids([prompt])[0]
        own = guide_model.generate(
            torch.tensor([ids]),
            max_new_tokens=16,
            do_sample=False,
            pad_token_id=guide_tok.pad_token_id,
        )[0, len(ids) :].tolist()
        mapped = next((i for i, t in enumerate(own) if table[t] < 0), len(own))
        mine = [int(inverse[t]) for t in out[row].token_ids]
        assert mine[:mapped] == own[:mapped]
        compared += mapped
    assert compared >= 8
