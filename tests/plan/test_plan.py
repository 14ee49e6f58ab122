"""`runner plan` / `runner apply`: the planned calls come from the live state and the steps' own logic,
planning sends and journals nothing, apply executes exactly the plan and refuses on drift."""

from __future__ import annotations

import asyncio
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from helpers.engine import NIFTY_FUT, RELIANCE, at, make_env, playbook
from helpers.faulty_broker import FaultyMultileg

from runner.engine.risk import RiskConfig
from runner.engine.steps.square_off import ROUND
from runner.errors import Rejected
from runner.ids import client_order_id
from runner.model import Instrument, OrderRequest, OrderType, Product, Side
from runner.plan.apply import PlanDrifted, PlanGuard, apply_plan, playbook_drift
from runner.plan.model import CallOp, PlaybookSource, Verdict, plan_from_dict
from runner.plan.planner import make_plan
from runner.plan.state import order_row

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"
WRITES = {"place", "place_multileg", "cancel", "cancel_multileg", "modify"}


@pytest.fixture(autouse=True)
def _quiet_logs():
    """An earlier CLI test may have pointed the process-wide logger at a capture stream now closed."""
    from runner import logs

    logs.configure(json=True, stream=io.StringIO(), force=True)


class Recorder(FaultyMultileg):
    """Every broker call counted (the paper broker underneath), including price reads."""

    async def ltp(self, instrument: Instrument) -> Decimal:
        return await self._go("ltp", instrument)  # type: ignore[no-any-return]

    async def instrument_master(self) -> Any:  # rolling instruments resolve through it (a read)
        return await self._go("instrument_master")


async def _seed(env, *requests: OrderRequest) -> None:
    book = env.broker()
    for r in requests:
        await book.place(r)
    env.clock.advance(1)


def _positions_and_resting():
    return (
        *[
            OrderRequest(f"seed{i}", NIFTY_FUT, Side.BUY, q, product=Product.NRML)
            for i, q in enumerate((1800, 1800, 900))
        ],
        OrderRequest("seed-rel", RELIANCE, Side.SELL, 10, product=Product.MIS),
        OrderRequest("resting", RELIANCE, Side.BUY, 5, OrderType.LIMIT, price=Decimal(2800)),
    )


async def _plan(env, pb, broker=None, text="", **kw):
    return await make_plan(
        pb,
        PlaybookSource("pb.yaml", text or pb.model_dump_json()),
        broker or env.broker(),
        env.journal,
        account=env.account,
        now=env.clock.now(),
        scheduled_for=kw.pop("slot", at(0, 0)),
        **kw,
    )


def _load(path: Path):
    from runner.playbook import validate

    return validate.load_playbook(str(path), None)


@pytest.mark.parametrize("path", sorted(PLAYBOOKS.glob("*.yaml")), ids=lambda p: p.stem)
async def test_plan_of_each_shipped_playbook_sends_and_journals_nothing(tmp_path, path):
    env = make_env(tmp_path, start=at(9, 0))
    await _seed(env, *_positions_and_resting())
    book_before = [order_row(o) for o in await env.broker().orders()]
    pb = _load(path)
    rec = Recorder(env.broker())
    plan = await _plan(env, pb, rec, path.read_text())
    assert not WRITES & set(rec.calls), dict(rec.calls)  # reads only
    assert rec.calls["open_orders"] == 1 and rec.calls["positions"] == 1
    assert env.journal.intents() == [] and env.journal.list_runs() == []
    assert [order_row(o) for o in await env.broker().orders()] == book_before
    assert [s.step_id for s in plan.steps] == [s.id for s in pb.steps]
    assert not plan.fails and not plan.refused, [(s.step_id, s.message) for s in plan.steps]
    for s in plan.steps:  # every place uses the run's deterministic client ids
        for c in s.calls:
            if c.op is CallOp.PLACE and c.purpose and c.purpose.value == "entry":
                assert c.client_order_id == client_order_id(plan.run_id, s.step_id, 0, 0)
    # the file round-trips, fingerprint included
    again = plan_from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again.calls == plan.calls and again.state.fingerprint == plan.state.fingerprint


