"""AlphaPoint APEX's own instrument master (runner/brokers/alphapoint/master.py): ``GetInstruments``.

Source: alphapoint/slate ``source/includes/instrs/_api_instrs_user_getinstruments.md`` (request
``{"OMSId": 1}``, Public; the reply's fields): fixtures/getinstruments.json is its example,
fixtures/getinstruments_reply.json rows of the same shape for the instruments the simulator trades."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from runner.accounts import Account
from runner.brokers.alphapoint.master import FORMAT, apex_symbol, instrument_of
from runner.brokers.alphapoint.sim import MASTER_FILE, AlphaPointSim, start
from runner.brokers.alphapoint.wire import instrument_id_of
from runner.brokers.instruments import InstrumentMaster
from runner.brokers.masters import MasterFile, MasterFormatError, master_format
from runner.errors import Unavailable
from runner.model import Instrument, OptionType

FIXTURES = Path(__file__).parent / "fixtures"
DOCS = json.loads((FIXTURES / "getinstruments.json").read_text())
REPLY = MasterFile("GetInstruments.json", (FIXTURES / "getinstruments_reply.json").read_bytes())
START = dt.datetime(2026, 3, 2, 4, 0, tzinfo=dt.UTC)
NIFTY_CE = Instrument("NFO", "NIFTY", dt.date(2026, 12, 29), Decimal(24500), OptionType.CE)


def _account(url: str, **options: object) -> Account:
    return Account(name="ap1", broker="alphapoint", endpoints={"ws": url}, options=dict(options))


def test_registered() -> None:
    assert master_format("alphapoint") is FORMAT


def test_rows_map_like_instruments_csv() -> None:
    master = InstrumentMaster(FORMAT.parse([REPLY]), broker="alphapoint")
    rel = master.by_token("9")
    assert rel.instrument == Instrument("NSE", "RELIANCE", lot_size=1, tick_size=Decimal("0.05"))
    assert instrument_id_of(rel) == 9 and rel.extra["product_symbol"] == "RELIANCE"
    ce = master.resolve(NIFTY_CE)
    assert instrument_id_of(ce) == 102
    assert (ce.instrument.lot_size, ce.instrument.tick_size) == (75, Decimal("0.05"))
    assert ce.extra["product_symbol"] == "NIFTY26DEC24500CE"  # what GetAccountPositions reports
    assert ce.extra["quantity_increment"] == "75" and ce.extra["session_status"] == "Running"
    fut = master.resolve(Instrument("NFO", "NIFTY", dt.date(2026, 12, 29)))
    assert fut.token == "101" and fut.instrument.tick_size == Decimal("0.10")


def test_stopped_instrument_is_listed_and_flagged() -> None:
    infy = InstrumentMaster(FORMAT.parse([REPLY])).resolve(Instrument("NSE", "INFY"))
    assert infy.extra["session_status"] == "Stopped"


def test_fractional_quantity_increment_is_no_lot() -> None:
    btc = InstrumentMaster(FORMAT.parse([REPLY])).by_token("900")
    assert btc.instrument.lot_size is None and btc.extra["quantity_increment"] == "0.0005"
    assert btc.extra["session_status"] == "Paused" and btc.extra["product_symbol"] == "BTC"


def test_unreadable_rows_are_skipped_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="runner.brokers.alphapoint"):
        tokens = [r.token for r in FORMAT.parse([REPLY])]
    assert tokens == ["9", "11", "101", "102", "900"]
    assert (
        "GetInstruments.json: 2 rows skipped (InstrumentType Unknown x1, "
        "derivative symbol without a full expiry date x1)" in caplog.text
    )


def test_the_docs_example_row_is_skipped_not_fatal() -> None:
    content = json.dumps(DOCS["reply"]).encode()
    assert list(FORMAT.parse([MasterFile("GetInstruments.json", content)])) == []


def test_empty_list_and_bad_files() -> None:
    assert list(FORMAT.parse([MasterFile("GetInstruments.json", b"[]")])) == []
    for content, why in ((b"Bad Gateway", "not JSON"), (b'{"result": false}', "expected a JSON array")):
        with pytest.raises(MasterFormatError, match=rf"^GetInstruments\.json: {why}"):
            list(FORMAT.parse([MasterFile("GetInstruments.json", content)]))


def test_a_recorded_frame_is_accepted() -> None:
    frame = {"m": 1, "i": 2, "n": "GetInstruments", "o": REPLY.content.decode()}
    got = [r.token for r in FORMAT.parse([MasterFile("frame.json", json.dumps(frame).encode())])]
    assert got == [r.token for r in FORMAT.parse([REPLY])]


def test_symbols_round_trip() -> None:
    for inst in (NIFTY_CE, Instrument("NFO", "NIFTY", dt.date(2026, 3, 26)), Instrument("NSE", "M&M"),
                 Instrument("NSE", "BAJAJ-AUTO"), Instrument("NFO", "BAJAJ-AUTO", dt.date(2026, 1, 27)),
                 Instrument("NFO", "BANKNIFTY", dt.date(2026, 1, 6), Decimal("52050.5"), OptionType.PE)):
        assert instrument_of(apex_symbol(inst)) == inst
    assert apex_symbol(NIFTY_CE) == "NIFTY-29DEC26-24500-CE"
    # compact NSE forms are ambiguous (26DEC24 is a date and a month+strike): skipped, never guessed
    assert instrument_of("NIFTY26DEC24500PE") is None and instrument_of("NIFTY-31FEB26-FUT") is None


def test_an_exchange_other_than_nse_nfo_is_named_in_the_symbol() -> None:
    # one OMS lists NSE and BSE RELIANCE, NFO and BFO contracts: the symbol must tell them apart
    sensex = Instrument("BFO", "SENSEX", dt.date(2026, 12, 31), Decimal(82500), OptionType.CE)
    bajaj = Instrument("BFO", "BAJAJ-AUTO", dt.date(2026, 1, 29))
    for inst in (sensex, Instrument("BSE", "RELIANCE"), bajaj):
        assert instrument_of(apex_symbol(inst)) == inst
    assert apex_symbol(sensex) == "BFO:SENSEX-31DEC26-82500-CE"
    assert apex_symbol(Instrument("BSE", "RELIANCE")) == "BSE:RELIANCE"
    assert instrument_of(":RELIANCE") is None and instrument_of("BSE:") is None


@pytest.fixture
async def sim() -> AsyncIterator[AlphaPointSim]:
    async with start(clock=lambda: START) as running:
        yield running


async def test_recorded_request_is_one_public_frame(sim: AlphaPointSim) -> None:
    await FORMAT.download(_account(sim.url))
    assert sim.received == [("GetInstruments", DOCS["request"])]  # no AuthenticateUser before it
    frame = sim.raw_frames[-1]
    assert (frame["m"], frame["n"], json.loads(frame["o"])) == (0, "GetInstruments", {"OMSId": 1})
    assert sim.logins == 0


async def test_oms_id_comes_from_the_account(sim: AlphaPointSim) -> None:
    await FORMAT.download(_account(sim.url, oms_id=3))
    assert sim.received == [("GetInstruments", {"OMSId": 3})]


async def test_download_from_the_simulator_agrees_with_what_it_trades(sim: AlphaPointSim) -> None:
    files = await FORMAT.download(_account(sim.url))
    assert [f.name for f in files] == ["GetInstruments.json"]
    got = {r.instrument.key: r for r in FORMAT.parse(files)}
    want = {r.instrument.key: r for r in sim.master}
    shipped = {r.instrument.key for r in InstrumentMaster.load(MASTER_FILE)}  # plus the generated contracts
    assert set(got) == set(want) and len(shipped) == 8 and shipped < set(want)
    products = [r.extra["product_symbol"] for r in got.values()]
    assert len(set(products)) == len(products)  # a position's ProductSymbol names one instrument
    for key, row in want.items():
        parsed = got[key]
        assert instrument_id_of(parsed) == instrument_id_of(row), key
        # the product positions are reported in, by the rule the sim and the client share
        assert parsed.extra["product_symbol"] == (
            row.extra.get("product_symbol") or row.trading_symbol or row.instrument.symbol
        )
        assert (parsed.instrument.lot_size, parsed.instrument.tick_size) == (
            row.instrument.lot_size, row.instrument.tick_size
        )
        assert parsed.extra["session_status"] == "Running"


async def test_download_without_a_gateway_is_unavailable() -> None:
    with pytest.raises(Unavailable):
        await FORMAT.download(_account("ws://127.0.0.1:9/WSGateway/"))
