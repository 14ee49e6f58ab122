"""End-to-end: every shipped example playbook rehearsed on the paper broker in virtual time, with a
price path built from the playbook's own prices (so limit orders meet the market as the author meant),
asserting what is left at the broker afterwards."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest
import time_machine
from helpers.engine import IST

from runner.brokers.paper.broker import PaperBroker
from runner.brokers.paper.price_paths import StepPath, load_references, path_from_options
from runner.clock import VirtualClock
from runner.engine.core import RunOptions, execute
from runner.journal.db import make_engine
from runner.journal.store import Journal
from runner.model import OrderType, Product
from runner.playbook.models import LtpPrice, Playbook
from runner.playbook.validate import load_playbook

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "playbooks").glob("*.yaml"))
DAY = dt.date(2026, 3, 2)


def market_for(pb: Playbook) -> StepPath:
    """Each instrument trades at the first price the playbook names for it (else a plausible level). A
    rolling instrument's contract is known only when its step runs: it trades on the default paper market
    (reference levels: NIFTY ~24500), as does the index whose LTP sets its ATM strike."""
    path = StepPath(path_from_options({}, references=load_references()))
    seen: dict[str, Decimal] = {}
    for step in pb.steps:
        for f in getattr(step, "legs", None) or [step]:
            ref = getattr(f, "instrument", None)
            if ref is None or (isinstance(ref, str) and pb.instruments[ref].is_rolling):
                continue
            ins = pb.instrument(ref)
            price = getattr(f, "price", None)
            level = (
                pb.resolve_decimal(price)
                if price is not None and not isinstance(price, LtpPrice)  # relative: any level will do
                else (
                    Decimal(100)
                    if ins.option_type
                    else Decimal(24500)
                    if ins.is_derivative
                    else Decimal(1500)
                )
            )
            seen.setdefault(ins.key, level)
            path.set(ins, seen[ins.key], dt.datetime.combine(DAY, dt.time(9), IST))
    return path


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
async def test_example_rehearses_to_a_clean_end(path, tmp_path):
    pb = load_playbook(path)
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    clock = VirtualClock(dt.datetime.combine(DAY, dt.time(9, 0), IST))
    broker = PaperBroker("paper", engine=engine, clock=clock, prices=market_for(pb))
    report = await execute(
        pb,
        broker,
        Journal(engine=engine),
        clock,
        account="paper",
        options=RunOptions(scheduled_for=dt.datetime.combine(DAY, dt.time(0), IST)),
    )
    outcomes = {s.step_id: s.outcome.value for s in report.steps}
    assert report.ok, outcomes
    assert len(report.steps) == len(pb.steps)
    kinds = {s.kind for s in pb.steps}
    if "square_off" in kinds:
        assert all(p.quantity == 0 for p in await broker.positions())
    if "cancel" in kinds and any(getattr(s, "all_open", None) is not None for s in pb.steps):
        assert await broker.open_orders() == []
    # every order the run placed is journaled, and every journaled order is at the broker
    journaled = {i.client_order_id for i in Journal(engine=engine).intents(run_id=report.run_id)}
    assert {o.client_order_id for o in await broker.orders()} == journaled


# --- the shipped examples on the built-in paper account's default market, through the CLI ------------

# The examples roll (nearest weekly/monthly expiry, ATM strikes) and price relative to LTP, so they must
# rehearse cleanly on any trading day: a month before a monthly expiry, a weekly expiry day (2026-12-01),
# the day before and the day of the monthly expiry (2026-12-29), and after it, in the next year.
REHEARSAL_DAYS = ["2026-11-23", "2026-12-01", "2026-12-15", "2026-12-28", "2026-12-29", "2027-02-10"]


@pytest.mark.parametrize("day", REHEARSAL_DAYS)
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_cli_rehearse_of_every_example_succeeds_on_default_prices(path, day, tmp_path, capsys):
    from runner.cli import main

    db = f"sqlite:///{tmp_path / 'r.db'}"
    assert main(["rehearse", str(path), "--date", day, "--db", db, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "succeeded"
    assert all(s["outcome"] in ("succeeded", "skipped") for s in report["steps"])
    # "skipped" only where a condition said so (e.g. no chase needed), never because a step failed
    assert not any("earlier step failed" in (s["message"] or "") for s in report["steps"])


def test_run_now_entry_then_intraday_square_off_on_the_default_paper_account(tmp_path, capsys):
    """The README's main job on a fresh machine: an intraday entry, then the square-off flattens it."""
    from runner.accounts import PAPER
    from runner.brokers.paper.broker import create
    from runner.cli import main

    playbooks = Path(__file__).resolve().parents[2] / "playbooks"
    db = f"sqlite:///{tmp_path / 'j.db'}"
    with time_machine.travel(dt.datetime(2026, 12, 1, 9, 30, tzinfo=IST), tick=True):
        entry_pb = str(playbooks / "wait_fill_then_stoploss.yaml")
        assert main(["run", "--now", entry_pb, "--db", db, "--json"]) == 0
        entry = json.loads(capsys.readouterr().out)
        broker = create(PAPER, db_url=db)
        (pos,) = asyncio.run(broker.positions())
        assert (pos.instrument.key, pos.product, pos.quantity) == ("NFO NIFTY 2026-12-29", Product.MIS, 75)
        (stop,) = asyncio.run(broker.open_orders())
        assert stop.order_type is OrderType.SL_M and stop.trigger_price is not None
        # trigger_price {ltp: "-1.6%"}: resolved just after the fill, on the 0.10 tick, rounded down
        (fill,) = asyncio.run(broker.fills())
        assert stop.trigger_price % Decimal("0.10") == 0
        assert fill.price * Decimal("0.982") < stop.trigger_price < fill.price * Decimal("0.986")

        assert main(["run", "--now", str(playbooks / "intraday_square_off.yaml"), "--db", db, "--json"]) == 0
        square = json.loads(capsys.readouterr().out)
        assert square["run_id"] != entry["run_id"]
        (step,) = square["steps"]
        assert step["outcome"] == "succeeded" and "1 cancelled" in step["message"]
        assert "flat: 1 position(s) closed" in step["message"]
        assert [p.quantity for p in asyncio.run(broker.positions())] == [0]
        assert asyncio.run(broker.open_orders()) == []  # the protective stop was cancelled first
