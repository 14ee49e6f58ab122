"""Kotak Neo's own instrument master: per-segment CSV files listed by the file-paths endpoint.

Sources: Kotak-Neo/Kotak-neo-api-v2 (``neo_api_client/api/scrip_master_api.py``, ``scrip_search.py``, sample
``neo_api_client/api/nse_cm.csv``, ``docs/Scrip_Master.md``); our broker note (masters_and_quotes.md) for
the v3 path ``script-details/1.0/masterscrip/file-paths`` with ``Authorization: <consumer key>``.

The traps, and the rule used for each (we are liberal in what we accept):
* header names carry trailing spaces and one ends in ``;`` (``dStrikePrice;``): names are stripped of
  whitespace and of trailing ``;`` before lookup;
* expiries are epoch seconds read as the official SDK reads them (PyPI ``kotakneoapi`` 3.0.9,
  ``services/scrip_search.py``, and its unit tests): NSE_FO (and CDE_FO) is shifted, add 315511200 s
  (1456410600 -> 2026-02-24, the date its trading symbol names; the older "+10 calendar years" lands a
  day late across an extra leap day); BSE_FO and MCX_FO are plain Unix seconds (1778803199 = 2026-05-14,
  a real CRUDEOIL row). The day is always the UTC date (the SDK's ``pd.to_datetime(unit='s')`` has no
  zone): an IST day is a day late for MCX's 23:59:59 UTC stamps. Older official sources differ for
  BSE_FO (Kotak-neo-api-v2 shifted it; Kotak-Neo on kotak-neo-api#24: "-10 years except for MCX"): the
  newest SDK wins; tests/brokers/kotak_neo/test_kotak_master_expiry.py cites each;
* strikes are scaled by 100, with or without decimals (the SDK compares them with a searched strike x100);
* ticks are integers in units of 10**-lPrecision (the sample: ``dTickSize`` 5 with ``lPrecision`` 2 is
  0.05); a tick already written with a decimal point is taken as rupees; no precision -> 2;
* ``pOptionType`` is CE/PE for options and XX (or blank) for futures; equities have no expiry (-1);
* a header-only file yields zero rows, not an error (judging an empty file is the sync layer's job).
Stock-option expiry fields were reported wrong (Kotak-neo-api-v2#67: users parsed ``pScripRefKey``), but
the reported value (INFY 1467297000) is the same shifted epoch and reads right (2026-06-30); no
official source documents a ``pScripRefKey`` fallback, so none is made. We read ``lExpiryDate`` and fall
back to ``pExpiryDate`` (the column the SDK converts).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator, Sequence
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from runner.brokers.instruments import MasterRow
from runner.brokers.kotak_neo.wire import BROKER, EXCHANGE_OF_SEGMENT
from runner.brokers.masters import MasterFile, MasterFormatError
from runner.errors import Rejected, Unavailable
from runner.model import Instrument, OptionType

if TYPE_CHECKING:
    from runner.accounts import Account

PATH_MASTER_FILES = "/script-details/1.0/masterscrip/file-paths"
PATH_MASTER_FILES_LEGACY = "/apim/files/2.0/masterscrip/v1/file-paths"  # older SDKs (settings.py)
# Host of the file-paths call when the account names none (third-party clients call it on the session's
# host, e.g. cis.kotaksecurities.com; unverified: set `endpoints.master` to be sure).
MASTER_HOST = "https://cis.kotaksecurities.com"
DEFAULT_SEGMENTS = ("nse_cm", "nse_fo", "bse_cm", "bse_fo")  # option `master_segments` overrides

IST = dt.timezone(dt.timedelta(hours=5, minutes=30), "IST")
EPOCH_1980_OFFSET = 315511200  # the official SDK's shift of NSE_FO expiries (about 10 years), seconds
# Not shifted (the SDK's "non-shifted expiry conversion path"): plain Unix seconds ("mcx": the SDK's name)
NO_OFFSET_SEGMENTS = frozenset({"mcx_fo", "mcx", "bse_fo"})

# The official sample's header (nse_cm.csv), irregular spellings kept: the simulator writes it verbatim.
HEADER = (
    "pSymbol,pGroup,pExchSeg,pInstType,pSymbolName,pTrdSymbol,pOptionType,pScripRefKey,pISIN,pAssetCode,"
    "pSubGroup,pCombinedSymbol,pDesc,pAmcCode,pContractId,dTickSize ,lLotSize,lExpiryDate ,lMultiplier ,"
    "lPrecision,dStrikePrice;,pExchange,pInstName,pExpiryDate,pIssueDate,pMaturityDate,pListingDate,"
    "pNoDelStartDate,pNoDelEndDate,pBookClsStartDate,pBookClsEndDate,pRecordDate,pCreditRating,"
    "pReAdminDate,pExpulsionDate,pLocalUpdateTime,pDeliveryUnits,pPriceUnits,pLastTradingDate,"
    "pTenderPeridEndDate,pTenderPeridStartDate,pSellVarMargin,pBuyVarMargin,pInstrumentInfo,pRemarksText,"
    "pSegment,pNav,pNavDate,pMfAmt,pSipSecurity,pFaceValue,pTrdUnits,pExerciseStartDate,pExerciseEndDate,"
    "pElmMargin,pVarMargin,pTotProposedLimitValue,pScripBasePrice,pSettlementType,pCurrectionTime,"
    "iPermittedToTrade,iBoardLotQty ,iMaxOrderSize ,iLotSize,dOpenInterest ,dHighPriceRange ,"
    "dLowPriceRange ,dPriceNum   ,dGenDen,dGenNum,dPriceQuatation ,dIssuerate ,dPriceDen,dWarningQty ,"
    "dIssueCapital ,dExposureMargin ,dMinRedemptionQty ,lFreezeQty"
)
REQUIRED = ("pSymbol", "pSymbolName", "pTrdSymbol")


def normalise_header(name: str) -> str:
    """``'dStrikePrice;'`` -> ``'dStrikePrice'``, ``'dPriceNum   '`` -> ``'dPriceNum'``."""
    return name.strip().rstrip(";").strip()


def segment_of_file(name: str) -> str:
    """``https://.../nse_fo.csv`` or ``nse_cm-v1.csv`` -> the segment code (``nse_fo``, ``nse_cm``)."""
    base = urlsplit(name).path.rsplit("/", 1)[-1]
    return base.split(".", 1)[0].split("-", 1)[0].lower()


