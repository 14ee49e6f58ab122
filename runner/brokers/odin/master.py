"""ODIN's scrip master: one JSON file per exchange at a public host (not the API host).

Sources: our broker note (masters_and_quotes.md); the format is known from third-party code only, so we
are liberal in what we accept:
* v2 (``{base}/v2/{EXCHANGE}.json``, what we download): an array of arrays whose first row is the header;
  ``nToken``, ``sSymbol``, ``nMarketSegmentId``, ``nStrikePrice`` in paise, ``sOptionType``,
  ``ExpiryDate`` as dd-mm-yyyy. Lot, tick, freeze and trading-symbol columns are unverified: we read the
  first present of a few spellings (ticks in paise, like every ``n`` price column);
* v1 (``{base}/{EXCHANGE}.json``): an array of objects (``code`` = token, ``sym``, ``ser``, ``inst``,
  ``expiry``, ...) is parsed too, so a v1 file given as a local override works.
Strikes paise -> rupees exactly (Decimal). The exchange of a row is the file's (``NSE_FO.json`` -> NFO).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from runner.brokers.instruments import MasterRow
from runner.brokers.masters import MasterFile, MasterFormatError
from runner.brokers.odin.feed_wire import FEED_SEGMENT_ID
from runner.brokers.odin.wire import BROKER, canonical_exchange
from runner.errors import Unavailable
from runner.model import Instrument, OptionType

if TYPE_CHECKING:
    from runner.accounts import Account

SCRIP_MASTER = "https://odinscripmaster.s3.ap-south-1.amazonaws.com/scripfiles"  # endpoints.scrip_master
DEFAULT_EXCHANGES = ("NSE_EQ", "NSE_FO", "BSE_EQ", "BSE_FO")  # as Kotak's; option `master_exchanges`

# Our names for each field -> the spellings accepted (v2 header names first, then v1 keys).
FIELDS: dict[str, tuple[str, ...]] = {
    "token": ("nToken", "code", "token"),
    "symbol": ("sSymbol", "sym", "symbol"),
    "segment": ("nMarketSegmentId", "seg", "segment"),
    "strike": ("nStrikePrice", "strike", "strikeprice"),
    "option_type": ("sOptionType", "otype", "opt", "option_type"),
    "expiry": ("ExpiryDate", "sExpiryDate", "expiry"),
    "series": ("sSeries", "ser", "series"),
    "instrument": ("sInstrumentName", "inst", "instrument"),
    "trading_symbol": ("sTradingSymbol", "sSecurityDesc", "trdsym", "tsym"),
    "lot": ("nRegularLot", "nMarketLot", "nLotSize", "lot", "lotsize"),
    "tick": ("nPriceTick", "nTickSize", "tick", "ticksize"),
    "freeze": ("nFreezeQty", "freezeqty", "freeze"),
}
_OPTION = {"CE": OptionType.CE, "PE": OptionType.PE, "CA": OptionType.CE, "PA": OptionType.PE}
_TEXT_PRICE = ("tick", "ticksize")  # v1 keys that (unverified) hold rupees rather than paise


def exchange_of_file(name: str) -> str:
    """``NSE_FO.json`` (or a URL ending in it) -> ``NSE_FO``."""
    return name.rsplit("/", 1)[-1].split(".", 1)[0].upper()


def paise(raw: Any) -> Decimal | None:
    """Paise -> rupees, exactly; zero and negatives (``-1`` on equities) -> None."""
    if raw is None or raw == "":
        return None
    try:
        value = Decimal(str(raw).strip()) / 100
    except InvalidOperation:
        raise ValueError(f"not a number: {raw!r}") from None
    return value if value > 0 else None


def expiry_of(raw: Any) -> dt.date | None:
    text = str(raw or "").strip()
    if not text or text in ("0", "-1"):
        return None
    for fmt in ("%d-%m-%Y", "%d%b%Y", "%d-%b-%Y", "%Y-%m-%d", "%d/%m/%Y"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"expiry {text!r} is not dd-mm-yyyy")


def _int(raw: Any) -> int | None:
    text = str(raw if raw is not None else "").strip()
    if not text:
        return None
    try:
        value = int(Decimal(text))
    except InvalidOperation:
        return None
    return value if value > 0 else None


class OdinMasterFormat:
    broker = BROKER

    async def download(self, account: Account) -> list[MasterFile]:
        """GET ``{scrip_master}/v2/{EXCHANGE}.json`` for each exchange the account needs (no credentials)."""
        import httpx

        from runner.brokers.http import make_client

        base = account.endpoints.get("scrip_master", SCRIP_MASTER).rstrip("/")
        wanted = account.options.get("master_exchanges") or DEFAULT_EXCHANGES
        exchanges = [e.strip().upper() for e in (wanted.split(",") if isinstance(wanted, str) else wanted)]
        files = []
        async with make_client(
            base, timeout=account.timeout_seconds, transport=account.options.get("http_transport")
        ) as client:
            for exchange in exchanges:
                url = f"{base}/v2/{exchange}.json"
                try:
                    reply = await client.get(url)
                except httpx.HTTPError as exc:
                    raise Unavailable(f"scrip master {url}: {type(exc).__name__}", broker=BROKER) from None
                if reply.status_code != 200:
                    raise Unavailable(
                        f"scrip master {url}: HTTP {reply.status_code}",
                        code=str(reply.status_code),
                        broker=BROKER,
                    )
                files.append(MasterFile(f"{exchange}.json", reply.content))
        return files

    def parse(self, files: Sequence[MasterFile]) -> Iterator[MasterRow]:
        for file in files:
            yield from parse_json(file)


def _records(file: MasterFile) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """(row number, record) for v2 (header row + arrays) and v1 (objects) alike."""
    from runner.wirejson import loads

    try:
        data = loads(file.content) if file.content.strip() else []
    except ValueError as exc:
        raise MasterFormatError(f"{file.name}: not JSON ({exc})") from None
    if not isinstance(data, list):
        raise MasterFormatError(f"{file.name}: expected a JSON array")
    if data and isinstance(data[0], list):
        header = [str(h).strip() for h in data[0]]
        for n, rec in enumerate(data[1:], start=2):
            if not isinstance(rec, list):
                raise MasterFormatError(f"{file.name}: row {n} is not an array")
            yield n, dict(zip(header, rec, strict=False))
    else:
        for n, rec in enumerate(data, start=1):
            if not isinstance(rec, dict):
                raise MasterFormatError(f"{file.name}: row {n} is not an object")
            yield n, rec


def parse_json(file: MasterFile) -> Iterator[MasterRow]:
    odin_exchange = exchange_of_file(file.name)
    exchange = canonical_exchange(odin_exchange)
    keys: dict[str, str | None] | None = None
    for n, rec in _records(file):
        if keys is None:  # resolve spellings once, from the first record
            keys = {f: next((k for k in names if k in rec), None) for f, names in FIELDS.items()}
            if keys["token"] is None or keys["symbol"] is None:
                raise MasterFormatError(f"{file.name}: no token/symbol column (nToken, sSymbol or code, sym)")

        def get(field: str, rec: Mapping[str, Any] = rec, keys: dict[str, str | None] = keys) -> Any:
            key = keys[field]
            return rec.get(key) if key is not None else None

        try:
            token = str(get("token")).strip()
            symbol = str(get("symbol") or "").strip().upper()
            if not token or token == "None" or not symbol:
                raise ValueError("row without token or symbol")
            expiry = expiry_of(get("expiry"))
            opt = _OPTION.get(str(get("option_type") or "").strip().upper()) if expiry else None
            strike = paise(get("strike")) if opt else None
            tick_key = keys["tick"] if keys else None
            raw_tick = get("tick")
            tick = (
                Decimal(str(raw_tick))
                if tick_key in _TEXT_PRICE and raw_tick not in (None, "")
                else paise(raw_tick)
            )
            lot, freeze = _int(get("lot")), _int(get("freeze"))
        except (ValueError, ArithmeticError) as exc:
            raise MasterFormatError(f"{file.name}: row {n}: {exc}") from None
        extra = {"odin_exchange": odin_exchange}
        segment = get("segment")
        extra["market_segment_id"] = (
            str(segment) if segment not in (None, "") else str(FEED_SEGMENT_ID.get(odin_exchange, ""))
        )
        series = str(get("series") or "").strip()
        if series:
            extra["series"] = series
            if expiry is None and series.upper() != "EQ":
                symbol = f"{symbol}-{series.upper()}"  # other cash series share the name: keep them apart
        trading = str(get("trading_symbol") or "").strip() or None
        yield MasterRow(
            Instrument(exchange, symbol, expiry, strike, opt, lot, tick, freeze),
            token,
            trading,
            {k: v for k, v in extra.items() if v},
        )


FORMAT = OdinMasterFormat()
