"""AlphaPoint APEX's own instrument master: the ``GetInstruments`` reply (``FORMAT``).

Source: GitHub alphapoint/slate ``source/includes/instrs/_api_instrs_user_getinstruments.md``: request
``{"OMSId": 1}``, Public (no login); reply an array of ``omsId, instrumentId, symbol, product1,
product1Symbol, product2, product2Symbol, instrumentType (0 Unknown, 1 Standard), venueInstrumentId,
venueId, sortIndex, sessionStatus (0 Unknown, 1 Running, 2 Paused, 3 Stopped, 4 Starting),
previousSessionStatus, sessionStatusDateTime, selfTradePrevention, quantityIncrement, priceIncrement, ...``.
The docs spell keys camelCase, other APEX pages PascalCase: keys are read case-insensitively (the docs say
case "is generally not important"), statuses as the number or its name.

APEX has no exchange, expiry or strike fields. The instrument ``symbol`` carries them, dash-separated as
APEX venues name dated contracts (:func:`apex_symbol`: ``NIFTY-29DEC26-24500-CE``, ``NIFTY-29DEC26-FUT``,
``RELIANCE``; read from the right, so ``BAJAJ-AUTO`` stays one name): derivatives are NFO, everything else
NSE, as the shipped ``instruments.csv`` has them; any other exchange is named before a colon
(``BSE:RELIANCE``, ``BFO:SENSEX-31DEC26-82500-CE``), since one OMS lists both and a symbol is unique in it.
``product1Symbol``
is the product balances are reported in (``GetAccountPositions.ProductSymbol``), kept as
``product_symbol`` exactly as instruments.csv does. ``quantityIncrement`` is the lot where it is whole.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from runner.brokers.alphapoint.session import ApexSession
from runner.brokers.alphapoint.wire import BROKER, Frame, ci
from runner.brokers.instruments import MasterRow
from runner.brokers.masters import MasterFile, MasterFormatError
from runner.model import Instrument, OptionType
from runner.wirejson import dumps, loads, plain, to_decimal

if TYPE_CHECKING:
    from runner.accounts import Account

log = logging.getLogger("runner.brokers.alphapoint")

GET_INSTRUMENTS = "GetInstruments"
FILE_NAME = "GetInstruments.json"
DEFAULT_OMS_ID = 1  # the docs' example; account option ``oms_id`` otherwise
SESSION_STATUS = {0: "Unknown", 1: "Running", 2: "Paused", 3: "Stopped", 4: "Starting"}
_STATUS_BY_NAME = {v.upper(): v for v in SESSION_STATUS.values()}
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DATE_RE = re.compile(r"^(?P<d>\d{2})(?P<m>[A-Z]{3})(?P<y>\d{2})$")
_STRIKE_RE = re.compile(r"^\d+(?:\.\d+)?$")
# A compact name ending like a derivative (``NIFTY26DEC24500PE``): NSE's compact forms are ambiguous (26DEC24
# reads as a date as well as a month and a strike), so such a symbol is skipped, never guessed.
_DERIVATIVE_TAIL_RE = re.compile(r"\d(?:CE|PE|FUT)$")
CASH_EXCHANGE, DERIVATIVE_EXCHANGE = "NSE", "NFO"
_EXCHANGE_SEP = ":"


def apex_symbol(inst: Instrument) -> str:
    """The instrument ``symbol`` this format reads back to ``inst`` (the simulator serves it)."""
    home = CASH_EXCHANGE if inst.expiry is None else DERIVATIVE_EXCHANGE
    prefix = "" if inst.exchange == home else f"{inst.exchange}{_EXCHANGE_SEP}"
    if inst.expiry is None:
        return prefix + inst.symbol
    date = f"{inst.expiry.day:02d}{_MONTHS[inst.expiry.month - 1]}{inst.expiry.year % 100:02d}"
    if inst.option_type is None or inst.strike is None:
        return f"{prefix}{inst.symbol}-{date}-FUT"
    return f"{prefix}{inst.symbol}-{date}-{plain(inst.strike)}-{inst.option_type.value}"


def _oms_id(account: Account) -> int:
    return int(account.options.get("oms_id") or DEFAULT_OMS_ID)


async def _no_login(_session: ApexSession) -> None:
    """GetInstruments is Public: the master never needs the account's credentials."""


class ApexMaster:
    broker = BROKER

    async def download(self, account: Account) -> list[MasterFile]:
        """One ``GetInstruments`` frame on the account's gateway (the adapter's own session framing); the
        file is the reply's payload, written back exactly (numbers stay digit for digit)."""
        ep = account.endpoints
        url = ep.get("ws") or ep.get("websocket") or ep.get("base_url")  # as the adapter reads them
        if not url:
            raise ValueError(
                f"account {account.name!r}: alphapoint needs endpoints.ws (wss://<venue>/WSGateway/)"
            )
        session = ApexSession(
            url, timeout=account.timeout_seconds, on_open=_no_login, on_event=lambda _n, _o: None
        )
        try:
            payload = await session.call(GET_INSTRUMENTS, {"OMSId": _oms_id(account)}, mutating=False)
        finally:
            await session.close()
        return [MasterFile(FILE_NAME, dumps(payload).encode())]

    def parse(self, files: Sequence[MasterFile]) -> Iterator[MasterRow]:
        for file in files:
            skipped: Counter[str] = Counter()
            yield from parse_file(file, skipped)
            if skipped:  # never fatal: one warning per file with the count per reason
                reasons = ", ".join(f"{why} x{n}" for why, n in sorted(skipped.items()))
                log.warning("alphapoint: %s: %d rows skipped (%s)", file.name, sum(skipped.values()), reasons)


