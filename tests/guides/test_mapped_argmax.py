"""The guide's favourite base token, as the loop reports it, breaks ties the
way the op does: by the smallest base id."""

import torch

import blendin_ext
from blendin_ext.guides.stream import mapped_argmax


def test_ties_go_to_the_smallest_base_id_like_the_op():
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0], [2.0, 0.0, 1.0, 5.0, -1.0]])
    g2b = torch.tensor([0, 5, 2, -1, 4])  # guide ids 1, 2, 4 tie; base ids 5, 2, 4
    maps = blendin_ext.guide_map(g2b, 6)
    assert mapped_argmax(logits, maps).tolist() == [2, 0]  # row 1: guide 3 has no twin
    base = torch.zeros(2, 6)
    out = blendin_ext.blend_step(base, logits, guide_to_base=maps, gamma=2.0, alpha=1.0)
    assert torch.equal(out.tokens, mapped_argmax(logits, maps))


def test_without_a_map_the_first_maximum_wins():
    logits = torch.tensor([[0.0, 2.0, 2.0]])
    assert mapped_argmax(logits, None).tolist() == [1]
