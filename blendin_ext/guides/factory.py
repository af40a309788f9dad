"""Picks the guide stream that fits a guide model and its tokenizer."""

from __future__ import annotations

from typing import Optional

import torch

from blendin_ext.guides.cross_tokenizer import CrossTokenizerGuide
from blendin_ext.guides.stream import GuideStream, SameTokenizerGuide
from blendin_ext.guides.synced import SyncedGuide
from blendin_ext.models.prompts import same_vocabulary
from blendin_ext.ops.validate import check_guide_sync


def make_guide_stream(
    guide,
    tokenizer,
    guide_tokenizer=None,
    *,
    guide_to_base=None,
    system_prompt: Optional[str] = None,
    chat: bool = True,
    device: Optional[torch.device] = None,
    base_vocab: Optional[int] = None,
    rows_change: bool = False,
    guide_sync: str = "tokens",
) -> GuideStream:
    """The right GuideStream for a guide model: the guide itself if it already
    is one, the token-level stream when the tokenizers share a vocabulary,
    else the `CrossTokenizerGuide` (guide_to_base: the map, or
    None to build it from the token strings; base_vocab: the base's logit
    width where it exceeds its tokenizer). rows_change: rows will join and
    leave between steps (a serving engine), so a shared-vocabulary guide
    is a `SyncedGuide`, which supports add_rows / keep_rows. guide_sync:
    how a cross-tokenizer guide follows the base ("tokens": feed twins,
    "text": re-tokenise; blendin_ext.guides.token_sync), checked for all."""
    check_guide_sync(guide_sync)
    if isinstance(guide, GuideStream):
        return guide
    guide_tokenizer = tokenizer if guide_tokenizer is None else guide_tokenizer
    if same_vocabulary(tokenizer, guide_tokenizer):
        kind = SyncedGuide if rows_change else SameTokenizerGuide
        return kind(guide, guide_tokenizer, system_prompt=system_prompt, chat=chat, device=device)
    return CrossTokenizerGuide(
        guide,
        guide_tokenizer,
        tokenizer,
        guide_to_base=guide_to_base,
        base_vocab=base_vocab,
        system_prompt=system_prompt,
        chat=chat,
        device=device,
        guide_sync=guide_sync,
    )
