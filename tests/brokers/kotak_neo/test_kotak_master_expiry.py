"""Kotak's expiry epochs per segment, verified against official sources (rows in the official CSV format).

Sources, newest first (where they differ the newest official SDK wins):
* PyPI ``kotakneoapi`` 3.0.9, "Official Python SDK for Kotak Neo" (repository Kotak-Neo/kotak-neo-python),
  ``neo_api_client/services/scrip_search.py``: ``nse_fo`` (and ``cde_fo``) ``pExpiryDate`` is Unix seconds
  + 315511200, the day in UTC (``pd.to_datetime(unit='s')``, no zone; the older ``DateOffset(years=10)``
  is commented out); ``mcx_fo`` and ``bse_fo`` take "a different (non-shifted) expiry conversion path"
  (its ``tests/unit/test_scrip_search.py``): plain Unix seconds, the UTC day. Its test rows are used here.
* Older: Kotak-Neo/Kotak-neo-api-v2 ``scrip_search.py`` shifted every ``*fo`` segment but MCX by 10 years,
  and Kotak-Neo on kotak-neo-api#24 (2023): "all the expiry dates are -10 years except for MCX".
* Real row values: Kotak-neo-api-v2#67 (CRUDEOIL option ``lexpirydate`` 1778803199 = 2026-05-14; INFY stock
  option 1467297000, ``pScripRefKey`` INFY30JUN26660.00PE = 2026-06-30); kotak-neo-api#102 (the SDK's own
  reply: ``lExpiryDate`` 1386426600, ``pTrdSymbol`` NIFTY23D0720100CE = 2023-12-07); #44 (1456410600 is
  2026-02-24 by its symbol).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from runner.brokers.kotak_neo.master import FORMAT, HEADER, expiry_of
from runner.brokers.kotak_neo.sim_master import epoch_of
from runner.brokers.masters import MasterFile
from runner.model import Instrument, OptionType

COLUMNS = HEADER.split(",")


def _csv(name: str, *rows: dict[str, str]) -> MasterFile:
    """A segment file in the official format: the official header verbatim, the named fields set."""
    lines = [HEADER]
    for row in rows:
        by_name = {c.strip().rstrip(";").strip(): c for c in COLUMNS}
        values = {by_name[k.rstrip(";")]: v for k, v in row.items()}
        lines.append(",".join(values.get(c, "") for c in COLUMNS))
    return MasterFile(name, ("\n".join(lines) + "\n").encode())


CRUDEOIL_CE = {
    "pSymbol": "456789", "pGroup": "XX", "pExchSeg": "mcx_fo", "pInstType": "OPTFUT",
    "pSymbolName": "CRUDEOIL", "pTrdSymbol": "CRUDEOIL26MAY5500CE", "pOptionType": "CE",
    "pScripRefKey": "CRUDEOIL26MAY5500CE", "dTickSize": "10", "lLotSize": "100",
    "lExpiryDate": "1778803199", "lPrecision": "2", "dStrikePrice;": "550000", "pExchange": "MCX",
    "pInstName": "OPTFUT", "pExpiryDate": "1778803199",
}


def test_mcx_expiry_is_plain_unix_seconds_read_as_the_utc_day() -> None:
    """1778803199 is 2026-05-14 23:59:59 UTC, already 05-15 in IST: the official SDK takes the UTC day."""
    assert expiry_of("1778803199", "mcx_fo") == dt.date(2026, 5, 14)
    assert expiry_of("1778803199", "mcx") == dt.date(2026, 5, 14)  # the SDK's own name of the segment
    (row,) = FORMAT.parse([_csv("mcx_fo.csv", CRUDEOIL_CE)])
    assert row.instrument == Instrument(
        "MCX", "CRUDEOIL", dt.date(2026, 5, 14), Decimal(5500), OptionType.CE, 100, Decimal("0.1")
    )


SDK_ROWS = (  # kotakneoapi 3.0.9 tests/unit/test_scrip_search.py, verbatim
    "pSymbol,pTrdSymbol,pExchSeg,pSymbolName,pOptionType,dStrikePrice;,pExpiryDate,pInstType\n"
    "1,NIFTY24JUN22000CE,nse_fo,NIFTY,CE,2200000,1403222400,OPTIDX\n"
)
SDK_MCX = "1,GOLD24JUN,mcx_fo,GOLD,XX,0,1403222400,FUTCOM\n"
SDK_BSE = "1,SENSEX24JUN,bse_fo,SENSEX,XX,0,1403222400,FUTIDX\n"


def test_the_official_sdks_rows_read_as_it_reads_them() -> None:
    """nse_fo: 1403222400 + 315511200 s = 2024-06-18 18:00 UTC -> 18Jun2024 (the SDK's own test says so;
    an IST day would be the 19th); mcx_fo and bse_fo: not shifted, 2014-06-20."""
    header = SDK_ROWS.splitlines()[0] + "\n"
    (nifty,) = FORMAT.parse([MasterFile("NSE_FO.csv", SDK_ROWS.encode())])
    (gold,) = FORMAT.parse([MasterFile("MCX_FO.csv", (header + SDK_MCX).encode())])
    (sensex,) = FORMAT.parse([MasterFile("BSE_FO.csv", (header + SDK_BSE).encode())])
    assert nifty.instrument.expiry == dt.date(2024, 6, 18) and nifty.instrument.strike == Decimal(22000)
    assert (gold.instrument.exchange, gold.instrument.expiry) == ("MCX", dt.date(2014, 6, 20))
    assert (sensex.instrument.exchange, sensex.instrument.expiry) == ("BFO", dt.date(2014, 6, 20))


def test_bse_fo_is_plain_unix_seconds_not_nse_fos_shifted_epoch() -> None:
    raw = str(int(dt.datetime(2026, 3, 5, 10, 0, tzinfo=dt.UTC).timestamp()))  # SENSEX, Thu 2026-03-05
    assert expiry_of(raw, "bse_fo") == dt.date(2026, 3, 5)
    assert expiry_of(raw, "nse_fo") == dt.date(2036, 3, 4)  # what the shift would make of it
    sensex = {
        "pSymbol": "1140123", "pGroup": "XX", "pExchSeg": "bse_fo", "pInstType": "OPTIDX",
        "pSymbolName": "SENSEX", "pTrdSymbol": "SENSEX2630581000CE", "pOptionType": "CE",
        "lExpiryDate": raw, "dStrikePrice;": "8100000", "pExpiryDate": raw,
    }
    (row,) = FORMAT.parse([_csv("bse_fo.csv", sensex)])
    assert (row.instrument.exchange, row.instrument.expiry) == ("BFO", dt.date(2026, 3, 5))


def test_official_rows_agree_with_the_dates_in_their_symbols() -> None:
    """The SDK's reply (#102) and a stock option (#67): the 1980-based epoch gives the symbol's date, so a
    stock option needs no pScripRefKey fallback (its field is the same 10-years-early epoch)."""
    nifty = {"pSymbol": "43148", "pExchSeg": "nse_fo", "pInstType": "OPTIDX", "pSymbolName": "NIFTY",
             "pTrdSymbol": "NIFTY23D0720100CE", "pOptionType": "CE", "pScripRefKey": "NIFTY23D0720100CE",
             "dTickSize": "5", "lLotSize": "50", "lExpiryDate": "1386426600", "lPrecision": "2",
             "dStrikePrice;": "2010000.0", "pExchange": "NSE", "pInstName": "OPTIDX"}
    infy = {"pSymbol": "99001", "pExchSeg": "nse_fo", "pInstType": "OPTSTK", "pSymbolName": "INFY",
            "pTrdSymbol": "INFY26JUN660PE", "pOptionType": "PE", "pScripRefKey": "INFY30JUN26660.00PE",
            "lExpiryDate": "1467297000", "dStrikePrice;": "66000", "pExpiryDate": "1467297000"}
    rows = {r.token: r.instrument for r in FORMAT.parse([_csv("nse_fo.csv", nifty, infy)])}
    assert rows["43148"].expiry == dt.date(2023, 12, 7) and rows["43148"].strike == Decimal(20100)
    assert rows["99001"].expiry == dt.date(2026, 6, 30) and rows["99001"].strike == Decimal(660)


def test_the_simulator_writes_mcx_epochs_as_the_real_file_does() -> None:
    assert epoch_of(dt.date(2026, 5, 14), "mcx_fo") == 1778803199
    assert epoch_of(dt.date(2026, 2, 24), "nse_fo") == 1456410600  # the real row's raw value (#44)
    for segment in ("nse_fo", "bse_fo", "mcx_fo"):
        assert expiry_of(str(epoch_of(dt.date(2026, 2, 24), segment)), segment) == dt.date(2026, 2, 24)
