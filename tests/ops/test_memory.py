"""Calls with a fresh raw map tensor each time do not grow memory: the map
cache frees an entry with its tensor (issue 12 measured 321 MB over 20,000
calls when the cached GuideMap held the very tensor its weakref watched)."""

import gc
import os
from pathlib import Path

import pytest
import torch

import blendin_ext
from blendin_ext.ops import maps

STATM = Path("/proc/self/statm")


def rss_bytes() -> int:
    return int(STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not STATM.exists(), reason="reads RSS from /proc/self/statm (Linux)")
def test_twenty_thousand_calls_with_fresh_maps_keep_rss_flat():
    vocab = 1000
    base = torch.randn(1, vocab)
    guide = torch.randn(1, vocab)
    gen = torch.Generator().manual_seed(0)

    def calls(n):
        for _ in range(n):
            mapping = torch.randperm(vocab, generator=gen)
            blendin_ext.blend_step(base, guide, guide_to_base=mapping, seed=0)

    calls(2000)  # allocator and caches warm
    gc.collect()
    before = rss_bytes()
    calls(20_000)
    gc.collect()
    growth = rss_bytes() - before
    print(f"\nRSS growth over 20,000 calls with fresh V={vocab} maps: {growth / 2**20:.2f} MB")
    assert growth < 10 * 2**20
    assert len(maps._map_cache) <= 1
