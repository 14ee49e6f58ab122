"""The paper broker's instrument master, generated for a trading day.

Real brokers publish a master; the paper market has none, so without this one paper and rehearsal would
accept contracts that cannot exist (strike 53030, an expiry on a Monday). The generated master lists:

* cash instruments: every underlying of the reference price file (``runner/data/paper_prices.yaml``)
  plus a few penny stocks, on NSE and (stocks) BSE; indices appear as their home exchange's instrument
  (``NSE NIFTY``, ``BSE SENSEX``) so they can be named as underlyings;
* futures and options on NFO (NSE underlyings) and BFO (BSE indices). Expiries follow the exchange
  rules in force since September 2025: NSE contracts expire on Tuesday, BSE contracts on Thursday; the
  monthly expiry is the last such weekday of the month; only NIFTY and SENSEX keep weeklies. An expiry
  that falls on an exchange holiday moves to the previous trading day (:mod:`runner.trading_calendars`).
  Listed: 4 weeklies, 3 serial monthlies, plus quarterlies (and NIFTY half-yearlies) for index options;
  futures list the 3 serial monthlies.
* strikes on each underlying's step, in a band of ``STRIKE_BAND`` steps either side of the reference
  spot (the centre of the paper price path), so ATM +- 20 steps always exists.

Lot, tick and freeze sizes for indices follow the values the shipped playbooks use; stocks get a lot of
about 7.5 lakh notional and NSE's price-banded cash tick. Tokens are derived from the contract alone
(underlying id, expiry, kind, strike), so a contract keeps its token from one day to the next.

:data:`FORMAT` serves it as a :class:`~runner.brokers.masters.MasterFormat` (``download`` renders the
generic CSV of :mod:`runner.brokers.instruments`, ``parse`` reads it back); :func:`generated_master` is
the fast path the paper broker and the simulators use (cached per day).
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import functools
import io
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from runner.brokers.instruments import InstrumentMaster, MasterRow, rows_from_csv
from runner.brokers.masters import MasterFile, MasterFormatError
from runner.model import Instrument, OptionType

if TYPE_CHECKING:
    from runner.accounts import Account
    from runner.trading_calendars import Calendar

BROKER = "paper"
STRIKE_BAND = 25  # steps either side of the reference spot: ATM +- 20 survives a drift of 5 steps
WEEKLIES = 4
MONTHLIES = 3
QUARTERLIES = 3
HALF_YEARLIES = 8
# Penny stocks the reference file does not price (tests and sims trade them); price sets tick and lot.
EXTRA_STOCKS: dict[str, Decimal] = {"IDEA": Decimal(10), "YESBANK": Decimal(20)}
CSV_COLUMNS = ("exchange", "symbol", "expiry", "strike", "option_type", "lot_size", "tick_size",
               "freeze_quantity", "token", "trading_symbol")
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_WEEKLY_MONTH = "123456789OND"  # NSE weekly trading symbols spell Oct-Dec as O, N, D
_EPOCH = dt.date(2000, 1, 1)
_TUE, _THU = 1, 3


@dataclass(frozen=True, slots=True)
class IndexSpec:
    uid: int  # stable id inside tokens: append only, never renumber
    home: str  # the index's own exchange (NSE/BSE); derivatives on NFO/BFO
    strike_step: Decimal
    lot_size: int
    freeze_quantity: int
    weekly: bool
    quarterly: int  # how many quarterly option expiries follow the serial monthlies
    half_yearly: int


# Lots as the shipped playbooks and tests state them (NIFTY 75, BANKNIFTY 35); the exchange revises them
# twice a year, so a real broker's master is the authority on a real account.
INDICES: dict[str, IndexSpec] = {
    "NIFTY": IndexSpec(1, "NSE", Decimal(50), 75, 1800, True, QUARTERLIES, HALF_YEARLIES),
    "BANKNIFTY": IndexSpec(2, "NSE", Decimal(100), 35, 900, False, QUARTERLIES, 0),
    "FINNIFTY": IndexSpec(3, "NSE", Decimal(50), 65, 1800, False, 0, 0),
    "MIDCPNIFTY": IndexSpec(4, "NSE", Decimal(25), 140, 2800, False, 0, 0),
    "NIFTYNXT50": IndexSpec(5, "NSE", Decimal(100), 25, 600, False, 0, 0),
    "SENSEX": IndexSpec(6, "BSE", Decimal(100), 20, 1000, True, 0, 0),
    "BANKEX": IndexSpec(7, "BSE", Decimal(100), 30, 900, False, 0, 0),
}
_FIRST_STOCK_UID = 100
OPTION_TICK = Decimal("0.05")
INDEX_FUTURE_TICK = Decimal("0.10")
INDEX_TICK = Decimal("0.05")


def cash_tick(price: Decimal) -> Decimal:
    """NSE's price-banded tick for cash and stock futures (circular of June 2025)."""
    for bound, tick in ((250, "0.01"), (1000, "0.05"), (5000, "0.10"), (10000, "0.50"), (20000, "1.00")):
        if price <= bound:
            return Decimal(tick)
    return Decimal(5)


