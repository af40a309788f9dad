"""What the decode loop and the vLLM plug-in may call on any guide: every
optional feature is declared on GuideStream with a default, so a guide
overrides only what it supports; the row statistics and the logits fit
have one home each."""

import pytest
import torch

from blendin_ext.guides.stream import (
    GuideRowStats,
    GuideStream,
    SameTokenizerGuide,
    guide_row_stats,
    pair_logits,
)
from blendin_ext.guides.synced import SyncedGuide
from blendin_ext.ops.maps import guide_map
from blendin_ext.testing import random_prompts, tiny_llama, tiny_tokenizer

VOCAB = 200


class MinimalGuide(GuideStream):
    """Only the abstract methods: the defaults do the rest."""

    def start(self, prompts, capacity):
        self.rows = len(prompts)

    def push(self, tokens, host_tokens, live):
        pass

    def logits(self):
        return torch.zeros(self.rows, VOCAB)

    def stop_token_ids(self):
        return set()


def test_the_defaults_fit_a_guide_of_the_base_vocabulary():
    guide = MinimalGuide()
    assert guide.for_call() is guide
    assert guide.map_report is None and guide.rebuilds == 0 and guide.guide_sync == "tokens"
    assert guide.guide_to_base is None
    assert guide.coverage_by_row() is None
    assert guide.twin_share_by_row([2, 0]) == [None, None]
    assert not guide.can_keep_rows()
    with pytest.raises(NotImplementedError, match="MinimalGuide cannot drop rows"):
        guide.keep_rows([0])
    guide.guide_sync = "text"  # the loop sets it on every guide
    assert guide_row_stats(guide, [1, 0]) == [GuideRowStats(None, None)] * 2
    assert guide_row_stats(guide, []) == []


def test_a_same_tokenizer_guide_gets_a_fresh_stream_per_call():
    guide = SameTokenizerGuide(tiny_llama(VOCAB, seed=1), tiny_tokenizer(VOCAB))
    call = guide.for_call()
    assert call is not guide and call.stream is not guide.stream and call.model is guide.model


def test_a_synced_guide_reports_no_coverage_per_row():
    guide = SyncedGuide(tiny_llama(VOCAB, seed=1), tiny_tokenizer(VOCAB))
    guide.start(random_prompts(3, seed=2), 4)
    assert guide.coverage_by_row() == [None] * 3
    guide.logits()
    assert guide.coverage_by_row() == [None] * 3  # its ids are base ids: nothing recorded
    assert guide_row_stats(guide, [2]) == [GuideRowStats(None, None)]


def test_pair_logits_fits_the_vocabulary_and_the_dtype():
    base = torch.randn(2, 10, dtype=torch.bfloat16)
    wide = torch.randn(2, 12)
    fitted_base, fitted = pair_logits(base, wide, None)
    assert fitted.shape == (2, 10) and fitted.dtype == fitted_base.dtype == torch.float32
    torch.testing.assert_close(fitted, wide[:, :10])
    narrow = torch.randn(2, 8, dtype=torch.bfloat16)
    same_base, padded = pair_logits(base, narrow, None)
    assert same_base is base and padded.dtype == torch.bfloat16
    assert torch.isinf(padded[:, 8:]).all() and torch.equal(padded[:, :8], narrow)
    mapped = guide_map(torch.tensor([0, 1, -1]), 10)
    _, kept = pair_logits(base.float(), torch.randn(2, 3), mapped)
    assert kept.shape == (2, 3)  # a map says which column is which: no fit
