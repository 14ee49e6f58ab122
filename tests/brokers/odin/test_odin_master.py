"""ODIN's scrip master files: v2 (header row + arrays) and v1 (objects), and the simulator serving them.

The format is known from third-party code only (our broker note): v2 columns ``nMarketSegmentId``,
``nToken``, ``sSymbol``, ``nStrikePrice`` (paise), ``sOptionType``, ``ExpiryDate`` (dd-mm-yyyy); v1 keys
``code``, ``sym``, ``ser``, ``inst``, ``expiry``. The fixtures follow those spellings.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from runner.brokers.instruments import InstrumentMaster
from runner.brokers.masters import MasterFile, MasterFormatError, master_format
from runner.brokers.odin.feed_wire import feed_token
from runner.brokers.odin.master import FORMAT, SCRIP_MASTER
from runner.brokers.odin.sim import start
from runner.brokers.odin.wire import scrip_token
from runner.errors import Unavailable
from runner.model import Instrument, OptionType

FIX = Path(__file__).parent / "fixtures"


def _file(fixture: str, name: str) -> MasterFile:
    return MasterFile(name, (FIX / fixture).read_bytes())


def test_registry_names_the_odin_format() -> None:
    assert master_format("odin") is FORMAT
    assert SCRIP_MASTER.endswith("/scripfiles")


def test_v2_strikes_in_paise_expiry_dd_mm_yyyy() -> None:
    rows = {r.token: r for r in FORMAT.parse([_file("scrip_v2_NSE_FO.json", "NSE_FO.json")])}
    fut, ce, pe = rows["35001"], rows["45001"], rows["45002"]
    assert fut.instrument == Instrument(
        "NFO", "NIFTY", dt.date(2026, 2, 24), lot_size=65, tick_size=Decimal("0.1"), freeze_quantity=1820
    )
    assert ce.instrument.strike == Decimal("24500") and ce.instrument.option_type is OptionType.CE
    assert pe.instrument.strike == Decimal("24550.5") and pe.instrument.option_type is OptionType.PE
    assert ce.instrument.tick_size == Decimal("0.05")
    # What the adapter sends: the scrip token and the feed key "{segment}_{token}".
    assert scrip_token(ce) == 45001 and feed_token(ce) == "2_45001"
    assert ce.extra["odin_exchange"] == "NSE_FO"


def test_v1_objects_are_accepted_and_cash_series_kept_apart() -> None:
    rows = list(FORMAT.parse([_file("scrip_v1_NSE_EQ.json", "NSE_EQ.json")]))
    assert [(r.token, r.instrument.key) for r in rows] == [
        ("2885", "NSE RELIANCE"),
        ("2886", "NSE RELIANCE-BE"),
    ]
    assert feed_token(rows[0]) == "1_2885"  # segment id from the file's exchange when the row has none


def test_header_only_and_bad_files() -> None:
    header_only = MasterFile("NSE_FO.json", b'[["nMarketSegmentId","nToken","sSymbol"]]')
    assert list(FORMAT.parse([header_only])) == []
    with pytest.raises(MasterFormatError, match=r"NSE_FO\.json"):
        list(FORMAT.parse([MasterFile("NSE_FO.json", b"<html>")]))
    with pytest.raises(MasterFormatError, match=r"NSE_FO\.json.*token"):
        list(FORMAT.parse([MasterFile("NSE_FO.json", b'[["a","b"],[1,2]]')]))
    bad_expiry = b'[["nToken","sSymbol","ExpiryDate"],[1,"NIFTY","2026/02/31"]]'
    with pytest.raises(MasterFormatError, match="row 2"):
        list(FORMAT.parse([MasterFile("NSE_FO.json", bad_expiry)]))


async def test_download_from_the_sim_agrees_with_its_master() -> None:
    async with start() as sim:
        account, _ = sim.account_env("masters")
        assert account.endpoints["scrip_master"] == f"{sim.url}/scripfiles"  # in `runner sim`'s entry
        files = await FORMAT.download(account)
        parsed = InstrumentMaster(FORMAT.parse(files))
        expected = sim.master
    # the default exchanges: NSE and BSE, as the sim trades both (and Kotak's default downloads both)
    assert [f.name for f in files] == ["NSE_EQ.json", "NSE_FO.json", "BSE_EQ.json", "BSE_FO.json"]
    assert sorted(r.instrument.key for r in parsed) == sorted(r.instrument.key for r in expected)
    for row in expected:
        got = parsed.resolve(row.instrument)
        assert got.token == row.token
        assert (got.instrument.lot_size, got.instrument.strike) == (
            row.instrument.lot_size,
            row.instrument.strike,
        )


async def test_download_an_exchange_the_host_lacks_is_unavailable() -> None:
    async with start() as sim:
        account, _ = sim.account_env("masters", options={"master_exchanges": "MCX_FO"})
        with pytest.raises(Unavailable, match="403"):
            await FORMAT.download(account)