async def test_entry_plan_shows_risk_checks_and_refusals(tmp_path):
    env = make_env(tmp_path, start=at(9, 0))
    pb = _load(PLAYBOOKS / "equity_limit_entry.yaml")
    plan = await _plan(env, pb)
    first, second, leftovers = plan.steps
    assert [c.risk for c in first.calls + second.calls] == ["ok", "ok"]
    assert all(c.condition is None for c in first.calls + second.calls)
    assert {c.condition for c in leftovers.calls} == {"if not filled by then (placed by this run)"}
    assert {p["instrument"]: p["after"] for p in plan.positions} == {"NSE RELIANCE": 100, "NSE HDFCBANK": 120}
    refused = await _plan(env, pb, risk=RiskConfig(max_quantity_per_order=110))
    assert [s.verdict for s in refused.steps] == [Verdict.PLANNED, Verdict.REFUSED, Verdict.PLANNED]
    (call,) = refused.steps[1].calls
    assert call.refused and "exceeds max_quantity_per_order 110" in call.risk
    assert refused.refused
    assert PlanGuard(env.broker(), refused).places.keys() == {refused.steps[0].calls[0].client_order_id}


async def test_square_off_plan_shows_sliced_closing_orders(tmp_path):
    env = make_env(tmp_path)
    await _seed(env, *_positions_and_resting())
    plan = await _plan(env, playbook("steps:\n  - {kind: square_off, id: sq}\n"))
    (step,) = plan.steps
    cancels = [c for c in step.calls if c.op is CallOp.CANCEL]
    assert [(c.client_order_id, c.condition) for c in cancels] == [("resting", None)]
    places = [c for c in step.calls if c.op is CallOp.PLACE]
    fut = [c for c in places if c.instrument == NIFTY_FUT.key]
    slot = f"sq:{NIFTY_FUT.key}:NRML"
    assert [(c.side, c.quantity, c.order_type) for c in fut] == [
        (Side.SELL, q, OrderType.MARKET) for q in (1800, 1800, 900)
    ]
    assert [c.client_order_id for c in fut] == [client_order_id(plan.run_id, slot, n, 0) for n in range(3)]
    (rel,) = [c for c in places if c.instrument == RELIANCE.key]
    assert (rel.side, rel.quantity, rel.condition, rel.risk) == (Side.BUY, 10, None, "exempt: reduces risk")
    assert {p["instrument"]: (p["before"], p["after"]) for p in plan.positions} == {
        NIFTY_FUT.key: (4500, 0),
        RELIANCE.key: (-10, 0),
    }
    assert [(o["client_order_id"], o["after"]) for o in plan.orders] == [("resting", "cancelled")]


async def test_shipped_square_off_plans_limit_exits_with_escalation(tmp_path):
    env = make_env(tmp_path, start=at(15, 0))
    await _seed(env, *_positions_and_resting())
    plan = await _plan(env, _load(PLAYBOOKS / "intraday_square_off.yaml"))
    (step,) = plan.steps
    assert step.verdict is Verdict.PLANNED and step.timing == "at 15:15 (late: run-within 10m)"
    ops = [(c.op, c.instrument, c.side, c.quantity) for c in step.calls]
    # MIS only: the NRML future stays; the resting MIS bid is cancelled first.
    assert ops == [
        (CallOp.CANCEL, RELIANCE.key, Side.BUY, 5),
        (CallOp.PLACE, RELIANCE.key, Side.BUY, 10),
        (CallOp.MODIFY, RELIANCE.key, Side.BUY, 10),
    ]
    exit_, escalate = step.calls[1:]
    ltp = await env.broker().ltp(RELIANCE)
    assert (
        exit_.order_type is OrderType.LIMIT and exit_.runtime_price and exit_.price == ltp + Decimal("0.50")
    )
    assert exit_.client_order_id == client_order_id(
        plan.run_id, f"close_mis:{RELIANCE.key}:MIS", 0 * ROUND, 0
    )
    assert escalate.order_type is OrderType.MARKET and escalate.condition == "if still working after 20s"
    assert {p["instrument"]: p["after"] for p in plan.positions} == {NIFTY_FUT.key: 4500, RELIANCE.key: 0}


