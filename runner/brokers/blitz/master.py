"""QuantXpress Blitz's own instrument master: the gzipped JSON dump (``FORMAT``).

Sources: the official SDK Quantxpress-Technologies/blitz-api-py, branch ``master``:
``blitzsdk/marketdata/instrument_manager.py`` (``requests.get(url, timeout=15)`` with *no* headers, then
``gzip.decompress(response.content)`` and ``json.loads``; rows keyed ``"{exchangeSegment}|{instrumentName}"``
-> ``instrumentId``), ``blitzsdk/common/config.py`` (``BLITZ_INSTRUMENT_URL``, default
``http://uat.bull8.ai:7443/v1/api/instruments/gz/download``, i.e. the API host's origin) and, before commit
0d90142 removed it, ``docs/blitzsdk/instruments.md`` (the row shape: ``instrumentId`` long,
``exchangeSegment`` NSECM/NSEFO/BSECM/NSE..., ``instrumentName``, ``instrumentType`` EQ/FUT/CE/PE/INDEX,
``lotSize`` int, ``tickSize`` double, ``expiry`` "2026-07-28" or null, ``strike`` double or null,
``optionType`` CE/PE or null).

The SDK itself parses none of expiry/strike/optionType, so we are liberal in what we read (the docs'
shapes plus the other usual spellings, see :func:`parse_expiry`), and say so where we are.
"""

from __future__ import annotations

import datetime as dt
import gzip
import logging
import re
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import httpx

from runner.brokers.blitz.client import DEFAULT_BASE, _origin
from runner.brokers.blitz.wire import BROKER, EXCHANGE_OF_SEGMENT
from runner.brokers.http import make_client
from runner.brokers.instruments import MasterRow
from runner.brokers.masters import MasterFile, MasterFormatError
from runner.errors import Unavailable
from runner.model import Instrument, OptionType
from runner.wirejson import loads, to_decimal

if TYPE_CHECKING:
    from runner.accounts import Account

log = logging.getLogger("runner.brokers.blitz")

INSTRUMENTS_PATH = "/v1/api/instruments/gz/download"  # config.py INSTRUMENT_URL, on BASE_URL
FILE_NAME = "instruments.json.gz"  # the docs' ``curl ... -o instruments.json.gz``
# The SDK waits 15 s; a full dump is megabytes, so never less than that whatever the account's timeout.
MIN_TIMEOUT_SECONDS = 15.0

# Segments beyond the order API's (blitz/wire.py SEGMENT_OF_EXCHANGE): the docs' "NSE" index segment
# (``NSE|NIFTY``) lists indices, whose prices an ATM strike is taken around.
_EXTRA_SEGMENTS = {"NSE": "NSE", "BSE": "BSE"}
_OPTION_TYPES = {"CE": OptionType.CE, "PE": OptionType.PE, "CALL": OptionType.CE, "PUT": OptionType.PE,
                 "C": OptionType.CE, "P": OptionType.PE}
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
# An underlying followed by the usual Indian derivative date tokens: 28JUL26 (DDMONYY), 26JUL (YYMON, NSE
# monthly), 26728 (YYMDD, NSE weekly). Used only when the expiry's own DDMONYY token is not in the name.
_UNDERLYING_RE = re.compile(
    r"^(?P<u>[A-Z&_-][A-Z0-9&_-]*?)(?:\d{2}[A-Z]{3}\d{2}|\d{2}[A-Z]{3}|\d{2}[1-9OND]\d{2})"
)
_IST = dt.timezone(dt.timedelta(hours=5, minutes=30))


def instruments_url(account: Account) -> str:
    """``endpoints.instruments`` (a full URL, like ``BLITZ_INSTRUMENT_URL``), else the SDK's path on
    ``endpoints.base``, else on the origin of the ``api``/``auth`` endpoint (the SDK's hosts are one)."""
    ep = account.endpoints
    if url := ep.get("instruments"):
        return url
    base = ep.get("base") or _origin(ep.get("api") or ep.get("auth") or DEFAULT_BASE)
    return base.rstrip("/") + INSTRUMENTS_PATH


class BlitzMaster:
    broker = BROKER

    async def download(self, account: Account) -> list[MasterFile]:
        """GET the dump as InstrumentManager.load does: no credentials (the SDK sends none, so the
        master never needs a login); the bytes are kept as served (gzip)."""
        url = instruments_url(account)
        timeout = max(account.timeout_seconds, MIN_TIMEOUT_SECONDS)
        transport = account.options.get("http_transport")
        async with make_client("", timeout=timeout, transport=transport, headers={"Accept": "*/*"}) as client:
            try:
                response = await client.get(url)
            except httpx.HTTPError as exc:
                raise Unavailable(f"instrument master {url}: {type(exc).__name__}", broker=BROKER) from exc
        if response.status_code != 200:
            raise Unavailable(f"instrument master {url}: HTTP {response.status_code}", broker=BROKER)
        return [MasterFile(FILE_NAME, response.content)]

    def parse(self, files: Sequence[MasterFile]) -> Iterator[MasterRow]:
        for file in files:
            skipped: Counter[str] = Counter()
            yield from parse_file(file, skipped)
            report_skipped(file.name, skipped)


FORMAT = BlitzMaster()


def report_skipped(name: str, skipped: Counter[str]) -> None:
    """Skipped rows are never fatal (a new segment must not stop the desk): one warning per file, with
    the count per reason."""
    if skipped:
        reasons = ", ".join(f"{why} x{n}" for why, n in sorted(skipped.items()))
        log.warning("blitz: %s: %d rows skipped (%s)", name, sum(skipped.values()), reasons)


