"""An ATM strike from an LTP outside the listed strikes by more than one strike interval (the listed
spacing at that edge) is refused with :class:`AtmOutsideBand`, never silently the edge strike: a stale or
wrong quote, the wrong underlying, or a master missing most strikes."""

from __future__ import annotations

from decimal import Decimal

import pytest

from runner.playbook.rolling import AtmOutsideBand, RollingUnresolved, pick_strike

STRIKES = [Decimal(s) for s in (24400, 24450, 24500, 24550, 24600)]
WHAT = "instrument 'ce' (NFO NIFTY nearest weekly atm CE)"


@pytest.mark.parametrize("steps", [0, 1, -1])
def test_far_above_is_refused_naming_underlying_ltp_band_and_remedy(steps: int) -> None:
    with pytest.raises(AtmOutsideBand) as caught:
        pick_strike(STRIKES, Decimal("30512.5"), steps, what=WHAT, underlying="NSE NIFTY")
    exc = caught.value
    assert isinstance(exc, RollingUnresolved)  # every caller of the pickers handles it already
    assert (exc.underlying, exc.ltp, exc.low, exc.high, exc.interval) == (
        "NSE NIFTY", Decimal("30512.5"), Decimal(24400), Decimal(24600), Decimal(50)
    )
    text = str(exc)
    assert text.startswith(WHAT)
    assert "NSE NIFTY LTP 30512.5" in text and "above the listed strikes 24400..24600" in text
    assert "runner instruments sync" in text and "check the underlying" in text


def test_far_below_is_refused() -> None:
    with pytest.raises(AtmOutsideBand, match=r"LTP 9000 is 15400 below the listed strikes 24400\.\.24600"):
        pick_strike(STRIKES, Decimal("9000"), 0, what=WHAT)


def test_within_one_interval_of_the_edge_still_resolves() -> None:
    assert pick_strike(STRIKES, Decimal("24650"), 0, what=WHAT) == Decimal(24600)
    assert pick_strike(STRIKES, Decimal("24350"), 1, what=WHAT) == Decimal(24450)
    with pytest.raises(AtmOutsideBand):
        pick_strike(STRIKES, Decimal("24650.05"), 0, what=WHAT)
    with pytest.raises(AtmOutsideBand):
        pick_strike(STRIKES, Decimal("24349.95"), 0, what=WHAT)
    with pytest.raises(AtmOutsideBand):  # two intervals out: refused (the old rule let it through)
        pick_strike(STRIKES, Decimal("24700"), 0, what=WHAT)


def test_the_interval_is_the_spacing_at_that_edge() -> None:
    """Wider strikes far from the money (NSE lists 100-point steps out there): the edge's own spacing."""
    strikes = [Decimal(s) for s in (24000, 24100, 24200, 24250, 24300, 24350, 24400, 24500, 24600)]
    assert pick_strike(strikes, Decimal("24700"), 0, what=WHAT) == Decimal(24600)  # one 100 interval
    assert pick_strike(strikes, Decimal("23900"), 0, what=WHAT) == Decimal(24000)
    with pytest.raises(AtmOutsideBand, match=r"strike interval \(100\)"):
        pick_strike(strikes, Decimal("24700.05"), 0, what=WHAT)