def stock_strike_step(price: Decimal) -> Decimal:
    for bound, step in ((50, "1"), (100, "2.5"), (250, "5"), (500, "10"), (1000, "20"), (2500, "20"),
                        (5000, "50"), (10000, "100")):
        if price <= bound:
            return Decimal(step)
    return Decimal(250)


def stock_lot(price: Decimal) -> int:
    """About 7.5 lakh of notional, rounded to a multiple of 25 (1 for the dearest stocks)."""
    raw = int(Decimal(750_000) / price)
    return max(25 * round(raw / 25), 1) if raw >= 25 else max(raw, 1)


# Expiry calendar -------------------------------------------------------------------------------------


def _calendar(exchange: str) -> Calendar | None:
    from runner.trading_calendars import NotCovered, load_calendar

    try:
        return load_calendar(exchange)
    except (NotCovered, OSError, ValueError):
        return None


def _is_trading(cal: Calendar | None, day: dt.date) -> bool:
    if cal is None or not cal.covers(day):
        return day.weekday() < 5  # beyond the calendar's data: weekdays only
    return cal.is_trading_day(day)


def _adjusted(cal: Calendar | None, day: dt.date) -> dt.date:
    """``day``, or the trading day before it when the exchange is closed then."""
    while not _is_trading(cal, day):
        day -= dt.timedelta(days=1)
    return day


def _last_weekday(year: int, month: int, weekday: int) -> dt.date:
    last = dt.date(year, month, calendar.monthrange(year, month)[1])
    return last - dt.timedelta(days=(last.weekday() - weekday) % 7)


def _months_from(day: dt.date) -> Iterator[tuple[int, int]]:
    year, month = day.year, day.month
    while True:
        yield year, month
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


def monthly_expiries(day: dt.date, weekday: int, cal: Calendar | None, count: int,
                     months: Sequence[int] = tuple(range(1, 13))) -> list[dt.date]:
    """The next ``count`` monthly expiries on or after ``day`` in the given calendar months."""
    out: list[dt.date] = []
    for year, month in _months_from(day):
        if len(out) >= count:
            break
        if month not in months:
            continue
        expiry = _adjusted(cal, _last_weekday(year, month, weekday))
        if expiry >= day:
            out.append(expiry)
    return out


def weekly_expiries(day: dt.date, weekday: int, cal: Calendar | None, count: int) -> list[dt.date]:
    nominal = day + dt.timedelta(days=(weekday - day.weekday()) % 7)
    out: list[dt.date] = []
    while len(out) < count:
        expiry = _adjusted(cal, nominal)
        if expiry >= day:
            out.append(expiry)
        nominal += dt.timedelta(days=7)
    return out


# Generation ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Underlying:
    symbol: str
    uid: int
    home: str
    spot: Decimal
    strike_step: Decimal
    lot_size: int
    freeze_quantity: int | None
    cash_tick: Decimal
    future_tick: Decimal
    index: IndexSpec | None