async def test_cancel_plan_lists_exactly_the_matching_open_orders(tmp_path):
    env = make_env(tmp_path)
    await _seed(
        env,
        OrderRequest("nse-buy", RELIANCE, Side.BUY, 5, OrderType.LIMIT, price=Decimal(2800), tag="a"),
        OrderRequest("nse-sell", RELIANCE, Side.SELL, 5, OrderType.LIMIT, price=Decimal(3000), tag="b"),
        OrderRequest("nfo-buy", NIFTY_FUT, Side.BUY, 75, OrderType.LIMIT, price=Decimal(24000), tag="a"),
        OrderRequest("filled", RELIANCE, Side.BUY, 1),  # market: filled, not open
    )

    async def cancelled(body: str, pb=None) -> set[str]:
        plan = await _plan(env, pb or playbook(body))
        assert all(c.op is CallOp.CANCEL and c.condition is None for c in plan.calls)
        return {c.client_order_id for c in plan.calls}

    assert await cancelled("steps:\n  - {kind: cancel, id: c, all_open: {exchange: [NSE]}}\n") == {
        "nse-buy",
        "nse-sell",
    }
    assert await cancelled("steps:\n  - {kind: cancel, id: c, all_open: {tag: a}}\n") == {
        "nse-buy",
        "nfo-buy",
    }
    assert await cancelled("steps:\n  - {kind: cancel, id: c, all_open: {side: SELL}}\n") == {"nse-sell"}
    shipped = _load(PLAYBOOKS / "cancel_all_open.yaml")
    assert await cancelled("", shipped) == {"nse-buy", "nse-sell", "nfo-buy"}


ROUND_TRIP = """
steps:
  - {kind: place, id: buy, instrument: rel, side: BUY, quantity: 3}
  - {kind: square_off, id: sq, filter: {product: [NRML]}}
  - {kind: cancel, id: tidy, all_open: {}}
"""


async def test_apply_executes_the_plan_and_ends_in_the_planned_state(tmp_path):
    env = make_env(tmp_path)
    await _seed(env, *_positions_and_resting())
    pb = playbook(ROUND_TRIP)
    plan = plan_from_dict(json.loads(json.dumps((await _plan(env, pb, ignore_at=True)).to_dict())))
    report = await apply_plan(plan, pb, env.broker(), env.journal, env.clock)
    assert report.ok and report.run_id == plan.run_id, [s.message for s in report.steps]
    live = {p.instrument.key: p.quantity for p in await env.broker().positions()}
    assert {p["instrument"]: p["after"] for p in plan.positions} == {NIFTY_FUT.key: 0, RELIANCE.key: -7}
    assert {k: live.get(k, 0) for k in (NIFTY_FUT.key, RELIANCE.key)} == {NIFTY_FUT.key: 0, RELIANCE.key: -7}
    assert await env.broker().open_orders() == []
    sent = {i.client_order_id for i in env.journal.intents(run_id=plan.run_id)}
    planned = {c.client_order_id for c in plan.calls if c.op is CallOp.PLACE}
    definite = {c.client_order_id for c in plan.calls if c.op is CallOp.PLACE and c.condition is None}
    assert definite <= sent <= planned and len(sent) == 4  # the entry and three NRML slices


async def test_apply_refuses_after_drift_and_sends_nothing(tmp_path):
    env = make_env(tmp_path)
    await _seed(env, *_positions_and_resting())
    pb = playbook(ROUND_TRIP)
    plan = await _plan(env, pb, ignore_at=True)
    await _seed(env, OrderRequest("extra", RELIANCE, Side.BUY, 2, OrderType.LIMIT, price=Decimal(2700)))
    rec = Recorder(env.broker())
    with pytest.raises(PlanDrifted) as err:
        await apply_plan(plan, pb, rec, env.journal, env.clock)
    assert any(line.startswith("+ open order extra: BUY 2 NSE RELIANCE LIMIT") for line in err.value.lines)
    assert not WRITES & set(rec.calls)
    assert env.journal.list_runs() == []


