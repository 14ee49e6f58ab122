"""Blitz's own instrument master (runner/brokers/blitz/master.py): the gzipped JSON dump.

Sources: GitHub Quantxpress-Technologies/blitz-api-py, branch ``master``:
``blitzsdk/marketdata/instrument_manager.py`` (GET with no headers, ``gzip.decompress``, ``json.loads``),
``blitzsdk/common/config.py`` (``INSTRUMENT_URL`` = ``<host>/v1/api/instruments/gz/download``); the row shape
from ``docs/blitzsdk/instruments.md`` before commit 0d90142 (fixtures/sdk_docs_instruments.json.gz)."""

from __future__ import annotations

import datetime as dt
import gzip
import logging
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from aiohttp import web
from helpers.blitz import FIXTURES, SIM_OPTIONS, market_time

from runner.accounts import Account
from runner.brokers.blitz.master import FORMAT, instruments_url, parse_expiry
from runner.brokers.blitz.sim import Running, start
from runner.brokers.blitz.wire import exchange_segment, instrument_id, wire_symbol
from runner.brokers.instruments import InstrumentMaster
from runner.brokers.masters import MasterFile, MasterFormatError, master_format
from runner.errors import Unavailable
from runner.model import Instrument, OptionType

DOCS = MasterFile("instruments.json.gz", (FIXTURES / "sdk_docs_instruments.json.gz").read_bytes())


def _account(endpoints: dict[str, str], **options: object) -> Account:
    return Account(name="blitz1", broker="blitz", endpoints=endpoints, options=dict(options))


def test_registered() -> None:
    assert master_format("blitz") is FORMAT


def test_docs_rows_parse_exactly() -> None:
    master = InstrumentMaster(FORMAT.parse([DOCS]), broker="blitz")
    tcs = master.by_token("110010000011536")
    assert tcs.instrument == Instrument("NSE", "TCS", lot_size=1, tick_size=Decimal("0.05"))
    assert tcs.trading_symbol == "TCS" and wire_symbol(tcs) == "NSECM|TCS"
    ce = master.resolve(Instrument("NFO", "TCS", dt.date(2026, 7, 28), Decimal(2060), OptionType.CE))
    assert instrument_id(ce) == 262090000149108  # long, exact
    assert (ce.instrument.lot_size, ce.instrument.tick_size) == (225, Decimal("0.05"))
    assert ce.trading_symbol == "TCS28JUL262060CE" and exchange_segment(ce) == "NSEFO"
    assert ce.extra["instrument_type"] == "CE"


def test_every_expiry_and_strike_shape() -> None:
    master = InstrumentMaster(FORMAT.parse([DOCS]), broker="blitz")
    pe = master.resolve(Instrument("NFO", "NIFTY", dt.date(2026, 12, 29), Decimal(24500), OptionType.PE))
    assert pe.token == "262090000243211"
    fut = master.resolve(Instrument("NFO", "NIFTY", dt.date(2026, 12, 29)))
    assert fut.instrument.tick_size == Decimal("0.10") and fut.extra["instrument_type"] == "FUT"
    bfo = master.resolve(Instrument("BFO", "SENSEX", dt.date(2026, 12, 24), Decimal(81500), OptionType.CE))
    assert exchange_segment(bfo) == "BSEFO"
    index = master.resolve(Instrument("NSE", "NIFTY"))
    assert index.instrument.lot_size is None and index.extra["exchange_segment"] == "NSE"
    assert master.strikes("NFO", "NIFTY", dt.date(2026, 12, 29)) == [Decimal(24500)]


@pytest.mark.parametrize(
    "raw",
    ["2026-07-28", "2026-07-28T00:00:00", "2026-07-28T15:30:00+05:30", "28JUL2026", "28-Jul-2026",
     "28 Jul 2026", "20260728", "28-07-2026", "28/07/2026", 1785232800, 1785232800000],
)
def test_expiry_shapes(raw: object) -> None:
    assert parse_expiry(raw) == dt.date(2026, 7, 28)


