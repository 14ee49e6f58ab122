"""Rolling instruments in the engine: resolved once, when the first step using them runs, through the
broker's instrument master and the underlying's LTP; journaled in ``resolved_instruments``; a resumed run
reuses the journaled contract even after the price moved; anything missing fails the step, nothing sent."""

from __future__ import annotations

import datetime as dt
import textwrap
from decimal import Decimal
from typing import Any

import pytest
from helpers.engine import at, make_env
from helpers.faulty_broker import Faulty
from helpers.rolling import INDEX, WithMaster, nifty_master

from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.journal.resolved import ResolvedInstruments
from runner.model import Instrument, OptionType, OrderRequest, Product, Side
from runner.playbook.models import Playbook
from runner.playbook.yamlload import load_yaml


def rolling_playbook(steps: str, ce: str = "{nearest: weekly}, strike: atm+2") -> Playbook:
    text = textwrap.dedent(f"""\
        version: 1
        name: roll
        timezone: Asia/Kolkata
        instruments:
          ce: {{exchange: NFO, symbol: NIFTY, expiry: {ce.split(", strike: ")[0]},
                strike: {ce.split(", strike: ")[1]}, option_type: CE}}
          fut: {{exchange: NFO, symbol: NIFTY, expiry: {{nearest: monthly, offset: 1}}}}
        steps:
        """) + textwrap.dedent(steps)
    return Playbook.model_validate(load_yaml(text).value)


ENTRY = '  - {kind: place, id: buy, instrument: ce, side: BUY, lots: 1, type: LIMIT, price: {ltp: "-1%"}}\n'
CE_0303_24600 = Instrument("NFO", "NIFTY", dt.date(2026, 3, 3), Decimal(24600), OptionType.CE)


def priced_env(tmp_path: Any) -> Any:
    env = make_env(tmp_path)  # DAY is Monday 2026-03-02
    env.prices.set(INDEX, Decimal("24512.35"), at(9, 0))  # ATM 24500, atm+2 = 24600
    env.prices.set(CE_0303_24600, Decimal("80"), at(9, 0))
    env.prices.set(
        Instrument("NFO", "NIFTY", dt.date(2026, 3, 3), Decimal(24700), OptionType.CE),
        Decimal("50"),
        at(9, 0),
    )
    return env


async def test_atm_weekly_entry_resolves_once_journals_and_chases_in_ticks(tmp_path):
    env = priced_env(tmp_path)
    broker = WithMaster(env.broker(), nifty_master())
    steps = ENTRY + "  - {kind: modify, id: chase, order: buy, chase: {ticks: 3, every: 5s, max: 2}}\n"
    report = await env.run(rolling_playbook(steps), broker=broker)
    assert env.steps(report) == {"buy": "succeeded", "chase": "succeeded"}
    (intent,) = env.journal.intents(run_id=report.run_id)
    req = intent.request
    assert req.instrument.key == "NFO NIFTY 2026-03-03 24600 CE"
    assert (req.quantity, req.instrument.tick_size, req.price) == (75, Decimal("0.05"), Decimal("79.20"))
    (order,) = await env.broker().orders()
    assert order.price == Decimal("79.50")  # two chase steps of 3 ticks x 0.05 (the master's tick)
    (row,) = ResolvedInstruments(env.engine).of_run(report.run_id).values()
    assert (row.alias, row.instrument.key, row.rule) == (
        "ce",
        req.instrument.key,
        "NFO NIFTY nearest weekly atm+2 CE",
    )
    assert (row.underlying, row.underlying_ltp) == ("NSE NIFTY", Decimal("24512.35"))
    assert row.instrument.lot_size == 75 and row.instrument.freeze_quantity == 1800
    assert broker.master_reads == 1  # once per run, not per step


class Crash(BaseException):
    """The process dies after the intent is journaled, before the request leaves."""