@functools.cache
def _underlyings() -> tuple[_Underlying, ...]:
    from runner.brokers.paper.price_paths import load_references

    refs = load_references()
    out: list[_Underlying] = []
    stocks = {s: r.price for s, r in refs.underlyings.items() if s not in INDICES}
    stocks.update(EXTRA_STOCKS)
    for symbol, spec in INDICES.items():
        ref = refs.get(symbol)
        if ref is None:
            continue
        out.append(_Underlying(symbol, spec.uid, spec.home, ref.price, spec.strike_step, spec.lot_size,
                               spec.freeze_quantity, INDEX_TICK, INDEX_FUTURE_TICK, spec))
    # Stock ids: alphabetical from _FIRST_STOCK_UID, so adding a stock renumbers only those after it.
    for n, symbol in enumerate(sorted(stocks)):
        price = stocks[symbol]
        lot = stock_lot(price)
        out.append(_Underlying(symbol, _FIRST_STOCK_UID + n, "NSE", price, stock_strike_step(price), lot,
                               None, cash_tick(price), cash_tick(price), None))
    return tuple(out)


def _token(uid: int, expiry: dt.date | None = None, kind: int = 0) -> str:
    """Contract-derived numeric token: uid, days since 2000, kind (1 future; options add 2 CE / 3 PE and
    the strike in paise, see :func:`_rows_of`). Cash: kind 0 NSE, 1 BSE."""
    if expiry is None:
        return str(10_000 + uid * 10 + kind)
    return f"{uid:03d}{(expiry - _EPOCH).days:05d}{kind}{0:08d}"


def _fo_symbol(symbol: str, expiry: dt.date, monthly: bool, tail: str) -> str:
    if monthly:
        return f"{symbol}{expiry:%y}{_MONTHS[expiry.month - 1]}{tail}"
    return f"{symbol}{expiry:%y}{_WEEKLY_MONTH[expiry.month - 1]}{expiry:%d}{tail}"


def _strikes(spot: Decimal, step: Decimal) -> list[Decimal]:
    atm = (spot / step).to_integral_value() * step
    return [atm + step * k for k in range(-STRIKE_BAND, STRIKE_BAND + 1) if atm + step * k > 0]


def generate_rows(day: dt.date, symbols: Iterable[str] | None = None) -> Iterator[MasterRow]:
    """Every instrument listed on ``day`` (deterministic: same day, same rows, same tokens); only the
    underlyings in ``symbols`` when given."""
    wanted = None if symbols is None else {s.upper() for s in symbols}
    for u in _underlyings():
        if wanted is None or u.symbol in wanted:
            yield from _rows_of(u, day)


def _rows_of(u: _Underlying, day: dt.date) -> Iterator[MasterRow]:
    home_cash = Instrument(u.home, u.symbol, lot_size=1, tick_size=u.cash_tick)
    yield MasterRow(home_cash, _token(u.uid), u.symbol if u.index else f"{u.symbol}-EQ")
    if u.index is None:
        yield MasterRow(Instrument("BSE", u.symbol, lot_size=1, tick_size=u.cash_tick),
                        _token(u.uid, kind=1), u.symbol)
    cal = _calendar(u.home)
    weekday = _THU if u.home == "BSE" else _TUE
    fo = "BFO" if u.home == "BSE" else "NFO"
    serial = monthly_expiries(day, weekday, cal, MONTHLIES)
    option_expiries = set(serial)
    if u.index is not None:
        if u.index.weekly:
            option_expiries.update(weekly_expiries(day, weekday, cal, WEEKLIES))
        after = serial[-1] + dt.timedelta(days=1)
        option_expiries.update(monthly_expiries(after, weekday, cal, u.index.quarterly, (3, 6, 9, 12)))
        option_expiries.update(monthly_expiries(after, weekday, cal, u.index.half_yearly, (6, 12)))
    monthly = {e for e in option_expiries if _adjusted(cal, _last_weekday(e.year, e.month, weekday)) == e}
    for expiry in serial:
        fut = Instrument(fo, u.symbol, expiry, lot_size=u.lot_size, tick_size=u.future_tick,
                         freeze_quantity=u.freeze_quantity)
        yield MasterRow(fut, _token(u.uid, expiry, 1), _fo_symbol(u.symbol, expiry, True, "FUT"))
    strikes = [(k, format(k.normalize(), "f"), int(k * 100)) for k in _strikes(u.spot, u.strike_step)]
    ce, pe = OptionType.CE, OptionType.PE
    for expiry in sorted(option_expiries):
        sym = _fo_symbol(u.symbol, expiry, expiry in monthly, "")
        head = f"{u.uid:03d}{(expiry - _EPOCH).days:05d}"
        for strike, text, paise in strikes:
            yield MasterRow(Instrument(fo, u.symbol, expiry, strike, ce, u.lot_size, OPTION_TICK,
                                       u.freeze_quantity), f"{head}2{paise:08d}", f"{sym}{text}CE")
            yield MasterRow(Instrument(fo, u.symbol, expiry, strike, pe, u.lot_size, OPTION_TICK,
                                       u.freeze_quantity), f"{head}3{paise:08d}", f"{sym}{text}PE")


