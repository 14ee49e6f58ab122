"""Price paths for the paper matching engine: what the market traded at a given second.

A path maps ``(instrument, second)`` to a ``Decimal`` price snapped to the instrument's tick, where
``second`` is an integer epoch second (see :func:`second_of`). Paths are pure: the same instant gives the
same price in every process, so an entry run at 09:20 and a square-off run at 15:15 share one market.

* :class:`RandomWalk`: a seeded Gaussian random walk per instrument, built as a Brownian bridge so any
  second is computed in O(log) hash draws with integer arithmetic only (no replay from an origin, no
  floats). Consecutive windows of 2**16 s are pinned to per-window anchors around the base price, so
  the walk stays continuous but cannot drift away over weeks of tests.
* :class:`StepPath`: step-wise series per instrument (a CSV of ``time,instrument,price`` rows, or prices
  set by a test), falling back to another path for instruments it does not know.
* :class:`ReferencePath`: the built-in paper market. Symbols in a :class:`ReferenceBook` (shipped:
  ``runner/data/paper_prices.yaml``) walk gently around their reference level, futures trade at the
  underlying, options are priced from the underlying's reference by :func:`option_value` as time to
  expiry passes; everything else falls back to a :class:`RandomWalk`.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import hashlib
import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from runner.model import Instrument, OptionType

DEFAULT_TICK = Decimal("0.05")
INDEX_FUTURES: dict[str, Decimal] = {
    "NIFTY": Decimal(24500),
    "BANKNIFTY": Decimal(52000),
    "FINNIFTY": Decimal(23500),
    "MIDCPNIFTY": Decimal(12500),
    "SENSEX": Decimal(80000),
    "BANKEX": Decimal(58000),
}
# Volatility in parts per million of price per sqrt(second): ~1%/day for underlyings, ~7%/day for options.
VOL_PPM_UNDERLYING = 67
VOL_PPM_OPTION = 500
_PPM = 1_000_000
_WINDOW_BITS = 16
_WINDOW = 1 << _WINDOW_BITS
# sqrt(span / 4) in 16.16 fixed point for each bridge level span = 2**k.
_BRIDGE_SCALE = [math.isqrt((1 << k) << 30) for k in range(_WINDOW_BITS + 1)]
_ANCHOR_SCALE = math.isqrt((_WINDOW // 2) << 32)  # sqrt(window / 2), 16.16 fixed point


class PricePath(Protocol):
    def price(self, instrument: Instrument, second: int) -> Decimal:
        """The traded price at epoch second ``second``, a positive multiple of the tick."""


def second_of(at: dt.datetime) -> int:
    """The 1 s bucket of an aware datetime (times are not money: float timestamp is fine here)."""
    return math.floor(at.timestamp())


def tick_of(instrument: Instrument) -> Decimal:
    return instrument.tick_size or DEFAULT_TICK


def snap(price: Decimal, tick: Decimal) -> Decimal:
    """Nearest positive multiple of ``tick``."""
    ticks = max(1, int((price / tick).to_integral_value(ROUND_HALF_EVEN)))
    return tick * ticks


def default_base_price(instrument: Instrument) -> Decimal:
    """A plausible starting price when the account names none."""
    if instrument.option_type is not None:
        return Decimal(100)
    if instrument.expiry is not None and instrument.symbol in INDEX_FUTURES:
        return INDEX_FUTURES[instrument.symbol]
    return Decimal(1000)


def _normal(seed: bytes, key: bytes, node: int) -> int:
    """An approximately standard normal draw times 8: centred popcount of 256 hashed bits."""
    h = hashlib.blake2b(node.to_bytes(8, "big", signed=True), digest_size=32, key=seed, person=key[:16])
    return int.from_bytes(h.digest(), "big").bit_count() - 128


class RandomWalk:
    """Deterministic seeded random walk per instrument around a base price."""

    def __init__(
        self,
        seed: str | int = "paper",
        bases: Mapping[str, Decimal] | None = None,
        *,
        vol_ppm: int | None = None,
    ) -> None:
        self._seed = hashlib.blake2b(str(seed).encode(), digest_size=32).digest()
        self._bases = {k: Decimal(v) for k, v in (bases or {}).items()}
        self._vol_ppm = vol_ppm
        self._keys: dict[str, bytes] = {}
        self._cache: dict[tuple[str, int], Decimal] = {}

    def base(self, instrument: Instrument) -> Decimal:
        return self._bases.get(instrument.key) or default_base_price(instrument)

    def _vol(self, instrument: Instrument) -> int:
        if self._vol_ppm is not None:
            return self._vol_ppm
        return VOL_PPM_OPTION if instrument.option_type is not None else VOL_PPM_UNDERLYING

    def offset_ppm(self, instrument: Instrument, second: int) -> int:
        """Deviation from the base price in parts per million at ``second``."""
        ikey = instrument.key
        key = self._keys.get(ikey)
        if key is None:
            key = self._keys[ikey] = hashlib.blake2b(ikey.encode(), digest_size=16).digest()
        vol = self._vol(instrument)
        window, t = divmod(second, _WINDOW)
        # Anchors are independent per window (nodes below zero never clash with bridge midpoints).
        lo_w = _normal(self._seed, key, -1 - window) * vol * _ANCHOR_SCALE >> 19
        hi_w = _normal(self._seed, key, -2 - window) * vol * _ANCHOR_SCALE >> 19
        if t == 0:
            return lo_w
        lo, hi, level = 0, _WINDOW, _WINDOW_BITS
        base_node = window << _WINDOW_BITS
        while True:
            mid = (lo + hi) >> 1
            noise = _normal(self._seed, key, base_node + mid) * vol * _BRIDGE_SCALE[level] >> 19
            w_mid = ((lo_w + hi_w) >> 1) + noise
            if t == mid:
                return w_mid
            if t < mid:
                hi, hi_w = mid, w_mid
            else:
                lo, lo_w = mid, w_mid
            level -= 1

    def price(self, instrument: Instrument, second: int) -> Decimal:
        ck = (instrument.key, second)
        cached = self._cache.get(ck)
        if cached is not None:
            return cached
        tick = tick_of(instrument)
        base_ticks = int((self.base(instrument) / tick).to_integral_value(ROUND_HALF_EVEN))
        # Clamp to [-90%, +400%] so a long tail can never produce a non-positive price.
        offset = min(max(self.offset_ppm(instrument, second), -900_000), 4_000_000)
        ticks = max(1, (base_ticks * (_PPM + offset) + _PPM // 2) // _PPM)
        result = tick * ticks
        if len(self._cache) > 65_536:
            self._cache.clear()
        self._cache[ck] = result
        return result


_Series = tuple[list[int], list[Decimal]]  # sorted seconds, prices


class StepPath:
    """Step-wise prices per instrument: the latest point at or before the second applies.

    Points are absolute (epoch seconds) or daily (seconds after local midnight in ``tz``, applying to
    every date). Before an instrument's first point its first price applies. Instruments without points
    use ``fallback``.
    """

    def __init__(self, fallback: PricePath | None = None, *, tz: str = "Asia/Kolkata") -> None:
        self.fallback = fallback or RandomWalk()
        self.tz = ZoneInfo(tz)
        self._abs: dict[str, _Series] = {}
        self._daily: dict[str, _Series] = {}

    @staticmethod
    def _insert(series: dict[str, _Series], key: str, at: int, price: Decimal) -> None:
        times, prices = series.setdefault(key, ([], []))
        i = bisect.bisect_left(times, at)
        if i < len(times) and times[i] == at:
            prices[i] = price
        else:
            times.insert(i, at)
            prices.insert(i, price)

    def set(self, instrument: Instrument | str, price: Decimal, at: dt.datetime | int) -> None:
        """From ``at`` on (until a later point), ``instrument`` trades at ``price``."""
        if not isinstance(price, Decimal):
            raise TypeError("price must be Decimal")
        key = instrument if isinstance(instrument, str) else instrument.key
        second = at if isinstance(at, int) else second_of(at)
        self._insert(self._abs, key, second, price)

    def set_daily(self, instrument: Instrument | str, price: Decimal, at: dt.time) -> None:
        key = instrument if isinstance(instrument, str) else instrument.key
        self._insert(self._daily, key, at.hour * 3600 + at.minute * 60 + at.second, price)

    def knows(self, instrument: Instrument) -> bool:
        return instrument.key in self._abs or instrument.key in self._daily

    def price(self, instrument: Instrument, second: int) -> Decimal:
        key = instrument.key
        series = self._abs.get(key)
        if series is not None:
            times, prices = series
            i = bisect.bisect_right(times, second)
            return snap(prices[max(i - 1, 0)], tick_of(instrument))
        series = self._daily.get(key)
        if series is not None:
            times, prices = series
            local = dt.datetime.fromtimestamp(second, self.tz)
            i = bisect.bisect_right(times, local.hour * 3600 + local.minute * 60 + local.second)
            return snap(prices[max(i - 1, 0)], tick_of(instrument))
        return self.fallback.price(instrument, second)

    def load_rows(self, rows: Iterable[Mapping[str, str]], *, source: str = "<rows>") -> None:
        """Rows with ``time`` (ISO datetime, or ``HH:MM[:SS]`` for every day), ``instrument`` (a key such
        as ``NSE RELIANCE``) and ``price``."""
        for n, row in enumerate(rows, start=2):
            try:
                stamp, key = row["time"].strip(), row["instrument"].strip()
                price = Decimal(row["price"].strip())
                if not price.is_finite() or price <= 0:
                    raise ValueError(f"price must be positive, got {row['price']!r}")
                if "T" in stamp or "-" in stamp[:10]:
                    at = dt.datetime.fromisoformat(stamp)
                    if at.tzinfo is None:
                        at = at.replace(tzinfo=self.tz)
                    self.set(key, price, at)
                else:
                    self.set_daily(key, price, dt.time.fromisoformat(stamp))
            except (KeyError, ValueError, ArithmeticError) as exc:
                raise ValueError(f"{source}:{n}: bad price row: {exc}") from None

    @classmethod
    def from_csv(
        cls, path: str | Path, fallback: PricePath | None = None, *, tz: str = "Asia/Kolkata"
    ) -> StepPath:
        path = Path(path).expanduser()
        sp = cls(fallback, tz=tz)
        with open(path, newline="") as fh:
            sp.load_rows(csv.DictReader(fh), source=str(path))
        return sp


def path_from_options(options: Mapping[str, Any], *, tz: str = "Asia/Kolkata") -> PricePath:
    """The price path an account's options describe: ``seed``, ``prices`` (base price per instrument
    key), ``volatility_ppm``, ``price_csv`` (a CSV path; instruments it lacks use the walk)."""
    bases = {str(k): Decimal(str(v)) for k, v in (options.get("prices") or {}).items()}
    vol = options.get("volatility_ppm")
    walk = RandomWalk(options.get("seed", "paper"), bases, vol_ppm=int(vol) if vol is not None else None)
    csv_path = options.get("price_csv")
    if csv_path:
        return StepPath.from_csv(str(csv_path), walk, tz=tz)
    return walk