def decode(file: MasterFile) -> list[Any]:
    """The JSON rows of a dump: gzip as served; plain JSON accepted too (a proxy that already inflated
    it, or a saved ``.json``). A ``{"data": [...]}`` envelope is unwrapped like every other reply."""
    raw = file.content
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise MasterFormatError(f"{file.name}: corrupt gzip ({exc})") from None
    try:
        data = loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MasterFormatError(f"{file.name}: not JSON ({exc})") from None
    if isinstance(data, Mapping) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        got = type(data).__name__
        raise MasterFormatError(f"{file.name}: expected a JSON array of instruments, got {got}")
    return data


def parse_file(file: MasterFile, skipped: Counter[str]) -> Iterator[MasterRow]:
    for index, rec in enumerate(decode(file)):
        if not isinstance(rec, Mapping):
            raise MasterFormatError(f"{file.name}: row {index}: expected an object, got {type(rec).__name__}")
        row = parse_row(rec, skipped)
        if row is not None:
            yield row


def _text(rec: Mapping[str, Any], *keys: str) -> str:
    for k in keys:
        v = rec.get(k)
        if v is not None and str(v).strip():
            return str(v).strip().upper()
    return ""


def _whole(value: Any) -> int | None:
    number = to_decimal(value)
    if number is None or number != number.to_integral_value() or number <= 0:
        return None
    return int(number)


def instrument_id_text(value: Any) -> str | None:
    """The long id exactly, as digits: a JSON integer, a digit string, or a whole Decimal (``1.1E+14``
    from a float-minded producer); anything else has no id."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value) if value > 0 else None
    number = to_decimal(value)
    if number is None or number <= 0 or number != number.to_integral_value():
        return None
    return str(int(number))


def parse_expiry(value: Any) -> dt.date | None:
    """The docs write ``"2026-07-28"``. Also read: an ISO datetime (``2026-07-28T15:30:00+05:30``),
    ``28JUL2026`` / ``28-Jul-2026`` / ``28 Jul 2026``, ``20260728``, ``28-07-2026`` / ``28/07/2026``, and
    epoch seconds or milliseconds (read on the IST calendar). Raises ValueError when none fits."""
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        seconds = Decimal(value)
        seconds = seconds / 1000 if seconds > 10**11 else seconds
        return dt.datetime.fromtimestamp(int(seconds), _IST).date()
    text = str(value).strip().upper()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}([T ].*)?", text):
        return dt.date.fromisoformat(text[:10])
    if re.fullmatch(r"\d{8}", text):
        return dt.datetime.strptime(text, "%Y%m%d").date()
    if m := re.fullmatch(r"(\d{1,2})[-/ ]?([A-Z]{3})[-/ ]?(\d{4})", text):
        return dt.date(int(m[3]), _MONTHS.index(m[2]) + 1, int(m[1]))
    if m := re.fullmatch(r"(\d{1,2})[-/](\d{1,2})[-/](\d{4})", text):
        return dt.date(int(m[3]), int(m[2]), int(m[1]))
    if text.isdigit():
        return parse_expiry(int(text))
    raise ValueError(f"unreadable expiry {value!r}")


def underlying_of(name: str, expiry: dt.date | None) -> str:
    """The underlying of a derivative's ``instrumentName`` (``TCS28JUL262060CE`` -> ``TCS``): the text
    before the expiry's DDMONYY token, else before the first date-like token, else the whole name."""
    if expiry is None:
        return name
    token = f"{expiry.day:02d}{_MONTHS[expiry.month - 1]}{expiry.year % 100:02d}"
    at = name.find(token)
    if at > 0:
        return name[:at]
    m = _UNDERLYING_RE.match(name)
    return m["u"] if m else name


def parse_row(rec: Mapping[str, Any], skipped: Counter[str]) -> MasterRow | None:
    """One dump row, or None (counted in ``skipped`` by reason) when we cannot use it."""
    seg = _text(rec, "exchangeSegment", "ExchangeSegment", "segment")
    exchange = EXCHANGE_OF_SEGMENT.get(seg) or _EXTRA_SEGMENTS.get(seg)
    if exchange is None:
        skipped[f"unknown segment {seg or '(none)'}"] += 1
        return None
    iid = instrument_id_text(rec.get("instrumentId", rec.get("InstrumentId")))
    name = _text(rec, "instrumentName", "InstrumentName")
    if iid is None or not name:
        skipped["no instrumentId or instrumentName"] += 1
        return None
    inst_type = _text(rec, "instrumentType", "InstrumentType")
    opt_text = _text(rec, "optionType", "OptionType")
    opt = _OPTION_TYPES.get(opt_text) or _OPTION_TYPES.get(inst_type)
    raw_expiry = rec.get("expiry", rec.get("Expiry"))
    try:
        expiry = parse_expiry(raw_expiry) if raw_expiry not in (None, "", 0) else None
    except (ValueError, IndexError, OverflowError, OSError):
        skipped["unreadable expiry"] += 1
        return None
    strike = to_decimal(rec.get("strike", rec.get("Strike"))) if opt else None
    if opt is not None and (expiry is None or strike is None or strike <= 0):
        skipped["option without expiry or strike"] += 1
        return None
    explicit = _text(rec, "underlying", "symbol", "name")
    inst = Instrument(
        exchange=exchange,
        symbol=explicit or underlying_of(name, expiry),
        expiry=expiry,
        strike=strike,
        option_type=opt,
        lot_size=_whole(rec.get("lotSize", rec.get("LotSize"))),  # absent or 0: none (cash, indices)
        tick_size=(to_decimal(rec.get("tickSize", rec.get("TickSize"))) or None),
    )
    extra = {"exchange_segment": seg, "instrument_id": iid}
    if inst_type:
        extra["instrument_type"] = inst_type
    return MasterRow(inst, token=iid, trading_symbol=name, extra=extra)