class GeneratedMaster(InstrumentMaster):
    """The paper master of one day, built per underlying on first use: resolving a NIFTY option builds
    NIFTY's chain only, so a run pays for what it trades. Lookups are :class:`InstrumentMaster`'s own."""

    def __init__(self, day: dt.date) -> None:
        super().__init__(broker=BROKER)
        self.day = day
        self._lock = threading.Lock()
        self._built: set[str] = set()
        self._known = {u.symbol: u for u in _underlyings()}

    def _ensure(self, symbol: str | None) -> None:
        wanted = list(self._known) if symbol is None else [symbol.upper()]
        with self._lock:
            for s in wanted:
                u = self._known.get(s)
                if u is not None and s not in self._built:
                    for row in _rows_of(u, self.day):
                        self.add(row)
                    self._built.add(s)

    def resolve(self, instrument: Instrument) -> MasterRow:
        self._ensure(instrument.symbol)
        return super().resolve(instrument)

    def by_token(self, token: str) -> MasterRow:
        self._ensure(None)
        return super().by_token(token)

    def expiries(self, exchange: str, symbol: str) -> list[dt.date]:
        self._ensure(symbol)
        return super().expiries(exchange, symbol)

    def strikes(self, exchange: str, symbol: str, expiry: dt.date) -> list[Decimal]:
        self._ensure(symbol)
        return super().strikes(exchange, symbol, expiry)

    def __len__(self) -> int:
        self._ensure(None)
        return super().__len__()

    def __iter__(self) -> Iterator[MasterRow]:
        self._ensure(None)
        return super().__iter__()


@functools.lru_cache(maxsize=8)
def generated_master(day: dt.date) -> GeneratedMaster:
    """The paper master listed on ``day`` (one per day per process, chains built on first use)."""
    return GeneratedMaster(day)


def render_csv(rows: Iterator[MasterRow] | Sequence[MasterRow]) -> bytes:
    """The generic master CSV (see :mod:`runner.brokers.instruments`) of ``rows``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        i = row.instrument
        writer.writerow([
            i.exchange, i.symbol, i.expiry.isoformat() if i.expiry else "",
            format(i.strike.normalize(), "f") if i.strike is not None else "",
            i.option_type.value if i.option_type else "", i.lot_size or "",
            format(i.tick_size, "f") if i.tick_size is not None else "", i.freeze_quantity or "",
            row.token or "", row.trading_symbol or "",
        ])
    return out.getvalue().encode()


class PaperMasterFormat:
    """:class:`~runner.brokers.masters.MasterFormat` of the paper broker: today's generated master."""

    broker = BROKER
    file_name = "paper_master.csv"

    async def download(self, account: Account) -> list[MasterFile]:
        from zoneinfo import ZoneInfo

        day = dt.datetime.now(ZoneInfo(account.timezone)).date()
        return [MasterFile(self.file_name, render_csv(iter(generated_master(day))))]

    def parse(self, files: Sequence[MasterFile]) -> Iterator[MasterRow]:
        for f in files:
            yield from rows_from_csv(f.content, f.name, error=MasterFormatError)


FORMAT = PaperMasterFormat()


def venue_master(broker: str, own: Iterable[MasterRow], *, day: dt.date | None = None) -> InstrumentMaster:
    """A simulator's default master: its own rows (the ids its tests and the venue's docs name) plus every
    contract of the generated master it lacks, so the same instruments exist on every simulator. A
    generated row's token (derived from the contract alone) is its venue id there."""
    rows = list(own)
    if day is None:
        from zoneinfo import ZoneInfo

        day = dt.datetime.now(ZoneInfo("Asia/Kolkata")).date()
    master = InstrumentMaster(rows, broker=broker)
    master.fill_from(generated_master(day))
    return master