async def test_a_resumed_run_reuses_the_journaled_contract_after_the_price_moved(tmp_path):
    env = priced_env(tmp_path)
    dying = Faulty(env.broker()).fail("place", Crash())
    dying.ltp = env.broker().ltp  # type: ignore[attr-defined]
    with pytest.raises(Crash):
        await env.run(rolling_playbook(ENTRY), broker=WithMaster(dying, nifty_master()))
    env.prices.set(INDEX, Decimal("24580"), at(9, 16))  # ATM now 24600: re-resolving would pick 24700
    await env.clock.sleep_until(at(9, 17))
    resumed = WithMaster(env.broker(), nifty_master())
    report = await env.run(rolling_playbook(ENTRY), broker=resumed)
    assert env.steps(report) == {"buy": "succeeded"}
    (order,) = await env.broker().orders()
    assert order.instrument.key == "NFO NIFTY 2026-03-03 24600 CE"  # resolved once, by the first start
    assert resumed.master_reads == 0  # the journaled contract: neither the master nor the LTP is read
    (row,) = ResolvedInstruments(env.engine).of_run(report.run_id).values()
    assert row.underlying_ltp == Decimal("24512.35")


async def test_a_new_run_resolves_against_the_price_of_its_own_step(tmp_path):
    """The failing case for the resume test: without the journal, the moved price picks another strike."""
    env = priced_env(tmp_path)
    env.prices.set(INDEX, Decimal("24580"), at(9, 0))  # ATM 24600, atm+2 = 24700
    report = await env.run(rolling_playbook(ENTRY), broker=WithMaster(env.broker(), nifty_master()))
    (intent,) = env.journal.intents(run_id=report.run_id)
    assert intent.request.instrument.key == "NFO NIFTY 2026-03-03 24700 CE"


@pytest.mark.parametrize(
    ("ce", "master", "ltp", "message"),
    [
        ("{nearest: weekly}, strike: atm", None, True, "has no instrument master"),
        ("{nearest: weekly}, strike: atm", "master", False, "NSE NIFTY: no last traded price"),
        ("{nearest: weekly, offset: 6}, strike: atm", "master", True, "no weekly expiry at offset 6"),
        ("{nearest: monthly}, strike: atm+5", "master", True, "atm+5 is beyond the listed strikes"),
        ("{nearest: weekly}, strike: atm", "empty", True, "no weekly expiry at offset 0"),
    ],
)
async def test_unresolvable_fails_the_step_and_sends_nothing(tmp_path, ce, master, ltp, message):
    env = priced_env(tmp_path)
    inner: Any = env.broker() if ltp else Faulty(env.broker())  # Faulty exposes no ltp()
    book = {None: None, "master": nifty_master(), "empty": InstrumentMaster([MasterRow(INDEX)])}[master]
    report = await env.run(rolling_playbook(ENTRY, ce), broker=WithMaster(inner, book))
    assert env.steps(report) == {"buy": "failed"}
    assert message in report.steps[0].message and "nothing was sent" in report.steps[0].message
    assert env.journal.intents(run_id=report.run_id) == []
    assert ResolvedInstruments(env.engine).of_run(report.run_id) == {}
    assert await env.broker().orders() == []


async def test_monthly_future_and_underlying_alias(tmp_path):
    """``fut`` (next month's monthly future) and an option whose ATM is set by that future's LTP."""
    env = priced_env(tmp_path)
    fut = Instrument("NFO", "NIFTY", dt.date(2026, 4, 28))
    env.prices.set(fut, Decimal("24390"), at(9, 0))
    steps = "  - {kind: place, id: buy, instrument: ce, side: BUY, quantity: 75}\n"
    pb = rolling_playbook(steps, "{nearest: monthly}, strike: atm-1")
    pb = pb.model_copy(
        update={
            "instruments": {
                **pb.instruments,
                "ce": pb.instruments["ce"].model_copy(update={"underlying": "fut"}),
            }
        }
    )
    report = await env.run(pb, broker=WithMaster(env.broker(), nifty_master()))
    assert env.steps(report) == {"buy": "succeeded"}
    rows = ResolvedInstruments(env.engine).of_run(report.run_id)
    assert rows["fut"].instrument.key == "NFO NIFTY 2026-04-28"
    assert rows["ce"].instrument.key == "NFO NIFTY 2026-03-31 24350 CE"  # ATM 24400 at 24390, minus one
    assert rows["ce"].underlying == "NFO NIFTY 2026-04-28" and rows["ce"].underlying_ltp == Decimal("24390")


