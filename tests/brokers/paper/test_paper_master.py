"""The paper broker's generated instrument master: expiry calendar, strike steps, tokens, and the paper
broker refusing contracts that cannot exist as a real broker's master would."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest
import time_machine

from runner.accounts import PAPER
from runner.brokers.base import InstrumentSource
from runner.brokers.masters import master_format
from runner.brokers.paper.broker import create
from runner.brokers.paper.master import FORMAT, generated_master, render_csv
from runner.clock import VirtualClock
from runner.errors import InstrumentUnknown
from runner.model import Instrument, OptionType, OrderRequest, OrderType, Product, Side

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
DAY = dt.date(2026, 12, 1)  # a Tuesday


def nifty(expiry: dt.date, strike: int, opt: OptionType = OptionType.CE) -> Instrument:
    return Instrument("NFO", "NIFTY", expiry, Decimal(strike), opt)


def test_index_expiries_are_tuesdays_weekly_and_monthly_and_sensex_thursdays():
    m = generated_master(DAY)
    nifty_exp = m.expiries("NFO", "NIFTY")
    assert nifty_exp[:4] == [dt.date(2026, 12, 1), dt.date(2026, 12, 8), dt.date(2026, 12, 15),
                             dt.date(2026, 12, 22)]
    assert dt.date(2026, 12, 29) in nifty_exp  # the monthly the shipped examples name
    # BANKNIFTY has monthlies only (last Tuesday); 2027-01-26 is a holiday, so January's moves to Monday
    assert m.expiries("NFO", "BANKNIFTY")[:3] == [dt.date(2026, 12, 29), dt.date(2027, 1, 25),
                                                  dt.date(2027, 2, 23)]
    assert all(d.weekday() == 3 for d in m.expiries("BFO", "SENSEX")[:4])


def test_a_holiday_expiry_moves_to_the_previous_trading_day():
    m = generated_master(dt.date(2026, 11, 16))
    assert dt.date(2026, 11, 24) not in m.expiries("NFO", "NIFTY")  # Tuesday, an NSE holiday
    assert dt.date(2026, 11, 23) in m.expiries("NFO", "NIFTY")


def test_strikes_sit_on_the_step_around_the_reference_spot():
    m = generated_master(DAY)
    strikes = m.strikes("NFO", "NIFTY", dt.date(2026, 12, 29))
    assert all(s % 50 == 0 for s in strikes)
    assert strikes[0] <= 24500 - 20 * 50 and strikes[-1] >= 24500 + 20 * 50
    assert all(s % 100 == 0 for s in m.strikes("NFO", "BANKNIFTY", dt.date(2026, 12, 29)))


def test_every_shipped_example_instrument_and_large_cap_is_listed():
    m = generated_master(DAY)
    for symbol in ("HDFCBANK", "RELIANCE", "INFY", "TCS", "SBIN", "ICICIBANK", "IDEA"):
        assert m.resolve(Instrument("NSE", symbol)).token
    row = m.resolve(nifty(dt.date(2026, 12, 29), 24500))
    assert (row.instrument.lot_size, row.instrument.freeze_quantity) == (75, 1800)
    assert row.trading_symbol == "NIFTY26DEC24500CE"
    assert m.resolve(Instrument("NFO", "NIFTY", dt.date(2026, 12, 8), Decimal(24500),
                                OptionType.PE)).trading_symbol == "NIFTY26D0824500PE"
    assert m.resolve(Instrument("NFO", "BANKNIFTY", dt.date(2026, 12, 29), Decimal(52500),
                                OptionType.CE)).instrument.lot_size == 35


def test_tokens_are_unique_and_stable_from_day_to_day():
    a, b = list(generated_master(DAY)), generated_master(DAY + dt.timedelta(days=1))
    assert len({r.token for r in a}) == len(a)
    fut = Instrument("NFO", "NIFTY", dt.date(2026, 12, 29))
    assert a and generated_master(DAY).resolve(fut).token == b.resolve(fut).token


def test_tokens_survive_a_venue_that_reads_its_id_as_a_number():
    # Blitz's instrumentId and AlphaPoint's InstrumentId are numbers: "00109..." would come back "109..."
    tokens = [r.token or "" for r in generated_master(DAY)]
    assert tokens and all(t.isdigit() and str(int(t)) == t for t in tokens)


def test_contracts_that_cannot_exist_are_refused_with_the_masters_message():
    m = generated_master(DAY)
    with pytest.raises(InstrumentUnknown, match="not in the instrument master"):
        m.resolve(nifty(dt.date(2026, 12, 29), 53030))
    with pytest.raises(InstrumentUnknown):
        m.resolve(nifty(dt.date(2026, 12, 28), 24500))  # a Monday: not an expiry
    with pytest.raises(InstrumentUnknown):
        generated_master(dt.date(2026, 12, 30)).resolve(nifty(dt.date(2026, 12, 29), 24500))  # expired


def test_format_is_registered_and_round_trips_the_generic_csv():
    assert master_format("paper") is FORMAT
    m = generated_master(DAY)
    rows = list(m)
    from runner.brokers.masters import MasterFile

    assert list(FORMAT.parse([MasterFile("paper.csv", render_csv(rows))])) == rows
    files = asyncio.run(FORMAT.download(PAPER))
    assert files[0].content.startswith(b"exchange,symbol,expiry,")


def _order(instrument: Instrument) -> OrderRequest:
    return OrderRequest(instrument=instrument, side=Side.BUY, quantity=75, order_type=OrderType.MARKET,
                        product=Product.NRML, client_order_id="pm-1")


def test_paper_broker_refuses_strike_53030_and_a_non_expiry_day(tmp_path):
    clock = VirtualClock(dt.datetime(2026, 12, 1, 10, 0, tzinfo=IST))
    broker = create(PAPER, clock=clock, db_url=f"sqlite:///{tmp_path / 'p.db'}")
    assert isinstance(broker, InstrumentSource)

    async def go() -> None:
        await broker.connect()
        with pytest.raises(InstrumentUnknown, match="NFO NIFTY 2026-12-29 53030 CE"):
            await broker.place(_order(nifty(dt.date(2026, 12, 29), 53030)))
        with pytest.raises(InstrumentUnknown):
            await broker.place(_order(nifty(dt.date(2026, 12, 28), 24500)))
        assert await broker.orders() == []
        order = await broker.place(_order(nifty(dt.date(2026, 12, 29), 24500)))
        assert order.client_order_id == "pm-1"

    asyncio.run(go())


def test_instrument_master_false_turns_the_check_off(tmp_path):
    account = PAPER.model_copy(update={"options": {"instrument_master": False}})
    clock = VirtualClock(dt.datetime(2026, 12, 1, 10, 0, tzinfo=IST))
    broker = create(account, clock=clock, db_url=f"sqlite:///{tmp_path / 'p.db'}")
    asyncio.run(broker.place(_order(Instrument("NSE", "NOSUCHCO"))))
    with pytest.raises(ValueError, match="instrument_master"):
        create(PAPER.model_copy(update={"options": {"instrument_master": "false"}}))


BAD_PLAYBOOK = """\
version: 1
name: bad_strike
account: paper
timezone: Asia/Kolkata
instruments:
  ce: {exchange: NFO, symbol: NIFTY, expiry: 2026-12-29, strike: 53030, option_type: CE, lot_size: 75}