def test_unknown_segment_is_skipped_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="runner.brokers.blitz"):
        rows = list(FORMAT.parse([DOCS]))
    assert len(rows) == 6  # 7 rows, the NCDEXFO one skipped
    assert "GUARSEED" not in {r.instrument.symbol for r in rows}
    assert "instruments.json.gz: 1 rows skipped (unknown segment NCDEXFO x1)" in caplog.text


def test_empty_list_is_no_rows() -> None:
    assert list(FORMAT.parse([MasterFile("i.json.gz", gzip.compress(b"[]"))])) == []


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (DOCS.content[: len(DOCS.content) // 2], "corrupt gzip"),
        (b"\x1f\x8b" + b"\x00" * 30, "corrupt gzip"),
        (gzip.compress(b"<html>502 Bad Gateway</html>"), "not JSON"),
        (b"Service Unavailable", "not JSON"),
        (gzip.compress(b'{"status": "error"}'), "expected a JSON array"),
    ],
)
def test_bad_files_name_the_file(content: bytes, why: str) -> None:
    with pytest.raises(MasterFormatError, match=rf"^instruments\.json\.gz: {why}"):
        list(FORMAT.parse([MasterFile("instruments.json.gz", content)]))


def test_plain_json_is_accepted() -> None:
    plain = MasterFile("instruments.json", gzip.decompress(DOCS.content))
    assert [r.token for r in FORMAT.parse([plain])] == [r.token for r in FORMAT.parse([DOCS])]


def test_url_defaults_to_the_sdk_path_on_the_api_host() -> None:
    assert instruments_url(_account({})) == "http://uat.bull8.ai:7443/v1/api/instruments/gz/download"
    api = {"api": "https://blitz.example:8443/api_interactive/api/v1"}
    assert instruments_url(_account(api)) == "https://blitz.example:8443/v1/api/instruments/gz/download"
    own = {**api, "instruments": "https://cdn.example/i.gz"}
    assert instruments_url(_account(own)) == "https://cdn.example/i.gz"


async def test_recorded_request_is_the_sdks() -> None:
    """InstrumentManager.load: a bare GET of the path, no Authorization (no login needed)."""
    seen: list[web.Request] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request)
        return web.Response(body=DOCS.content, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/v1/api/instruments/gz/download", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        files = await FORMAT.download(_account({"base": f"http://127.0.0.1:{port}"}))
    finally:
        await runner.cleanup()
    assert [(r.method, r.path_qs) for r in seen] == [("GET", "/v1/api/instruments/gz/download")]
    assert "Authorization" not in seen[0].headers
    assert files == [DOCS]  # bytes as served


@pytest.fixture
async def sim() -> AsyncIterator[Running]:
    async with start(clock=market_time(), options=SIM_OPTIONS) as running:
        yield running


async def test_download_from_the_simulator_agrees_with_what_it_trades(sim: Running) -> None:
    account = _account(sim.endpoints())
    assert account.endpoints["instruments"] == sim.url + "/v1/api/instruments/gz/download"
    files = await FORMAT.download(account)
    assert files[0].content[:2] == b"\x1f\x8b"
    got = {r.instrument.key: r for r in FORMAT.parse(files)}
    want = {r.instrument.key: r for r in sim.sim.master}
    assert set(got) == set(want)
    for key, row in want.items():
        parsed = got[key]
        assert parsed.token == str(instrument_id(row)), key
        assert parsed.trading_symbol == (row.trading_symbol or row.instrument.symbol)
        assert wire_symbol(parsed) == wire_symbol(row)
        assert (parsed.instrument.lot_size, parsed.instrument.tick_size) == (
            row.instrument.lot_size, row.instrument.tick_size
        )
    assert ("GET", "/v1/api/instruments/gz/download", None) in sim.sim.requests


async def test_download_from_a_missing_path_is_unavailable(sim: Running) -> None:
    with pytest.raises(Unavailable, match="HTTP 404"):
        await FORMAT.download(_account({"instruments": sim.url + "/nope"}))