def exchange_of_segment(segment: str) -> str:
    """Kotak segment -> our exchange, the same table the wire uses (unknown segments upper-cased)."""
    return EXCHANGE_OF_SEGMENT.get(segment.lower(), segment.upper())


def expiry_of(raw: str, segment: str) -> dt.date | None:
    """The contract's expiry day from Kotak's epoch seconds (see the module docstring)."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        seconds = int(Decimal(raw))
    except InvalidOperation:
        for fmt in ("%d%b%Y", "%Y-%m-%d", "%d-%m-%Y"):  # liberal: a date written as text
            try:
                return dt.datetime.strptime(raw, fmt).date()
            except ValueError:
                continue
        return None
    if seconds <= 0:
        return None
    if segment not in NO_OFFSET_SEGMENTS:
        seconds += EPOCH_1980_OFFSET
    return dt.datetime.fromtimestamp(seconds, dt.UTC).date()  # the UTC day, as the SDK takes it


def _plain(value: Decimal) -> Decimal:
    """24500.00000000 -> 24500, 0.0500 -> 0.05 (same value, readable digits, no exponent)."""
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value.normalize()


def strike_of(raw: str) -> Decimal | None:
    """Strikes are x100 whatever their spelling (``2450000`` and ``2450000.000000`` are 24500): the SDK
    compares ``dStrikePrice;`` with the searched strike x100. Equities carry -1 -> None."""
    value = Decimal(raw) / 100
    return _plain(value) if value > 0 else None


def scaled(raw: str, places: int) -> Decimal:
    """A tick: an integer in units of 10**-places, exactly (5 at 2 places -> 0.05); a value with a
    fractional part (``0.05``) is taken as rupees already (liberal: some files are not scaled)."""
    value = Decimal(raw)
    if value != value.to_integral_value():
        return _plain(value)
    return _plain(value / (10**places)) if places else value


def _int(raw: str) -> int | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        try:
            value = int(Decimal(raw))
        except InvalidOperation:
            return None
    return value if value > 0 else None


class KotakMasterFormat:
    broker = BROKER

    async def download(self, account: Account) -> list[MasterFile]:
        """GET the file list with the consumer key (no session), then GET each wanted segment's CSV."""
        from runner.brokers.http import make_client

        base = (
            account.endpoints.get("master")
            or account.endpoints.get("trade")
            or account.endpoints.get("login")
            or MASTER_HOST
        )
        path = account.endpoints.get("master_path", PATH_MASTER_FILES)
        key = _credential(account, "access_token", "consumer_key")
        wanted = _segments(account.options.get("master_segments"))
        transport = account.options.get("http_transport")
        async with make_client(base, timeout=account.timeout_seconds, transport=transport) as client:
            reply = await _get(client, path, {"Authorization": key, "Accept": "application/json"})
            from runner.wirejson import loads

            try:
                urls = file_urls(loads(reply), str(client.base_url))
            except ValueError as exc:
                raise MasterFormatError(f"file-paths reply: {exc}") from None
            files = []
            for url in urls:
                if segment_of_file(url) in wanted:
                    # The files sit on a public host: the SDK fetches them with no header at all.
                    content = await _get(client, url, {})
                    files.append(MasterFile(urlsplit(url).path.rsplit("/", 1)[-1], content))
        return files

    def parse(self, files: Sequence[MasterFile]) -> Iterator[MasterRow]:
        for file in files:
            yield from parse_csv(file)