limits:
  max_lots_per_order: 1
steps:
  - kind: place
    id: buy
    at: "09:20"
    instrument: ce
    side: BUY
    lots: 1
    type: MARKET
    product: NRML
"""


def test_run_and_rehearse_fail_the_step_with_exit_3(tmp_path: Path, capsys):
    from runner.cli import main

    pb = tmp_path / "bad.yaml"
    pb.write_text(BAD_PLAYBOOK)
    db = f"sqlite:///{tmp_path / 'j.db'}"
    with time_machine.travel(dt.datetime(2026, 12, 1, 9, 30, tzinfo=IST), tick=True):
        assert main(["run", "--now", str(pb), "--db", db, "--json"]) == 3
    out = capsys.readouterr()
    assert "not in the instrument master" in out.out + out.err
    assert main(["rehearse", str(pb), "--date", "2026-12-01", "--db",
                 f"sqlite:///{tmp_path / 'r.db'}", "--json"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert "not in the instrument master" in json.dumps(report)


EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "playbooks").glob("*.yaml"))


@pytest.mark.parametrize("day", ["2026-11-23", "2026-12-01", "2026-12-29"])
def test_every_shipped_example_instrument_exists_on_paper_and_every_simulator(day):
    from runner.brokers.alphapoint.sim import default_master as alphapoint_master
    from runner.brokers.blitz.sim import default_master as blitz_master
    from runner.brokers.kotak_neo.sim import default_master as kotak_master
    from runner.brokers.odin.sim_book import default_master as odin_master
    from runner.playbook.validate import load_playbook

    date = dt.date.fromisoformat(day)
    with time_machine.travel(dt.datetime.combine(date, dt.time(10), tzinfo=IST), tick=False):
        masters = {"paper": generated_master(date), "kotak_neo": kotak_master(), "odin": odin_master(),
                   "blitz": blitz_master(), "alphapoint": alphapoint_master()}
    specs = [(pb, alias) for p in EXAMPLES for pb in [load_playbook(p)] for alias in pb.instruments]
    assert len(specs) >= 10
    for pb, alias in specs:
        spec = pb.instruments[alias]
        for name, master in masters.items():
            # a rolling alias: the contract it resolves to on that day, the index at its reference level
            ins = asyncio.run(_contract(pb, alias, master, date)) if spec.is_rolling else spec.to_instrument()
            row = master.resolve(ins)
            assert row.token or row.extra, (name, spec)
        # where a playbook states a lot size, the generated master agrees with it
        paper = spec.to_instrument() if not spec.is_rolling else asyncio.run(
            _contract(pb, alias, masters["paper"], date)
        )
        got = masters["paper"].resolve(paper).instrument
        assert spec.lot_size in (None, got.lot_size), spec


async def _contract(pb, alias, master, date):
    from runner.engine.rolling import resolve_spec

    async def spot(ins):
        return {"NSE NIFTY": Decimal("24500"), "NSE BANKNIFTY": Decimal("52000")}[ins.key]

    return (await resolve_spec(pb, alias, master, spot, date))[0]


def test_a_simulators_own_rows_win_over_generated_ones():
    from runner.brokers.kotak_neo.sim import default_master as kotak_master

    with time_machine.travel(dt.datetime(2026, 12, 1, 10, tzinfo=IST), tick=False):
        m = kotak_master()
    assert m.resolve(Instrument("NSE", "RELIANCE")).token == "2885"  # Kotak's own token, as before
    assert m.by_token("2885").instrument.symbol == "RELIANCE"
    hdfc = m.resolve(Instrument("NSE", "HDFCBANK"))  # generated: missing before
    assert m.by_token(hdfc.token or "").instrument.symbol == "HDFCBANK"
    assert dt.date(2026, 12, 8) in m.expiries("NFO", "NIFTY")
    assert Decimal(24550) in m.strikes("NFO", "NIFTY", dt.date(2026, 12, 29))