async def test_guard_rejects_writes_the_plan_does_not_contain(tmp_path):
    env = make_env(tmp_path)
    pb = playbook(ROUND_TRIP)
    plan = await _plan(env, pb, ignore_at=True)
    guard = PlanGuard(env.broker(), plan)
    (entry,) = [c for c in plan.calls if c.op is CallOp.PLACE]
    with pytest.raises(Rejected, match="not in the plan"):
        await guard.place(OrderRequest("rnother", RELIANCE, Side.BUY, 3))
    with pytest.raises(Rejected, match="quantity 4 exceeds the planned 3"):
        await guard.place(OrderRequest(entry.client_order_id, RELIANCE, Side.BUY, 4))
    placed = await guard.place(OrderRequest(entry.client_order_id, RELIANCE, Side.BUY, 3))
    assert placed.client_order_id == entry.client_order_id
    assert playbook_drift(plan, plan.source.content) == []


# --- the commands, end to end on the built-in paper account -----------------------------------------

CLI_PLAYBOOK = """\
version: 1
name: plan-demo
timezone: Asia/Kolkata
instruments:
  rel: {{exchange: NSE, symbol: RELIANCE}}
steps:
  - {{kind: place, id: bid, instrument: rel, side: BUY, quantity: 1, type: LIMIT, price: {px}}}
  - {{kind: cancel, id: tidy, all_open: {{this_run_only: true}}}}
"""


def _tick(price: Decimal) -> Decimal:
    return (price / Decimal("0.05")).to_integral_value() * Decimal("0.05")


def _paper_bid_price(db: str) -> Decimal:
    """A price inside the paper band but under the market, so a bid rests."""
    from runner.accounts import PAPER
    from runner.brokers.registry import create_broker

    async def go() -> Decimal:
        broker = create_broker(PAPER, db_url=db)
        try:
            return _tick(await broker.ltp(RELIANCE) * Decimal("0.9"))
        finally:
            await broker.close()

    return asyncio.run(go())


def _cli_setup(tmp_path):
    db = f"sqlite:///{tmp_path / 'j.db'}"
    pb = tmp_path / "demo.yaml"
    pb.write_text(CLI_PLAYBOOK.format(px=_paper_bid_price(db)))
    return db, pb, tmp_path / "plan.json"


