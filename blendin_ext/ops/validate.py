"""The one place where Python-side decoding parameters are checked.

The op's wrapper, the decode loop, the command line and the eval all call
these, so a parameter has one rule and one wording wherever it is given.
Each check returns the value in canonical form (a float, an int, None or
"auto") and raises ValueError naming the parameter as the caller spells it
(``name``: "gamma" in Python, "--gamma" on the command line) and, for a
batch, the prompt (``where``). The C++ op checks its tensor arguments again
on its own side, so a raw ``torch.ops`` call is just as safe.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Optional, Union

AlphaValue = Union[str, float]


# Plain ints and floats are tested first: in a profile of blend_step the
# ABC isinstance checks were about half of its argument checks' time.
def _is_int(value) -> bool:
    return type(value) is int or (isinstance(value, Integral) and not isinstance(value, bool))


def _is_number(value) -> bool:
    return type(value) in (int, float) or (isinstance(value, Real) and not isinstance(value, bool))


def _fail(name: str, expected: str, value, where: str):
    subject = f"{name} must" if name else "must"  # argparse names the option itself
    raise ValueError(f"{subject} be {expected}, got {value!r}{where}")


def check_gamma(value, name: str = "gamma", where: str = "") -> float:
    """Uncertainty threshold: a number >= 0 (above 1: intervene every step)."""
    if not _is_number(value) or not value >= 0:
        _fail(name, "a number >= 0", value, where)
    return float(value)


def check_alpha(value, name: str = "alpha", where: str = "") -> AlphaValue:
    """Guide weight: "auto" (the reliability rule) or a number in [0, 1]."""
    if value == "auto":
        return "auto"
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        _fail(name, '"auto" or a number in [0, 1]', value, where)
    return float(value)


def check_agree_bonus(value, name: str = "agree_bonus", where: str = "") -> float:
    """The auto rule's agreement bonus: any finite number."""
    if not _is_number(value) or not math.isfinite(value):
        _fail(name, "a finite number", value, where)
    return float(value)


def check_temperature(value, name: str = "temperature", where: str = "") -> float:
    """Sampling temperature: a number >= 0, 0 meaning greedy."""
    if not _is_number(value) or not value >= 0:
        _fail(name, "a number >= 0 (0 = greedy)", value, where)
    return float(value)


def check_top_k(value, name: str = "top_k", where: str = "") -> Optional[int]:
    """None (no filter) or an int >= 0 (0 also means no filter)."""
    if value is None:
        return None
    if not _is_int(value) or value < 0:
        _fail(name, "None or an int >= 0", value, where)
    return int(value)


def check_top_p(value, name: str = "top_p", where: str = "") -> Optional[float]:
    """None (no filter) or a number in (0, 1] (1 also means no filter)."""
    if value is None:
        return None
    if not _is_number(value) or not 0.0 < value <= 1.0:
        _fail(name, "None or a number in (0, 1]", value, where)
    return float(value)


def check_seed(value, name: str = "seed", where: str = "") -> int:
    """An RNG seed or offset: any int, taken modulo 2^64 and returned as the
    int64 with those bits (the schema's type; the RNG reads the bits)."""
    if not _is_int(value):
        _fail(name, "an int", value, where)
    return (int(value) + 2**63) % 2**64 - 2**63


def check_token_budget(value, name: str = "max_new_tokens", where: str = "") -> int:
    """Tokens to generate at most: an int >= 0."""
    if not _is_int(value) or value < 0:
        _fail(name, "an int >= 0", value, where)
    return int(value)


def check_stop(value, name: str = "stop", where: str = "") -> tuple:
    """Stop strings: None, one non-empty string or a list of them; returns a tuple."""
    stops = (value,) if isinstance(value, str) else tuple(value or ())
    if isinstance(value, (int, float)) or any(not isinstance(s, str) or not s for s in stops):
        _fail(name, "a non-empty string or a list of them", value, where)
    return stops


GUIDE_SYNC_MODES = ("tokens", "text")


def check_guide_sync(value, name: str = "guide_sync", where: str = "") -> str:
    """How a guide with another tokenizer follows the chosen tokens: "tokens"
    (feed their guide twins) or "text" (re-tokenise; blendin_ext.guides.token_sync)."""
    if not isinstance(value, str) or value not in GUIDE_SYNC_MODES:
        _fail(name, "'tokens' or 'text'", value, where)
    return value


def check_count(value, name: str, where: str = "") -> int:
    """A size that must hold something (batch size, problems, threads): an int >= 1."""
    if not _is_int(value) or value < 1:
        _fail(name, "an int >= 1", value, where)
    return int(value)
