"""An ATM strike from an LTP far outside the listed strikes is refused, not silently the edge strike
(issue 14's closing note): more than FAR_STEPS strike steps beyond the outermost listed strike."""

from __future__ import annotations

from decimal import Decimal

import pytest

from runner.playbook.rolling import FAR_STEPS, RollingUnresolved, pick_strike

STRIKES = [Decimal(s) for s in (24400, 24450, 24500, 24550, 24600)]
WHAT = "instrument 'ce' (NFO NIFTY nearest weekly atm CE)"


@pytest.mark.parametrize("steps", [0, 1, -1])
def test_far_above_is_refused_naming_alias_ltp_range_and_remedy(steps: int) -> None:
    with pytest.raises(RollingUnresolved) as caught:
        pick_strike(STRIKES, Decimal("30512.5"), steps, what=WHAT)
    text = str(caught.value)
    assert text.startswith(WHAT)
    assert "LTP 30512.5" in text and "above the listed strikes 24400..24600" in text
    assert "runner instruments sync" in text and "check the underlying" in text


def test_far_below_is_refused() -> None:
    with pytest.raises(RollingUnresolved, match=r"LTP 9000 is 15400 below the listed strikes 24400\.\.24600"):
        pick_strike(STRIKES, Decimal("9000"), 0, what=WHAT)


def test_within_two_steps_of_the_edge_still_resolves() -> None:
    assert FAR_STEPS == 2
    assert pick_strike(STRIKES, Decimal("24700"), 0, what=WHAT) == Decimal(24600)
    assert pick_strike(STRIKES, Decimal("24300"), 1, what=WHAT) == Decimal(24450)
    with pytest.raises(RollingUnresolved):
        pick_strike(STRIKES, Decimal("24700.05"), 0, what=WHAT)
    with pytest.raises(RollingUnresolved):
        pick_strike(STRIKES, Decimal("24299.95"), 0, what=WHAT)
