"""The diagnostics' words follow the paper: pairs whose guide steps in at
more than about 20% of tokens tend to fail, so no rate near or above that is
called light guidance."""

import pytest

from blendin_ext.eval import summary


def _notes(rate, agree=0.2):
    return " ".join(
        summary._guidance_notes(
            {"strategy": "blendin", "intervention_rate": rate, "agreement": agree}
        )
    )


@pytest.mark.parametrize("rate", [0.18, 0.19, 0.21, 0.25, 0.4])
def test_rates_near_or_above_twenty_percent_are_not_light(rate):
    words = _notes(rate)
    assert "light" not in words and "usable" not in words
    assert "20%" in words


@pytest.mark.parametrize("rate", [0.21, 0.3, 0.55])
def test_rates_above_twenty_percent_are_called_high(rate):
    assert "high intervention rate" in _notes(rate)
    assert "UNRELIABLE" in _notes(rate, agree=0.01)


def test_low_rates_are_light():
    assert "light, targeted guidance" in _notes(0.05)
