"""The one strategy table: names, aliases, blend-A, and that the loop, the
command line and the eval all resolve through it."""

import pytest

from blendin_ext.ops.strategies import ALIASES, ALWAYS, STRATEGIES, choose, choose_many


def test_every_strategy_is_a_point_of_the_op():
    points = {
        name: (c.gamma, c.alpha) for name, c in ((n, choose(n, gamma=0.4)) for n in STRATEGIES)
    }
    assert points == {
        "base": (0.0, 0.0),
        "guide": (ALWAYS, 1.0),
        "nudging": (0.4, 1.0),
        "blend": (0.4, 0.5),
        "blendin": (0.4, "auto"),
        "ensemble": (ALWAYS, 0.5),
    }


def test_aliases_resolve_to_one_name():
    for alias, name in ALIASES.items():
        assert choose(alias).name == name
    assert choose(" Nudge ").name == "nudging"


def test_blend_weights_from_the_name_or_the_caller():
    assert (choose("blend-0.25", gamma=0.3).gamma, choose("blend-0.25").alpha) == (0.3, 0.25)
    assert choose("blend-0.25").name == "blend-0.25"
    assert choose("blend", alpha=0.7).alpha == 0.7
    assert choose("ensemble", alpha=0.2).alpha == 0.2
    assert choose("nudging", alpha=0.2).alpha == 1.0  # nudging's weight is fixed


def test_lists_keep_order_and_drop_repeats_and_aliases():
    names = [c.name for c in choose_many("base, guide,nudge,blend-0.5,blendin,base,nudging")]
    assert names == ["base", "guide", "nudging", "blend-0.5", "blendin"]


@pytest.mark.parametrize("bad", ["greedy", "blend-2", "blend-x", "", 3])
def test_unknown_strategies_name_the_argument(bad):
    with pytest.raises(ValueError, match="--strategies|strategy"):
        choose_many(bad, name="--strategies") if isinstance(bad, str) else choose(bad)


def test_bad_gamma_or_alpha_is_named():
    with pytest.raises(ValueError, match="gamma"):
        choose("blendin", gamma=-1)
    with pytest.raises(ValueError, match="alpha"):
        choose("blend", alpha=1.5)