def file_urls(reply: Any, base: str) -> list[str]:
    """``data.filesPaths`` of the v3 reply; the older reply (and the docs' sample) has ``filesPaths`` at
    the top. Relative entries are joined to ``baseFolder`` (else the host asked)."""
    body = reply.get("data", reply) if isinstance(reply, dict) else None
    if isinstance(body, dict) and "filesPaths" not in body and isinstance(reply, dict):
        body = reply
    paths = body.get("filesPaths") if isinstance(body, dict) else None
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ValueError("no filesPaths list")
    folder = str(body.get("baseFolder") or base) if isinstance(body, dict) else base
    return [p if urlsplit(p).scheme else urljoin(folder.rstrip("/") + "/", p.lstrip("/")) for p in paths]


def multiplier_of(mult: str, gen_num: str, gen_den: str, prc_num: str, prc_den: str) -> Decimal | None:
    """lMultiplier x dGenNum/dGenDen x dPriceNum/dPriceDen, as the positions' NF; a blank, 0 or negative
    part (equities carry lMultiplier -1) counts as 1. None when the product is 1: nothing to apply."""

    def part(raw: str) -> Decimal:
        value = Decimal(raw) if raw else Decimal(1)
        return value if value > 0 else Decimal(1)

    value = part(mult) * part(gen_num) / part(gen_den) * part(prc_num) / part(prc_den)
    return None if value == 1 else _plain(value)


