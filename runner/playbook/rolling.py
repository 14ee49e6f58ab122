"""Rolling instruments: a relative expiry and an ATM-relative strike, picked from an instrument master.

The rules (documented in the schema and playbooks/README.md), pure so plan, rehearse and the engine pick
the same contract from the same master and price:

- ``{nearest: weekly, offset: N}``: every expiry the master lists for the symbol (for an option, those
  with strikes listed; for a future, those with a future listed), ascending, from the run's trading day
  on (the expiry day itself counts: the contract still trades); the N-th of them (0 = the nearest).
- ``{nearest: monthly, offset: N}``: the same, counting only the last listed expiry of each month.
- ``atm`` / ``atm+N`` / ``atm-N``: the listed strike nearest the underlying's LTP (exactly halfway
  between two listed strikes: the lower one), then N listed strikes higher / lower. No strikes listed,
  or fewer than N on that side: :class:`RollingUnresolved`.
- The band: an LTP below the lowest listed strike by more than the interval between the two lowest
  strikes, or above the highest by more than the interval between the two highest, is refused with
  :class:`AtmOutsideBand` (the step is REFUSED, nothing sent): "nearest" would be that edge strike, far
  from the money, and the LTP or the master is wrong (a stale or wrong quote, the wrong underlying, a
  master missing most strikes). Exactly one interval beyond the edge still resolves to the edge strike:
  the one strike that would be nearer is missing, at most one interval away. The interval is the spacing
  at that edge because exchanges list wider steps far from the money. A single listed strike has no
  interval to measure by, so it is not checked.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Sequence
from decimal import Decimal

ATM_PATTERN = r"^atm(?:[+-][1-9][0-9]?)?$"
_ATM_RE = re.compile(ATM_PATTERN)
FAR_STEPS = 1  # strike intervals an LTP may lie beyond the outermost listed strike and still set the ATM


class ExpiryKind(enum.StrEnum):
    WEEKLY = "weekly"  # every listed expiry
    MONTHLY = "monthly"  # the last listed expiry of each calendar month


class RollingUnresolved(ValueError):
    """A rolling instrument has no contract under its rule (no such expiry or strike listed)."""


class AtmOutsideBand(RollingUnresolved):
    """The underlying's LTP lies beyond the listed strikes by more than one strike interval: an ATM strike
    must not be taken from it (the engine refuses the step, nothing sent)."""

    def __init__(
        self,
        what: str,
        *,
        underlying: str | None,
        ltp: Decimal,
        low: Decimal,
        high: Decimal,
        interval: Decimal,
    ) -> None:
        self.underlying, self.ltp, self.low, self.high, self.interval = underlying, ltp, low, high, interval
        below = ltp < low
        edge = low if below else high
        whose = f"the underlying {underlying} LTP" if underlying else "the underlying's LTP"
        super().__init__(
            f"{what}: {whose} {ltp} is {abs(ltp - edge)} {'below' if below else 'above'} the listed strikes "
            f"{low}..{high}, more than one strike interval ({interval}) beyond the "
            f"{'lowest' if below else 'highest'}; refused rather than take the edge strike {edge}, far from "
            "the money: check the underlying and its price (a stale or wrong quote), or sync the instrument "
            "master (runner instruments sync) if it lacks this expiry's strikes"
        )


def parse_atm(text: str) -> int:
    """``atm`` -> 0, ``atm+2`` -> 2, ``atm-1`` -> -1."""
    if not _ATM_RE.match(text):
        raise ValueError(f"invalid ATM strike {text!r}: write atm, atm+N or atm-N")
    return int(text[3:]) if len(text) > 3 else 0


def pick_expiry(
    expiries: Sequence[dt.date], kind: ExpiryKind, offset: int, trading_day: dt.date, *, what: str
) -> dt.date:
    """The ``offset``-th expiry of ``kind`` in ``expiries`` (any order) not expired on ``trading_day``."""
    listed = sorted(set(expiries))
    if kind is ExpiryKind.MONTHLY:
        last_of_month: dict[tuple[int, int], dt.date] = {}
        for day in listed:
            last_of_month[(day.year, day.month)] = day  # ascending: the last one wins
        listed = sorted(last_of_month.values())
    live = [day for day in listed if day >= trading_day]
    if offset >= len(live):
        shown = ", ".join(d.isoformat() for d in live) or "none"
        raise RollingUnresolved(
            f"{what}: no {kind.value} expiry at offset {offset} on or after {trading_day.isoformat()} "
            f"in the instrument master (listed: {shown})"
        )
    return live[offset]


def pick_strike(
    strikes: Sequence[Decimal], ltp: Decimal, steps: int, *, what: str, underlying: str | None = None
) -> Decimal:
    """The listed strike ``steps`` strikes away from the one nearest ``ltp`` (ties: the lower) of
    ``underlying`` (named in errors); :class:`AtmOutsideBand` when ``ltp`` is outside the band."""
    listed = sorted(set(strikes))
    if not listed:
        raise RollingUnresolved(f"{what}: the instrument master lists no strikes for this expiry")
    _refuse_far_ltp(listed, ltp, what=what, underlying=underlying)
    atm = min(range(len(listed)), key=lambda i: (abs(listed[i] - ltp), listed[i]))
    index = atm + steps
    if not 0 <= index < len(listed):
        side = "above" if steps > 0 else "below"
        raise RollingUnresolved(
            f"{what}: atm{steps:+d} is beyond the listed strikes (ATM {listed[atm]} at LTP {ltp}; "
            f"{abs(steps) - (len(listed) - 1 - atm if steps > 0 else atm)} too few {side}, "
            f"listed {listed[0]}..{listed[-1]})"
        )
    return listed[index]


def _refuse_far_ltp(listed: Sequence[Decimal], ltp: Decimal, *, what: str, underlying: str | None) -> None:
    """AtmOutsideBand when ``ltp`` lies over FAR_STEPS strike intervals outside sorted ``listed``."""
    if len(listed) < 2:
        return  # one strike: no interval to measure by
    if ltp < listed[0]:
        edge, interval = listed[0], listed[1] - listed[0]
    elif ltp > listed[-1]:
        edge, interval = listed[-1], listed[-1] - listed[-2]
    else:
        return
    if abs(ltp - edge) <= FAR_STEPS * interval:
        return
    low, high = listed[0], listed[-1]
    raise AtmOutsideBand(what, underlying=underlying, ltp=ltp, low=low, high=high, interval=interval)


# Where an option's underlying trades when the playbook does not say (index or stock of the same symbol).
DEFAULT_UNDERLYING_EXCHANGE = {"NFO": "NSE", "BFO": "BSE"}
