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
import functools
import hashlib
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


# --- reference market: the built-in paper broker's default prices ------------------------------------

REFERENCE_FILE = Path(__file__).parents[2] / "data" / "paper_prices.yaml"
EXPIRY_CLOSE = dt.time(15, 30)  # options and futures expire at the close, local time
_YEAR_SECONDS = Decimal(365 * 86_400)
_CTX = Context(prec=28, rounding=ROUND_HALF_EVEN)  # fixed, so results never depend on the caller's context
_INV_SQRT_2PI = Decimal("0.3989422804014326779399460599")
# Abramowitz & Stegun 26.2.17: upper normal tail Q(x) = phi(x) * poly(1 / (1 + p x)), |error| < 7.5e-8.
_AS_P = Decimal("0.2316419")
_AS_B = (Decimal("0.319381530"), Decimal("-0.356563782"), Decimal("1.781477937"),
         Decimal("-1.821255978"), Decimal("1.330274429"))


@dataclass(frozen=True, slots=True)
class Reference:
    symbol: str
    exchange: str  # where the underlying itself trades (an index's or a stock's home exchange)
    price: Decimal
    iv: Decimal  # annualised implied volatility, e.g. 0.13

    @property
    def instrument(self) -> Instrument:
        return Instrument(self.exchange, self.symbol)


@dataclass(frozen=True, slots=True)
class ReferenceBook:
    version: str
    underlyings: Mapping[str, Reference]
    underlying_ppm: int = 20
    option_ppm: int = 30

    def get(self, symbol: str) -> Reference | None:
        return self.underlyings.get(symbol.upper())


def load_references(path: str | Path | None = None) -> ReferenceBook:
    """A reference price file (default: the shipped one, read once per process)."""
    if path is None:
        return _shipped_references()
    return _read_references(Path(path).expanduser())


@functools.cache
def _shipped_references() -> ReferenceBook:
    return _read_references(REFERENCE_FILE)