def parse_csv(file: MasterFile) -> Iterator[MasterRow]:
    """Rows of one segment file. Column indexes, no per-row dict: ~90,000 F&O rows parse in well under 1 s."""
    file_segment = segment_of_file(file.name)
    text = file.content.decode("utf-8-sig", errors="replace")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        return  # an empty file: zero rows; the sync layer decides whether that is an anomaly
    col = {normalise_header(h): i for i, h in enumerate(header)}
    missing = [c for c in REQUIRED if c not in col]
    if missing:
        raise MasterFormatError(f"{file.name}: missing column(s) {', '.join(missing)} in the header")
    i_tok, i_name, i_trd = col["pSymbol"], col["pSymbolName"], col["pTrdSymbol"]
    get = col.get
    i_seg, i_group, i_opt = get("pExchSeg"), get("pGroup"), get("pOptionType")
    i_tick, i_prec, i_strike = get("dTickSize"), get("lPrecision"), get("dStrikePrice")
    i_exp, i_pexp = get("lExpiryDate"), get("pExpiryDate")
    # The contract's price multiplier, as positions' NF (multiplier x genNum/genDen x prcNum/prcDen)
    i_mult = tuple(get(c) for c in ("lMultiplier", "dGenNum", "dGenDen", "dPriceNum", "dPriceDen"))
    multipliers: dict[tuple[str, ...], Decimal | None] = {}
    i_lot, i_ilot, i_board, i_freeze = (
        get("lLotSize"),
        get("iLotSize"),
        get("iBoardLotQty"),
        get("lFreezeQty"),
    )
    width = len(header)
    # Caches: strikes, ticks and expiries repeat across thousands of rows; a Decimal is built once each.
    strikes: dict[str, Decimal | None] = {}
    ticks: dict[tuple[str, str], Decimal | None] = {}
    expiries: dict[tuple[str, str], dt.date | None] = {}
    exchanges: dict[str, str] = {}
    ints: dict[str, int | None] = {}
    # One extra dict per segment, shared by its rows (read-only, like the rest of a MasterRow): 90,000
    # copies of {"pExchSeg": "nse_fo"} would cost ~20 MB and time.
    extras: dict[str, dict[str, str]] = {}
    option_types = {"CE": OptionType.CE, "PE": OptionType.PE}
    for line_no, rec in enumerate(reader, start=2):
        if not rec or (len(rec) == 1 and not rec[0].strip()):
            continue
        if len(rec) < width:
            rec = rec + [""] * (width - len(rec))  # liberal: a short row lacks only trailing fields
        token = rec[i_tok].strip()
        name = rec[i_name].strip().upper()
        if not token or not name:
            raise MasterFormatError(f"{file.name}:{line_no}: row without pSymbol or pSymbolName")
        seg = rec[i_seg].strip().lower() if i_seg is not None else ""
        seg = seg or file_segment
        exchange = exchanges.get(seg)
        if exchange is None:
            exchange = exchanges[seg] = exchange_of_segment(seg)
        trd = rec[i_trd].strip()
        try:
            expiry: dt.date | None = None
            strike: Decimal | None = None
            opt: OptionType | None = None
            raw_exp = rec[i_exp].strip() if i_exp is not None else ""
            if (not raw_exp or raw_exp.startswith("-")) and i_pexp is not None:
                raw_exp = rec[i_pexp].strip()
            if raw_exp and not raw_exp.startswith("-") and raw_exp != "0":
                key = (raw_exp, seg)
                if key in expiries:
                    expiry = expiries[key]
                else:
                    expiry = expiries[key] = expiry_of(raw_exp, seg)
            if expiry is not None:
                opt = (
                    option_types.get(rec[i_opt].strip().upper()) if i_opt is not None else None
                )  # XX: future
                if opt is not None and i_strike is not None:
                    raw_strike = rec[i_strike].strip()
                    if raw_strike in strikes:
                        strike = strikes[raw_strike]
                    else:
                        strike = strikes[raw_strike] = strike_of(raw_strike) if raw_strike else None
                symbol = name
            else:
                # Cash: several series share a name (NHIT-IV, NHIT-BL): the EQ series is the plain name,
                # the others keep their trading symbol so each stays addressable.
                group = rec[i_group].strip().upper() if i_group is not None else ""
                plain = group in ("", "EQ") or trd.upper() in (name, name + "-EQ")
                symbol = name if plain else trd.upper()
            tick: Decimal | None = None
            if i_tick is not None:
                raw_tick = rec[i_tick].strip()
                prec = rec[i_prec].strip() if i_prec is not None else ""
                tkey = (raw_tick, prec)
                if tkey in ticks:
                    tick = ticks[tkey]
                else:
                    places = int(prec) if prec.lstrip("-").isdigit() and int(prec) >= 0 else 2
                    value = scaled(raw_tick, places) if raw_tick else None
                    tick = ticks[tkey] = value if value is not None and value > 0 else None
            lot = None
            for i in (i_lot, i_ilot, i_board):
                if i is not None:
                    raw_lot = rec[i]
                    lot = ints[raw_lot] if raw_lot in ints else ints.setdefault(raw_lot, _int(raw_lot))
                    if lot is not None:
                        break
            freeze = None
            if i_freeze is not None:
                raw_fr = rec[i_freeze]
                freeze = ints[raw_fr] if raw_fr in ints else ints.setdefault(raw_fr, _int(raw_fr))
            mkey = tuple(rec[i].strip() if i is not None else "" for i in i_mult)
            if mkey in multipliers:
                multiplier = multipliers[mkey]
            else:
                multiplier = multipliers[mkey] = multiplier_of(*mkey)
        except (ValueError, ArithmeticError) as exc:
            raise MasterFormatError(f"{file.name}:{line_no}: {exc}") from None
        yield MasterRow(
            Instrument(exchange, symbol, expiry, strike, opt, lot, tick, freeze, multiplier),
            token,
            trd or None,
            extras.get(seg) or extras.setdefault(seg, {"pExchSeg": seg}),
        )


def _credential(account: Account, *keys: str) -> str:
    for key in keys:
        if key in account.credentials:
            return account.secret(key).reveal()
    raise Rejected(
        f"account {account.name!r} has no credential {keys[-1]!r} for the scrip master", broker=BROKER
    )


def _segments(option: Any) -> frozenset[str]:
    if option is None:
        return frozenset(DEFAULT_SEGMENTS)
    items = option.split(",") if isinstance(option, str) else list(option)
    return frozenset(str(s).strip().lower() for s in items if str(s).strip())


async def _get(client: Any, url: str, headers: dict[str, str]) -> bytes:
    import httpx

    try:
        reply = await client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        raise Unavailable(f"scrip master {url}: {type(exc).__name__}", broker=BROKER) from None
    if reply.status_code in (401, 403):
        raise Rejected(
            f"scrip master {url}: HTTP {reply.status_code} (consumer key refused)",
            code=str(reply.status_code),
            broker=BROKER,
        )
    if reply.status_code != 200:
        raise Unavailable(
            f"scrip master {url}: HTTP {reply.status_code}", code=str(reply.status_code), broker=BROKER
        )
    content: bytes = reply.content
    return content


FORMAT = KotakMasterFormat()