def test_cli_plan_then_apply(tmp_path, capsys):
    from runner.cli import main
    from runner.journal.store import Journal

    db, pb, out = _cli_setup(tmp_path)
    assert main(["plan", str(pb), "--now", "--db", db, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "broker calls" in text and "bid" in text and "runner apply" in text
    assert Journal(db).list_runs() == []  # planning journals nothing
    doc = json.loads(out.read_text())
    assert doc["format"] == "runner-plan" and doc["version"] == 1
    (place,) = [c for s in doc["steps"] for c in s["calls"] if c["op"] == "place"]
    assert main(["apply", str(out), "--db", db, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["run_id"] == doc["run_id"]
    assert [s["outcome"] for s in report["steps"]] == ["succeeded", "succeeded"]
    (intent,) = Journal(db).intents(run_id=doc["run_id"])
    assert intent.client_order_id == place["client_order_id"]
    assert main(["apply", str(out), "--db", db]) == 4  # the run happened: the state moved on


def test_cli_apply_refuses_drift_with_exit_4(tmp_path, capsys):
    from runner.accounts import PAPER
    from runner.brokers.registry import create_broker
    from runner.cli import main

    db, pb, out = _cli_setup(tmp_path)
    assert main(["plan", str(pb), "--now", "--db", db, "--out", str(out), "--json"]) == 0
    capsys.readouterr()

    async def extra() -> None:
        broker = create_broker(PAPER, db_url=db)
        try:
            price = _tick(await broker.ltp(RELIANCE) * Decimal("0.85"))
            await broker.place(
                OrderRequest("extra-order", RELIANCE, Side.BUY, 1, OrderType.LIMIT, price=price)
            )
        finally:
            await broker.close()

    asyncio.run(extra())
    assert main(["apply", str(out), "--db", db]) == 4
    err = capsys.readouterr().err
    assert "drifted" in err and "+ open order extra-order" in err and "nothing was sent" in err


def test_cli_apply_refuses_a_changed_playbook(tmp_path, capsys):
    from runner.cli import main
    from runner.journal.store import Journal

    db, pb, out = _cli_setup(tmp_path)
    assert main(["plan", str(pb), "--now", "--db", db, "--out", str(out)]) == 0
    pb.write_text(pb.read_text().replace("quantity: 1", "quantity: 2"))
    assert main(["apply", str(out), "--db", db]) == 4
    err = capsys.readouterr().err
    assert "playbook changed since the plan" in err
    assert "-  - {kind: place, id: bid, instrument: rel, side: BUY, quantity: 1" in err
    assert "+  - {kind: place, id: bid, instrument: rel, side: BUY, quantity: 2" in err
    assert Journal(db).list_runs() == []


def test_cli_apply_rejects_a_file_that_is_not_a_plan(tmp_path, capsys):
    from runner.cli import main

    bad = tmp_path / "x.json"
    bad.write_text('{"format": "something-else"}')
    assert main(["apply", str(bad)]) == 1
    assert "not a runner plan file" in capsys.readouterr().err


async def test_ltp_relative_prices_are_planned_as_written_with_the_estimate_now(tmp_path):
    from zoneinfo import ZoneInfo

    from runner.commands.plan import print_plan

    env = make_env(tmp_path, start=at(9, 16))  # RELIANCE trades at 2900
    pb = _load(PLAYBOOKS / "equity_limit_entry.yaml")  # buy_reliance: price {ltp: "-0.25%"}, tick 0.10
    plan = await _plan(env, pb)
    (call,) = plan.steps[0].calls
    # 2900 - 0.25% = 2892.75, a BUY rounds down to the 0.10 tick
    assert call.price == Decimal("2892.70") and call.runtime_price
    assert call.price_note == "LTP -0.25% (≈ 2892.70 now)"
    out = io.StringIO()
    print_plan(plan, ZoneInfo(pb.timezone), out)
    assert "LTP -0.25% (≈ 2892.70 now)" in out.getvalue()
    assert plan_from_dict(json.loads(json.dumps(plan.to_dict()))).calls == plan.calls
    # apply resolves when the step runs: the market moved, the new price is still what the plan allows
    env.prices.set(RELIANCE, Decimal("2910"), at(9, 16, 30))
    env.clock.advance(60)
    report = await apply_plan(plan, pb, env.broker(), env.journal, env.clock)
    assert report.ok, [(s.step_id, s.message) for s in report.steps]
    sent = {i.step_id: i.request.price for i in env.journal.intents(run_id=report.run_id)}
    assert sent["buy_reliance"] == Decimal("2902.70")  # 2910 - 0.25% = 2902.725, rounded down


def test_cli_apply_busy_wait_refuses_at_once_naming_the_holder(tmp_path, capsys):
    from runner.cli import main
    from runner.engine.leases import LeaseMode, leases_for
    from runner.journal.db import make_engine
    from runner.liveness import ProcessIdentity, ProcessRegistry

    db, pb, out = _cli_setup(tmp_path)
    assert main(["plan", str(pb), "--now", "--db", db, "--out", str(out)]) == 0
    capsys.readouterr()
    engine = make_engine(db)
    peer = ProcessIdentity("elsewhere/abcd1234", 77, "123")
    ProcessRegistry(engine).register(peer, "serve")
    leases_for(engine).try_acquire(
        "paper", "20260302-151500-peerrun1", LeaseMode.EXCLUSIVE, "sq", holder=peer.token
    )
    assert main(["apply", str(out), "--db", db, "--busy-wait", "0s", "--json"]) == 4
    report = json.loads(capsys.readouterr().out)
    assert "held by run 20260302-151500-peerrun1" in report["steps"][0]["message"], report
    assert main(["apply", str(out), "--db", db, "--busy-wait", "soon"]) == 2  # a usage error