FORMAT = ApexMaster()


def decode(file: MasterFile) -> list[Any]:
    """The reply's array; a whole recorded frame (``{"m":1,"i":..,"n":"GetInstruments","o":"[...]"}``) is
    accepted too."""
    try:
        data = loads(file.content)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MasterFormatError(f"{file.name}: not JSON ({exc})") from None
    if isinstance(data, Mapping) and "o" in data and "n" in data:
        try:
            data = Frame.parse(file.content).o
        except (ValueError, TypeError) as exc:
            raise MasterFormatError(f"{file.name}: unreadable frame payload ({exc})") from None
    if not isinstance(data, list):
        got = type(data).__name__
        raise MasterFormatError(f"{file.name}: expected a JSON array of instruments, got {got}")
    return data


def parse_file(file: MasterFile, skipped: Counter[str]) -> Iterator[MasterRow]:
    for index, rec in enumerate(decode(file)):
        if not isinstance(rec, Mapping):
            raise MasterFormatError(f"{file.name}: row {index}: expected an object, got {type(rec).__name__}")
        row = parse_row(ci(rec), skipped)
        if row is not None:
            yield row


def session_status(value: Any) -> str:
    """The status's name from its number (the docs) or its name (string enums elsewhere in APEX)."""
    if isinstance(value, str) and not value.strip().isdigit():
        return _STATUS_BY_NAME.get(value.strip().upper(), "Unknown")
    number = to_decimal(value)
    return SESSION_STATUS.get(int(number), "Unknown") if number is not None else "Unknown"


def instrument_of(symbol: str) -> Instrument | None:
    """The canonical instrument of an APEX ``symbol`` (see the module docstring), None when unreadable."""
    exchange, sep, rest = symbol.partition(_EXCHANGE_SEP)
    if sep:
        base = instrument_of(rest) if exchange and rest and _EXCHANGE_SEP not in rest else None
        return None if base is None else dataclasses.replace(base, exchange=exchange)
    parts = symbol.split("-")
    kind = parts[-1]
    if kind in ("CE", "PE") and len(parts) >= 4 and _STRIKE_RE.match(parts[-2]):
        date, strike, underlying = parts[-3], Decimal(parts[-2]), "-".join(parts[:-3])
    elif kind == "FUT" and len(parts) >= 3:
        date, strike, underlying = parts[-2], None, "-".join(parts[:-2])
    elif _DERIVATIVE_TAIL_RE.search(symbol):
        return None
    else:
        return Instrument(CASH_EXCHANGE, symbol)
    m = _DATE_RE.match(date)
    if m is None or m["m"] not in _MONTHS or not underlying:
        return None
    try:
        expiry = dt.date(2000 + int(m["y"]), _MONTHS.index(m["m"]) + 1, int(m["d"]))
    except ValueError:
        return None
    option = OptionType(kind) if strike is not None else None
    return Instrument(DERIVATIVE_EXCHANGE, underlying, expiry, strike, option)


def parse_row(r: Mapping[str, Any], skipped: Counter[str]) -> MasterRow | None:
    """One instrument (keys lower-cased), or None counted in ``skipped`` by reason."""
    raw_id = to_decimal(r.get("instrumentid"))
    symbol = str(r.get("symbol") or "").strip().upper()
    if raw_id is None or raw_id <= 0 or raw_id != raw_id.to_integral_value() or not symbol:
        skipped["no InstrumentId or Symbol"] += 1
        return None
    kind = to_decimal(r.get("instrumenttype"))
    if kind is not None and kind == 0:
        skipped["InstrumentType Unknown"] += 1  # the docs: "an error condition"
        return None
    base = instrument_of(symbol)
    if base is None:
        skipped["derivative symbol without a full expiry date"] += 1
        return None
    qty_inc = to_decimal(r.get("quantityincrement"))
    whole = qty_inc is not None and qty_inc >= 1 and qty_inc == qty_inc.to_integral_value()
    lot = int(qty_inc) if whole and qty_inc is not None else None  # fractional (crypto): no lot
    tick = to_decimal(r.get("priceincrement"))
    inst = Instrument(
        base.exchange, base.symbol, base.expiry, base.strike, base.option_type,
        lot_size=lot, tick_size=tick if tick and tick > 0 else None,
    )
    iid = str(int(raw_id))
    extra = {"instrument_id": iid, "session_status": session_status(r.get("sessionstatus"))}
    for key, field in (("product_symbol", "product1symbol"), ("quote_product", "product2symbol"),
                       ("oms_id", "omsid")):
        if (value := r.get(field)) not in (None, ""):
            extra[key] = str(value)
    if qty_inc is not None:
        extra["quantity_increment"] = plain(qty_inc)
    return MasterRow(inst, token=iid, trading_symbol=symbol, extra=extra)
