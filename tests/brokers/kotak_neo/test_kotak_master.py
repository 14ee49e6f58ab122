"""Kotak Neo's own scrip master: parser traps on fixtures in the real format, download from the simulator.

Fixtures: ``master_nse_cm.csv`` is the header and first three rows of the official sample
Kotak-Neo/Kotak-neo-api-v2 ``neo_api_client/api/nse_cm.csv`` verbatim (irregular header names included);
``master_nse_fo.csv`` uses the same header with F&O rows written per our broker note (1980-based expiry
epoch 1456410600 = 2026-02-24, strikes x100, ``XX`` for futures).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from runner.brokers.instruments import InstrumentMaster
from runner.brokers.kotak_neo.master import (
    FORMAT,
    HEADER,
    PATH_MASTER_FILES,
    expiry_of,
    file_urls,
    normalise_header,
)
from runner.brokers.kotak_neo.sim import account_for, default_master, start
from runner.brokers.masters import MasterFile, MasterFormatError, master_format
from runner.errors import Rejected
from runner.model import Instrument, OptionType

FIX = Path(__file__).parent / "fixtures"


def _file(name: str) -> MasterFile:
    return MasterFile(name.removeprefix("master_"), (FIX / name).read_bytes())


def test_registry_names_the_kotak_format() -> None:
    assert master_format("kotak_neo") is FORMAT


def test_irregular_header_names_are_normalised() -> None:
    header = (FIX / "master_nse_cm.csv").read_text().splitlines()[0].split(",")
    assert "dStrikePrice;" in header and "dTickSize " in header and "dPriceNum   " in header  # the traps
    assert header == HEADER.split(",")  # the sim writes the official header verbatim
    names = {normalise_header(h) for h in header}
    assert {"dStrikePrice", "dTickSize", "dPriceNum", "lExpiryDate", "lFreezeQty"} <= names


def test_official_nse_cm_sample_rows() -> None:
    rows = {r.token: r for r in FORMAT.parse([_file("master_nse_cm.csv")])}
    assert set(rows) == {"6531", "6542", "6545"}
    nykaa = rows["6545"]
    assert nykaa.instrument == Instrument(
        "NSE", "NYKAA", lot_size=1, tick_size=Decimal("0.05"), freeze_quantity=789905
    )
    assert nykaa.trading_symbol == "NYKAA-EQ" and nykaa.extra["pExchSeg"] == "nse_cm"
    # Other series of one name keep their trading symbol, so neither shadows the other.
    assert rows["6531"].instrument.symbol == "NHIT-IV" and rows["6542"].instrument.symbol == "NHIT-BL"
    assert rows["6531"].instrument.tick_size == Decimal("0.01")  # dTickSize 1 at lPrecision 2
    assert all(r.instrument.expiry is None and r.instrument.strike is None for r in rows.values())


def test_fo_expiry_is_1980_based_epoch_seconds() -> None:
    assert expiry_of("1456410600", "nse_fo") == dt.date(2026, 2, 24)  # not 02-25 (the +10 years error)
    assert expiry_of("-1", "nse_cm") is None
    rows = list(FORMAT.parse([_file("master_nse_fo.csv")]))
    assert {r.instrument.expiry for r in rows} == {dt.date(2026, 2, 24)}


def test_fo_strikes_x100_futures_xx_and_exchange() -> None:
    rows = {r.token: r.instrument for r in FORMAT.parse([_file("master_nse_fo.csv")])}
    fut, ce, pe = rows["35001"], rows["45001"], rows["45002"]
    assert fut == Instrument(
        "NFO", "NIFTY", dt.date(2026, 2, 24), lot_size=65, tick_size=Decimal("0.05"), freeze_quantity=1820
    )
    assert ce.strike == Decimal("24500") and ce.option_type is OptionType.CE
    assert pe.strike == Decimal("24550.5") and pe.option_type is OptionType.PE  # exact, never a float
    master = InstrumentMaster(FORMAT.parse([_file("master_nse_fo.csv")]))
    assert master.strikes("NFO", "NIFTY", dt.date(2026, 2, 24)) == [Decimal("24500"), Decimal("24550.5")]


def test_header_only_file_is_zero_rows_not_an_error() -> None:
    assert list(FORMAT.parse([MasterFile("nse_fo.csv", (HEADER + "\n").encode())])) == []
    assert list(FORMAT.parse([MasterFile("nse_fo.csv", b"")])) == []


def test_renamed_columns_are_a_format_error_naming_the_file() -> None:
    bad = MasterFile("nse_fo.csv", HEADER.replace("pSymbolName", "pName").encode() + b"\n")
    with pytest.raises(MasterFormatError, match=r"nse_fo\.csv.*pSymbolName"):
        list(FORMAT.parse([bad]))


def test_file_paths_reply_shapes() -> None:
    new = {
        "data": {"filesPaths": ["https://h/x/2025-01-22/transformed/nse_fo.csv"], "baseFolder": "https://h/x"}
    }
    old = {
        "filesPaths": ["2025-01-22/transformed/nse_cm-v1.csv"],
        "baseFolder": "https://h/x",
    }  # docs' sample
    assert file_urls(new, "https://api") == ["https://h/x/2025-01-22/transformed/nse_fo.csv"]
    assert file_urls(old, "https://api") == ["https://h/x/2025-01-22/transformed/nse_cm-v1.csv"]
    with pytest.raises(ValueError):
        file_urls({"data": {}}, "https://api")


async def test_download_from_the_sim_agrees_with_its_master(monkeypatch: pytest.MonkeyPatch) -> None:
    async with start(master=default_master()) as sim:
        account, env = account_for(sim, "masters")  # the default segments: everything the sim trades
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        files = await FORMAT.download(account)
        # Recorded wire: the file-paths GET carries the consumer key (access token) as Authorization.
        listing = [s for s in sim.seen if s[1] == PATH_MASTER_FILES]
        assert (
            listing
            and listing[0][0] == "GET"
            and listing[0][2]["authorization"] == env["KOTAK_SIM_MASTERS_ACCESS_TOKEN"]
        )
        assert "sid" not in listing[0][2] and "auth" not in listing[0][2]  # no session needed
    assert sorted(f.name for f in files) == ["bse_cm.csv", "bse_fo.csv", "nse_cm.csv", "nse_fo.csv"]
    parsed = InstrumentMaster(FORMAT.parse(files))
    expected = default_master()
    assert sorted(r.instrument.key for r in parsed) == sorted(r.instrument.key for r in expected)
    for row in expected:
        got = parsed.resolve(row.instrument)
        assert (got.token, got.trading_symbol, got.instrument) == (
            row.token,
            row.trading_symbol,
            row.instrument,
        )


async def test_download_selects_segments_and_refuses_a_wrong_key(monkeypatch: pytest.MonkeyPatch) -> None:
    async with start(master=default_master()) as sim:
        account, env = account_for(sim, "seg", options={"master_segments": ["nse_fo"]})
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        files = await FORMAT.download(account)
        assert [f.name for f in files] == ["nse_fo.csv"]
        monkeypatch.setenv("KOTAK_SIM_SEG_ACCESS_TOKEN", "wrong")
        with pytest.raises(Rejected, match="401"):
            await FORMAT.download(account)


def test_price_multiplier_from_lmultiplier_gen_and_price_fractions() -> None:
    from runner.brokers.kotak_neo.master import multiplier_of

    assert multiplier_of("-1", "1", "1", "1", "1") is None  # equities: nothing to apply
    assert multiplier_of("", "", "", "", "") is None
    assert multiplier_of("1000", "1", "1", "1", "1") == 1000  # a currency future: 1000 units a contract
    assert multiplier_of("1", "1", "1", "10", "1") == 10 and multiplier_of("100", "1", "4", "", "") == 25


def test_an_mcx_contracts_multiplier_round_trips_through_the_sims_master_file() -> None:
    from runner.brokers.instruments import MasterRow
    from runner.brokers.kotak_neo.sim_master import segment_files

    crude = Instrument(
        "MCX",
        "CRUDEOIL",
        dt.date(2026, 3, 19),
        lot_size=1,
        tick_size=Decimal(1),
        price_multiplier=Decimal(100),
    )
    master = InstrumentMaster([MasterRow(crude, "445001", "CRUDEOIL26MARFUT")], broker="kotak_neo")
    files = segment_files(master)
    (row,) = FORMAT.parse([MasterFile(name, content) for name, content in files.items()])
    assert row.instrument.price_multiplier == 100 and row.instrument.key == crude.key