def _read_references(path: Path) -> ReferenceBook:
    from runner.playbook.yamlload import load_yaml  # floats arrive as Decimal from their source text

    doc = load_yaml(path.read_text(encoding="utf-8"), str(path)).value
    try:
        noise = doc.get("noise_ppm") or {}
        refs = {}
        for symbol, row in (doc.get("underlyings") or {}).items():
            price, iv = Decimal(str(row["price"])), Decimal(str(row["iv"]))
            if price <= 0 or iv < 0:
                raise ValueError(f"{symbol}: price must be positive and iv not negative")
            sym = str(symbol).upper()
            refs[sym] = Reference(sym, str(row.get("exchange", "NSE")), price, iv)
        return ReferenceBook(str(doc["version"]), refs, int(noise.get("underlying", 20)),
                             int(noise.get("option", 30)))
    except (AttributeError, KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise ValueError(f"{path}: bad reference price file: {exc}") from None


def years_to_expiry(expiry: dt.date, second: int, tz: ZoneInfo) -> Decimal:
    """Time from ``second`` to the expiry close, in years of 365 days (0 once expired)."""
    close = math.floor(dt.datetime.combine(expiry, EXPIRY_CLOSE, tzinfo=tz).timestamp())
    return Decimal(max(close - second, 0)) / _YEAR_SECONDS


def option_value(spot: Decimal, strike: Decimal, option_type: OptionType, years: Decimal,
                 iv: Decimal) -> Decimal:
    """Premium under the normal (Bachelier) model with volatility ``spot * iv``: intrinsic value plus a
    time value of ``spot * iv * sqrt(years) * (phi(x) - x * Q(x))`` where ``x`` is the distance from the
    money in those units. At the money that is ``0.3989 * spot * iv * sqrt(years)`` (Brenner-
    Subrahmanyam); it shrinks with distance from the money and with time to expiry. Not snapped."""
    with localcontext(_CTX):
        intrinsic = max(spot - strike if option_type is OptionType.CE else strike - spot, Decimal(0))
        scale = spot * iv * years.sqrt()
        if scale <= 0:
            return intrinsic
        x = abs(spot - strike) / scale
        if x > 12:  # time value below 1e-30 of the scale
            return intrinsic
        phi = (-(x * x) / 2).exp() * _INV_SQRT_2PI
        t = 1 / (1 + _AS_P * x)
        poly = Decimal(0)
        for b in reversed(_AS_B):
            poly = (poly + b) * t
        time_value = scale * phi * max(1 - x * poly, Decimal(0))
        return intrinsic + time_value


class ReferencePath:
    """The default paper market: reference levels for known symbols, a :class:`RandomWalk` for the rest.

    * a known symbol's cash instrument or index walks around its reference (``underlying_ppm``, calmer
      than the generic walk so hand-written limit prices stay inside the exchange band for days);
    * its futures trade at that same walk (snapped to the future's tick);
    * its options trade at :func:`option_value` of the underlying's *reference* level at the current time
      to expiry, times a small noise of their own. Premiums decay towards expiry but do not follow the
      underlying's intraday wiggle: the paper market is for order handling, not for P&L.

    ``overrides`` (an account's ``prices:``) win: an instrument key listed there walks around that base,
    and an underlying's key (``NSE RELIANCE``) also moves its futures and options.
    """

    def __init__(
        self,
        references: ReferenceBook,
        seed: str | int = "paper",
        overrides: Mapping[str, Decimal] | None = None,
        *,
        vol_ppm: int | None = None,
        tz: str = "Asia/Kolkata",
    ) -> None:
        self.references = references
        self._overrides = {k: Decimal(v) for k, v in (overrides or {}).items()}
        self.fallback = RandomWalk(seed, self._overrides, vol_ppm=vol_ppm)
        bases = {r.instrument.key: r.price for r in references.underlyings.values()}
        bases.update(self._overrides)
        # volatility_ppm 0 holds levels flat: only None means "the file's noise".
        walk_ppm = references.underlying_ppm if vol_ppm is None else vol_ppm
        self._underlying = RandomWalk(seed, bases, vol_ppm=walk_ppm)
        self._noise = RandomWalk(seed, vol_ppm=references.option_ppm)
        self.tz = ZoneInfo(tz)
        self._cache: dict[tuple[str, int], Decimal] = {}

    def reference_of(self, instrument: Instrument) -> Reference | None:
        ref = self.references.get(instrument.symbol)
        if ref is not None and instrument.key in self._overrides and instrument.key != ref.instrument.key:
            return None  # a derivative with its own base: the plain walk around it
        return ref

    def model_price(self, instrument: Instrument, second: int) -> Decimal | None:
        """The noiseless model premium of a known option at ``second`` (None for anything else)."""
        ref = self.reference_of(instrument)
        if ref is None or instrument.option_type is None or instrument.strike is None:
            return None
        if instrument.expiry is None:
            return None
        spot = self._underlying.base(ref.instrument)
        years = years_to_expiry(instrument.expiry, second, self.tz)
        return option_value(spot, instrument.strike, instrument.option_type, years, ref.iv)

    def price(self, instrument: Instrument, second: int) -> Decimal:
        ref = self.reference_of(instrument)
        if ref is None:
            return self.fallback.price(instrument, second)
        tick = tick_of(instrument)
        if instrument.option_type is None:
            return snap(self._underlying.price(ref.instrument, second), tick)
        ck = (instrument.key, second)
        cached = self._cache.get(ck)
        if cached is not None:
            return cached
        value = self.model_price(instrument, second)
        if value is None:  # an option without strike or expiry: nothing to model
            return self.fallback.price(instrument, second)
        noise = min(max(self._noise.offset_ppm(instrument, second), -500_000), 500_000)
        with localcontext(_CTX):
            result = snap(value * (_PPM + noise) / _PPM, tick)
        if len(self._cache) > 65_536:
            self._cache.clear()
        self._cache[ck] = result
        return result


def path_from_options(
    options: Mapping[str, Any], *, tz: str = "Asia/Kolkata", references: ReferenceBook | None = None
) -> PricePath:
    """The price path an account's options describe: ``seed``, ``prices`` (base price per instrument
    key), ``volatility_ppm``, ``price_csv`` (a CSV path; instruments it lacks use the walk). With
    ``references`` (the paper broker's default), known symbols trade around their reference levels."""
    bases = {str(k): Decimal(str(v)) for k, v in (options.get("prices") or {}).items()}
    vol = options.get("volatility_ppm")
    seed = options.get("seed", "paper")
    vol_ppm = int(vol) if vol is not None else None
    walk: PricePath
    if references is not None:
        walk = ReferencePath(references, seed, bases, vol_ppm=vol_ppm, tz=tz)
    else:
        walk = RandomWalk(seed, bases, vol_ppm=vol_ppm)
    csv_path = options.get("price_csv")
    if csv_path:
        return StepPath.from_csv(str(csv_path), walk, tz=tz)
    return walk