async def test_allowed_instruments_names_a_rolling_alias(tmp_path):
    """``allowed_instruments: [ce]`` allows the contract ``ce`` resolved to in this run, nothing else."""
    env = priced_env(tmp_path)
    env.prices.set(Instrument("NFO", "NIFTY", dt.date(2026, 4, 28)), Decimal("24600"), at(9, 0))
    steps = ENTRY + "  - {kind: place, id: fut, instrument: fut, side: BUY, lots: 1}\n"
    pb = rolling_playbook(steps)
    pb = pb.model_copy(update={"limits": pb.limits.model_copy(update={"allowed_instruments": ["ce"]})})
    report = await env.run(pb, broker=WithMaster(env.broker(), nifty_master()))
    assert env.steps(report) == {"buy": "succeeded", "fut": "refused"}
    assert "NFO NIFTY 2026-04-28: instrument not in limits allowed_instruments" in report.steps[1].message


async def test_one_atm_per_underlying_per_run(tmp_path):
    """A straddle's PE, resolved by a later step after the index moved, gets the CE's strike."""
    env = priced_env(tmp_path)
    pe = Instrument("NFO", "NIFTY", dt.date(2026, 3, 3), Decimal(24500), OptionType.PE)
    env.prices.set(pe, Decimal("70"), at(9, 0))
    env.prices.set(INDEX, Decimal("24590"), at(9, 16))  # after the CE: ATM would be 24600
    text = textwrap.dedent("""\
        version: 1
        name: straddle
        timezone: Asia/Kolkata
        instruments:
          ce: {exchange: NFO, symbol: NIFTY, expiry: {nearest: weekly}, strike: atm, option_type: CE}
          pe: {exchange: NFO, symbol: NIFTY, expiry: {nearest: weekly}, strike: atm, option_type: PE}
        steps:
          - {kind: place, id: ce, instrument: ce, side: SELL, lots: 1}
          - {kind: place, id: pe, instrument: pe, side: SELL, lots: 1, after: 2m}
        """)
    pb = Playbook.model_validate(load_yaml(text).value)
    report = await env.run(pb, broker=WithMaster(env.broker(), nifty_master()))
    assert env.steps(report) == {"ce": "succeeded", "pe": "succeeded"}
    rows = ResolvedInstruments(env.engine).of_run(report.run_id)
    assert rows["ce"].instrument.strike == rows["pe"].instrument.strike == Decimal(24500)
    assert rows["pe"].underlying_ltp == Decimal("24512.35")
    assert rows["pe"].resolved_at > rows["ce"].resolved_at


async def test_a_square_off_beside_an_unresolved_rolling_alias(tmp_path):
    """A run that never uses its rolling alias (an exit-only run) neither resolves nor trips over it."""
    env = priced_env(tmp_path)
    await env.broker().place(OrderRequest("seed", CE_0303_24600, Side.BUY, 75, product=Product.MIS))
    broker = WithMaster(env.broker(), nifty_master())
    report = await env.run(rolling_playbook("  - {kind: square_off, id: flat}\n"), broker=broker)
    assert env.steps(report) == {"flat": "succeeded"}, report.steps[0].message
    assert [p.quantity for p in await env.broker().positions()] == [0]
    assert broker.master_reads == 0 and ResolvedInstruments(env.engine).of_run(report.run_id) == {}


async def test_a_rolling_first_step_is_not_armed_ahead_and_resolves_at_its_instant(tmp_path):
    """The daemon arms a first ``place`` ahead of its instant; a rolling one is left to the step (its
    contract is resolved when the step runs), and preparing does not fail over it."""
    from runner.engine.core import Engine, RunOptions
    from runner.journal.groupcommit import GroupCommit

    env = priced_env(tmp_path)
    pb = rolling_playbook('  - {kind: place, id: buy, at: "09:15", instrument: ce, side: BUY, lots: 1}\n')
    engine = Engine(
        pb, WithMaster(env.broker(), nifty_master()), env.journal, env.clock, account="paper",
        options=RunOptions(scheduled_for=at(9, 15)),
    )  # fmt: skip
    await engine.prepare(GroupCommit(env.engine))
    assert env.journal.intents() == []  # nothing armed
    report = await engine.execute()
    assert env.steps(report) == {"buy": "succeeded"}
    (intent,) = env.journal.intents(run_id=report.run_id)
    assert intent.request.instrument.key == "NFO NIFTY 2026-03-03 24600 CE"
