"""Guide rows that join, leave and move between steps (the continuous batch
of a serving engine): the logits must equal those of a guide that saw the
same rows from the start, whichever way the cache got there (edited in
place or rebuilt)."""

import pytest
import torch

from blendin_ext.guides.cross_tokenizer import CrossTokenizerGuide
from blendin_ext.guides.synced import SyncedGuide
from blendin_ext.testing import random_prompts, tiny_llama, tiny_tokenizer

VOCAB = 200


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer(VOCAB)


@pytest.fixture(scope="module")
def model():
    return tiny_llama(VOCAB, seed=1)


def fresh_logits(model, tok, prompts, base_ids):
    guide = SyncedGuide(model, tok)
    guide.start(prompts, 8)
    for row, ids in enumerate(base_ids):
        guide._base_ids[row].extend(ids)
    return guide.logits()


def test_rows_join_leave_and_move(model, tok):
    prompts = random_prompts(5, seed=4)
    outputs = [[10 + i, 20 + i, 30 + i][: 1 + i % 3] for i in range(5)]
    guide = SyncedGuide(model, tok)
    guide.start(prompts[:2], 8)
    guide._base_ids[0].append(outputs[0][0])
    guide.logits()
    guide.add_rows(prompts[2:4], base_ids=[list(outputs[2]), list(outputs[3])])
    guide._base_ids[1].extend(outputs[1])
    got = guide.logits()
    expected = fresh_logits(model, tok, prompts[:4], [outputs[i] for i in range(4)])
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    # Row 0 leaves, row 3 moves to the front, a fifth row joins.
    guide.keep_rows([3, 1, 2])
    guide.add_rows(prompts[4:], base_ids=[list(outputs[4])])
    got = guide.logits()
    order = [3, 1, 2, 4]
    expected = fresh_logits(model, tok, [prompts[i] for i in order], [outputs[i] for i in order])
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert guide.rebuilds == 0  # edited in place, not rebuilt


def test_only_the_asked_rows_feed(model, tok):
    prompts = random_prompts(3, seed=5)
    guide = SyncedGuide(model, tok)
    guide.start(prompts, 8)
    guide.logits()
    for row in range(3):
        guide._base_ids[row].extend([40, 41])
    fed_before = guide.stream.tokens_fed
    got = guide.logits(rows=[1])
    assert guide.stream.tokens_fed - fed_before == 3 * 2  # one (3, 2) block
    expected = fresh_logits(model, tok, prompts, [[40, 41]] * 3)
    torch.testing.assert_close(got[1], expected[1], atol=1e-4, rtol=1e-4)
    # Rows 0 and 2 rode along in the padding: nothing is left to feed.
    fed_before = guide.stream.tokens_fed
    torch.testing.assert_close(guide.logits(), expected, atol=1e-4, rtol=1e-4)
    assert guide.stream.tokens_fed == fed_before


def test_rows_not_asked_for_take_no_more_than_the_padding(model, tok):
    prompts = random_prompts(3, seed=6)
    guide = SyncedGuide(model, tok)
    guide.start(prompts, 8)
    guide.logits()
    backlog = [[50, 51, 52, 53], [60], []]
    for row, ids in enumerate(backlog):
        guide._base_ids[row].extend(ids)
    guide.logits(rows=[1])  # width 1: row 0 takes one of its four, row 2 has none
    assert [len(h) - len(p) for h, p in zip(guide._held, guide._prompt_ids)] == [1, 1, 0]
    expected = fresh_logits(model, tok, prompts, backlog)
    torch.testing.assert_close(guide.logits(rows=[0]), expected, atol=1e-4, rtol=1e-4)


def test_cross_tokenizer_rows_join(model, tok):
    words = [f"x{i}" for i in range(150)] + [f"w{i}" for i in range(42)]
    guide_tok = tiny_tokenizer(VOCAB, words=words)
    guide = CrossTokenizerGuide(model, guide_tok, tok)
    prompts = ["w1 w2", "w3"]
    guide.start(prompts[:1], 8)
    guide.logits()
    guide.add_rows(prompts[1:], base_ids=[[tok.convert_tokens_to_ids("w5")]])
    got = guide.logits()
    fresh = CrossTokenizerGuide(model, guide_tok, tok)
    fresh.start(prompts, 8)
    fresh._base_ids[1].append(tok.convert_tokens_to_ids("w5"))
    torch.testing.assert_close(got, fresh.logits(), atol=1e-4, rtol=1e-4)
    assert all(c is not None for c in guide.coverage_by_row())
